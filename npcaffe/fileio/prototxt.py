"""Read and write text-format protos: net and solver definitions.

Parse errors name the file, the line and the field at fault.  Nets are
upgraded from V0/V1 on load (npcaffe.fileio.upgrade), solvers from the
`solver_type` enum, exactly where Caffe upgrades them.
"""
import os
import re

from google.protobuf import text_format

from ..errors import NpcaffeError, ParseError
from ..proto import caffe_pb2
from .limits import MAX_TEXT_BYTES, read_bounded
from .upgrade import upgrade_net, upgrade_solver

_FIELD_IN_MESSAGE = re.compile(r'(?:field|value) named "?([A-Za-z0-9_]+)"?')


def _read_text(path):
    try:
        return read_bounded(path, MAX_TEXT_BYTES, ParseError, "net or solver definition").decode("utf-8")
    except FileNotFoundError:
        raise ParseError("file not found", path) from None
    except UnicodeDecodeError:
        raise ParseError("not a text file (a binary .caffemodel given where a .prototxt is expected?)", path) from None
    except OSError as e:
        raise ParseError(f"cannot read: {e.strerror}", path) from None


def parse_text(text, message, path=None):
    """Parse prototxt text into `message`; errors carry file, line and field."""
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        detail = str(e)
        # protobuf formats its messages as "LINE:COL : text"; keep the text.
        detail = re.sub(r"^\d+:\d+\s*:\s*", "", detail)
        match = _FIELD_IN_MESSAGE.search(detail)
        raise ParseError(detail, path, e.GetLine(), match.group(1) if match else None) from None
    return message


def read_net(path_or_text, upgrade=True, is_text=False):
    """NetParameter from a .prototxt path (or from text when is_text)."""
    if is_text:
        net = parse_text(path_or_text, caffe_pb2.NetParameter())
        where = "<string>"
    else:
        path = os.fspath(path_or_text)
        net = parse_text(_read_text(path), caffe_pb2.NetParameter(), path)
        where = path
    if upgrade:
        try:
            upgrade_net(net, where)
        except NpcaffeError:
            raise
    return net


def read_solver(path_or_text, is_text=False):
    """SolverParameter from a solver .prototxt, legacy solver_type upgraded."""
    if is_text:
        return upgrade_solver(parse_text(path_or_text, caffe_pb2.SolverParameter()))
    path = os.fspath(path_or_text)
    return upgrade_solver(parse_text(_read_text(path), caffe_pb2.SolverParameter(), path), path)


def to_text(message):
    return text_format.MessageToString(message)


def write_text(message, path):
    """Write a proto as prototxt (atomically: temporary file, then rename)."""
    from .atomic import atomic_write
    atomic_write(path, to_text(message).encode("utf-8"))
