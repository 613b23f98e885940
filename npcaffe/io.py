"""pycaffe's caffe.io: BlobProto / Datum / array conversion and the input Transformer
(python/caffe/io.py).

Names and behaviour follow pycaffe, so `from npcaffe import io` stands in
for `from caffe import io`.  Differences, all on purpose:
- blobproto_to_array also reads `double_data` / `double_diff` (as
  Blob::FromProto does in blob.cpp) and checks that the value count fits
  the shape;
- Transformer.preprocess never writes into the caller's array (pycaffe
  scales float32 input in place);
- resize_image is our own bilinear resize (pixel centres aligned, edges
  clamped) instead of scikit-image's, so values near the borders can differ;
- load_image decodes with Pillow instead of scikit-image and raises a clear
  error if Pillow is missing.
"""
import numpy as np

from .data.datum import array_to_datum, datum_to_array  # noqa: F401  (pycaffe names)
from .errors import DataError
from .fileio.caffemodel import blob_shape as blobproto_shape
from .fileio.caffemodel import read_proto_file
from .proto import caffe_pb2


# -- BlobProto -------------------------------------------------------------------
def blobproto_to_array(blob, return_diff=False):
    """The data (or, with return_diff, the diff) of a BlobProto as a float64
    array of the blob's shape, as pycaffe returns it.  `double_data` /
    `double_diff` take precedence when present (Blob::FromProto)."""
    shape = blobproto_shape(blob)
    if return_diff:
        values = blob.double_diff if len(blob.double_diff) else blob.diff
        what = "diff"
    else:
        values = blob.double_data if len(blob.double_data) else blob.data
        what = "data"
    arr = np.asarray(values, dtype=np.float64)
    count = int(np.prod(shape, dtype=np.int64))
    if arr.size != count:
        raise DataError(f"BlobProto has {arr.size} {what} values but its shape {shape} holds {count}")
    return arr.reshape(shape)


def array_to_blobproto(arr, diff=None):
    """A BlobProto with `shape` and float `data` (and `diff` if given)."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(arr.shape)
    blob.data.extend(arr.astype(np.float32).ravel().tolist())
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != arr.shape:
            raise ValueError(f"array_to_blobproto: diff shape {diff.shape} differs from data shape {arr.shape}")
        blob.diff.extend(diff.astype(np.float32).ravel().tolist())
    return blob


def arraylist_to_blobprotovector_str(arraylist):
    """A serialized BlobProtoVector holding the arrays."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend([array_to_blobproto(arr) for arr in arraylist])
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(data):
    """The arrays of a serialized BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(data)
    return [blobproto_to_array(blob) for blob in vec.blobs]


def read_blobproto_file(path, where="mean_file"):
    """Parse a binary BlobProto file (a `.binaryproto` mean, say)."""
    try:
        return read_proto_file(path, caffe_pb2.BlobProto(), "binary BlobProto", DataError)
    except DataError as e:
        raise DataError(f"{where}: {e}") from None


# -- images ----------------------------------------------------------------------
def load_image(filename, color=True):
    """An image file as float32 in [0, 1], (H, W, 3) RGB or, with
    color=False, (H, W, 1) intensity; alpha is dropped (pycaffe semantics)."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"load_image('{filename}') needs Pillow; install it with "
                        "`pip install npcaffe[image]` (or `pip install pillow`)") from None
    with Image.open(filename) as img:
        if color:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        else:
            arr = np.asarray(img.convert("L"), dtype=np.uint8)[:, :, np.newaxis]
    return arr.astype(np.float32) / np.float32(255)


def resize_image(im, new_dims, interp_order=1):
    """Resize an (H, W, K) image to new_dims = (height, width).

    interp_order 0 is nearest neighbour, 1 (default, as pycaffe) bilinear;
    sample points sit at pixel centres and are clamped to the image.
    """
    im = np.asarray(im, dtype=np.float32)
    out_h, out_w = int(new_dims[0]), int(new_dims[1])
    in_h, in_w = im.shape[:2]
    if interp_order not in (0, 1):
        raise ValueError(f"resize_image supports interp_order 0 or 1, got {interp_order}")

    def coords(n_out, n_in):
        x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        return np.clip(x, 0, n_in - 1)

    y, x = coords(out_h, in_h), coords(out_w, in_w)
    if interp_order == 0:
        yi = np.floor(y + 0.5).astype(np.intp)
        xi = np.floor(x + 0.5).astype(np.intp)
        return im[yi][:, xi].astype(np.float32)
    y0 = np.floor(y).astype(np.intp)
    x0 = np.floor(x).astype(np.intp)
    y1 = np.minimum(y0 + 1, in_h - 1)
    x1 = np.minimum(x0 + 1, in_w - 1)
    wy = (y - y0)[:, None, None]
    wx = (x - x0)[None, :, None]
    top = im[y0][:, x0] * (1 - wx) + im[y0][:, x1] * wx
    bottom = im[y1][:, x0] * (1 - wx) + im[y1][:, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def crop_boxes(image_dims, crop_dims):
    """pycaffe's ten crop boxes (y0, x0, y1, x1) of `oversample`, the first five.

    The four corners (top-left, top-right, bottom-left, bottom-right), then the
    centre, whose float bounds centre -/+ crop / 2 are truncated to integers."""
    (h, w), (ch, cw) = (int(d) for d in image_dims[:2]), (int(d) for d in crop_dims[:2])
    boxes = [(y, x, y + ch, x + cw) for y in (0, h - ch) for x in (0, w - cw)]
    centre = (h / 2.0, w / 2.0)
    boxes.append((int(centre[0] - ch / 2.0), int(centre[1] - cw / 2.0),
                  int(centre[0] + ch / 2.0), int(centre[1] + cw / 2.0)))
    return boxes


def oversample(images, crop_dims):
    """Ten crops of each (H, W, K) image, as pycaffe: corners and centre, then the
    same five mirrored left-right.  Returns (10 * N, crop_h, crop_w, K) float32."""
    images = [np.asarray(im) for im in images]
    if not images:
        raise ValueError("oversample needs at least one image")
    ch, cw = (int(d) for d in crop_dims[:2])
    h, w = images[0].shape[:2]
    if ch > h or cw > w:
        raise ValueError(f"oversample: crop {ch}x{cw} is larger than the images ({h}x{w})")
    boxes = crop_boxes((h, w), (ch, cw))
    crops = np.empty((10 * len(images), ch, cw, images[0].shape[-1]), np.float32)
    for n, im in enumerate(images):
        for k, (y0, x0, y1, x1) in enumerate(boxes):
            crops[10 * n + k] = im[y0:y1, x0:x1, :]
            crops[10 * n + 5 + k] = im[y0:y1, x0:x1, :][:, ::-1, :]
    return crops


# -- Transformer -----------------------------------------------------------------
class Transformer:
    """Prepare (H', W', K) images for a net's inputs, and undo it.

    `inputs` maps input blob names to their shapes (N, K, H, W), e.g.
    {'data': net.blobs['data'].data.shape}.  preprocess applies, in order:
    float32, resize to (H, W), transpose, channel swap, raw_scale, minus
    mean, input_scale.  deprocess inverts them (except the resize).
    """

    def __init__(self, inputs):
        self.inputs = {name: tuple(int(d) for d in shape) for name, shape in inputs.items()}
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise KeyError(f"'{in_}' is not one of the net inputs: {sorted(self.inputs)}")

    def preprocess(self, in_, data):
        """(H', W', K) image -> (K, H, W) float32 array for input `in_`."""
        self._check_input(in_)
        caffe_in = np.array(data, dtype=np.float32)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        if channel_swap is not None:
            caffe_in = caffe_in[list(channel_swap), :, :]
        if raw_scale is not None:
            caffe_in = caffe_in * np.float32(raw_scale)
        if mean is not None:
            caffe_in = caffe_in - mean
        if input_scale is not None:
            caffe_in = caffe_in * np.float32(input_scale)
        return caffe_in.astype(np.float32, copy=False)

    def deprocess(self, in_, data):
        """Invert preprocess (except the resize); singleton axes are squeezed, as in pycaffe."""
        self._check_input(in_)
        decaf_in = np.array(data).squeeze()
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in = decaf_in / input_scale
        if mean is not None:
            decaf_in = decaf_in + mean
        if raw_scale is not None:
            decaf_in = decaf_in / raw_scale
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_, order):
        """Axis order applied to the image, e.g. (2, 0, 1) turns H x W x K into K x H x W."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ValueError(f"transpose order {tuple(order)} for '{in_}' needs "
                             f"{len(self.inputs[in_]) - 1} axes")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_, order):
        """Channel order taken after the transpose, e.g. (2, 1, 0) for RGB -> BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise ValueError(f"channel swap {tuple(order)} for '{in_}' needs "
                             f"{self.inputs[in_][1]} channels")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_, scale):
        """Multiply the raw image by `scale` before the mean is subtracted (255 for [0, 1] images
        fed to models trained on [0, 255])."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Mean to subtract: one value per channel (1-D) or an elementwise (K, H, W) array;
        an elementwise mean of another size is resized to the input's."""
        self._check_input(in_)
        mean = np.asarray(mean, dtype=np.float32)
        if mean.ndim == 1:
            if mean.shape[0] != self.inputs[in_][1]:
                raise ValueError(f"mean has {mean.shape[0]} channels, input '{in_}' has {self.inputs[in_][1]}")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if mean.ndim == 2:
                mean = mean[np.newaxis]
            if mean.ndim != 3:
                raise ValueError(f"mean of shape {mean.shape} is neither per-channel nor (K, H, W)")
            in_shape = self.inputs[in_][1:]
            if mean.shape != in_shape:
                if mean.shape[0] != in_shape[0]:
                    raise ValueError(f"mean has {mean.shape[0]} channels, input '{in_}' has {in_shape[0]}")
                mean = resize_image(mean.transpose(1, 2, 0), in_shape[1:]).transpose(2, 0, 1)
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Multiply by `scale` after the mean is subtracted."""
        self._check_input(in_)
        self.input_scale[in_] = scale
