"""Bounds on what npcaffe reads, checked before anything is allocated.

A downloaded model is input from a stranger: `/dev/zero` or a FIFO given as `--weights`, a
5 KB HDF5 file declaring a 2 GB dataset, an .npz whose header asks for 7 GiB.  Every reader
opens regular files only and reads at most a cap of bytes; the readers of HDF5 and .npz check
declared shapes against the net (or against these caps) before reading a dataset.
"""
import gzip
import os
import stat

from ..errors import ParseError

# Protocol buffers cannot parse a message over 2 GiB; Caffe's ReadProtoFromBinaryFile sets the
# same limit (kProtoReadBytesLimit = INT_MAX).
MAX_PROTO_BYTES = 2 ** 31 - 1
# A net or solver definition is text of some kilobytes (ResNet-152's is 0.2 MB).
MAX_TEXT_BYTES = 64 * 2 ** 20
# Caffe's blobs count their elements in an int.
MAX_BLOB_COUNT = 2 ** 31 - 1


def _refuse(error, path, detail):
    # ParseError formats the path itself (and a line, a field); the others take one message.
    return error(detail, path) if issubclass(error, ParseError) else error(f"{path}: {detail}")


def check_regular_file(path, error):
    """Raise `error` unless `path` is a regular file (not a device such as /dev/zero, a FIFO, a
    socket or a directory); FileNotFoundError passes through for the caller's own message."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise _refuse(error, path, f"{kind}, not a regular file; give a file")


def read_bounded(path, limit, error, what):
    """The bytes of a regular file (gunzipped when it ends in .gz), at most `limit` of them; more
    is an error naming the file, raised before the rest is read."""
    path = os.fspath(path)
    check_regular_file(path, error)
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise _refuse(error, path, f"more than {limit:,} bytes{' once unzipped' if path.endswith('.gz') else ''}; "
                                   f"too large for a {what}")
    return data
