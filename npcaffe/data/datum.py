"""Datum <-> numpy (caffe.proto's Datum; util/io.cpp's decoding).

A Datum carries one C x H x W example in one of three forms: raw uint8
bytes in `data`, floats in `float_data`, or an encoded image file (PNG,
JPEG...) in `data` with `encoded: true`.  Encoded images are decoded with
Pillow, the way Caffe's OpenCV build decodes them (DecodeDatumToCVMatNative
and DecodeDatumToCVMat): channels come out in OpenCV's BGR(A) order.
"""
import io

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import DataError
from ..proto import caffe_pb2


def parse_datum(value, key=None, where="data source"):
    """A Datum from its serialized bytes; DataError naming the key if it is not one."""
    try:
        return caffe_pb2.Datum.FromString(value)
    except DecodeError as exc:
        raise DataError(f"{where}: record {key_text(key)} is not a serialized caffe.Datum ({exc})") from exc


def datum_pixels(datum, key=None, where="data source", force_color=False, force_gray=False):
    """The example as a (C, H, W) array: uint8 for raw or encoded data,
    float32 for float_data.

    force_color / force_gray apply to encoded images only (Caffe logs an
    error and ignores them otherwise, data_transformer.cpp).
    """
    if datum.encoded:
        return decode_image(datum.data, key, where, force_color, force_gray)
    shape = (datum.channels, datum.height, datum.width)
    if min(shape) <= 0:
        raise DataError(f"{where}: record {key_text(key)} has shape {shape}; all dimensions must be positive")
    count = shape[0] * shape[1] * shape[2]
    if datum.data:
        if len(datum.data) != count:
            raise DataError(f"{where}: record {key_text(key)} has {len(datum.data)} data bytes "
                            f"but channels x height x width = {shape} needs {count}")
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape)
    if len(datum.float_data) != count:
        raise DataError(f"{where}: record {key_text(key)} has {len(datum.float_data)} float_data values "
                        f"but channels x height x width = {shape} needs {count}")
    return np.asarray(datum.float_data, dtype=np.float32).reshape(shape)


def decode_image(data, key=None, where="data source", force_color=False, force_gray=False):
    """Decode an encoded image into a (C, H, W) uint8 array in OpenCV's layout.

    Native decoding keeps the file's channels (grey 1, colour 3 as BGR,
    colour with alpha 4 as BGRA); force_color gives 3-channel BGR,
    force_gray 1 channel.  Pillow's grey conversion (ITU-R 601 luma) can
    differ from OpenCV's by one grey level.  Images deeper than 8 bits are
    refused, as Caffe's CHECK on CV_8U refuses them.
    """
    if force_color and force_gray:
        raise DataError(f"{where}: cannot set both force_color and force_gray")
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"{where}: record {key_text(key)} is an encoded image and decoding it needs "
                        "Pillow; install it with `pip install npcaffe[image]` (or `pip install pillow`)") from None
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:  # Pillow raises many types for corrupt files
        raise DataError(f"{where}: could not decode the encoded image in record {key_text(key)}: {exc}") from exc
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        raise DataError(f"{where}: record {key_text(key)} is a {img.mode} image; "
                        "only 8-bit images are supported (as in Caffe)")
    if force_gray:
        img = img.convert("L")
    elif force_color:
        img = img.convert("RGB")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode in ("LA", "RGBA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
    elif img.mode != "L":
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        return arr[np.newaxis].copy()
    # RGB(A) -> BGR(A), then HWC -> CHW.
    order = [2, 1, 0, 3][: arr.shape[2]]
    return np.ascontiguousarray(arr[:, :, order].transpose(2, 0, 1))


def array_to_datum(arr, label=None):
    """A Datum from a (C, H, W) array (pycaffe's caffe.io.array_to_datum):
    uint8 arrays go to raw `data` bytes, anything else to `float_data`."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError(f"array_to_datum needs a 3-D (channels, height, width) array, got shape {arr.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float64).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum):
    """The (C, H, W) array of a Datum, label left out (pycaffe's
    caffe.io.datum_to_array): uint8 for raw bytes, float64 for float_data as
    pycaffe returns.  Encoded images are decoded (pycaffe cannot)."""
    if datum.encoded:
        return decode_image(datum.data)
    if datum.data:
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(datum.channels, datum.height, datum.width).copy()
    return np.asarray(datum.float_data, dtype=np.float64).reshape(datum.channels, datum.height, datum.width)


def key_text(key):
    """A record key as it reads best in a message."""
    if key is None:
        return "(unknown key)"
    if isinstance(key, bytes):
        try:
            return repr(key.decode("ascii"))
        except UnicodeDecodeError:
            return repr(key)
    return repr(key)
