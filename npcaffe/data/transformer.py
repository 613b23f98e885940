"""Caffe's DataTransformer (data_transformer.cpp): Datum pixels -> float32 blob.

For each example, in float32 exactly as Caffe computes it:

    out[c, h, w] = (pixel[c, h_off + h, w_off + w] - mean[c, h_off + h, w_off + w]) * scale

with `mean` from mean_file (a BlobProto of the full, uncropped C x H x W;
the path is relative to the working directory, as in Caffe) or mean_value
(one value, or one per channel), or no subtraction at all; then the width
axis is reversed when mirroring.

Quirks mirrored on purpose:
- crop_size: random offsets in TRAIN, the centre ((H - crop) // 2) in TEST;
- mirror: a coin flip per example in *both* phases (Caffe's `mirror() &&
  Rand(2)` has no phase test);
- per example the draws come in Caffe's order: mirror, then h_off, w_off.
All draws come from npcaffe.rng, so they match Caffe in distribution only.
"""
import numpy as np

from ..errors import DataError
from ..io import blobproto_shape, blobproto_to_array, read_blobproto_file
from ..proto import caffe_pb2
from ..rng import get_rng


class DataTransformer:
    def __init__(self, param, phase=caffe_pb2.TRAIN, where="transform_param"):
        self.param = param
        self.phase = phase
        self.where = where
        self.scale = np.float32(param.scale)
        self.crop_size = int(param.crop_size)
        self.mirror = bool(param.mirror)
        self.force_color = bool(param.force_color)
        self.force_gray = bool(param.force_gray)
        if self.force_color and self.force_gray:
            raise DataError(f"{where}: cannot set both force_color and force_gray")
        self.mean = None
        self.mean_values = None
        if param.HasField("mean_file"):
            if len(param.mean_value):
                raise DataError(f"{where}: cannot specify mean_file and mean_value at the same time")
            blob = read_blobproto_file(param.mean_file, f"{where} mean_file")
            shape = blobproto_shape(blob)
            mean = blobproto_to_array(blob).astype(np.float32)
            # Caffe reads the mean through the legacy num/channels/height/width
            # accessors and indexes only its first image.
            if len(shape) > 4 or 0 in shape:
                raise DataError(f"{where}: mean_file '{param.mean_file}' has shape {shape}; "
                                "expected a (1, C, H, W) image")
            self.mean = mean.reshape((1,) * (4 - len(shape)) + shape)[0]
        elif len(param.mean_value):
            self.mean_values = np.asarray(param.mean_value, dtype=np.float32)

    def infer_shape(self, pixels):
        """(C, H, W) of the transformed example; checks it can be cropped."""
        c, h, w = pixels.shape
        crop = self.crop_size
        if h < crop or w < crop:
            raise DataError(f"{self.where}: crop_size {crop} is larger than the {h} x {w} image")
        return (c, crop, crop) if crop else (c, h, w)

    def _mean_for(self, pixels):
        """The mean to subtract, (C, H, W) for a mean_file, (C, 1, 1) for mean_value, or None."""
        c, h, w = pixels.shape
        if self.mean is not None:
            if self.mean.shape != (c, h, w):
                raise DataError(f"{self.where}: mean_file '{self.param.mean_file}' has shape "
                                f"{self.mean.shape} but the data is {(c, h, w)}")
            return self.mean
        if self.mean_values is not None:
            if self.mean_values.size not in (1, c):
                raise DataError(f"{self.where}: give either 1 mean_value or as many as channels ({c}); "
                                f"got {self.mean_values.size}")
            return np.broadcast_to(self.mean_values, (c,)).reshape(c, 1, 1)
        return None

    def transform_batch(self, examples, out):
        """Transform a list of (C, H, W) uint8/float32 arrays of one shape into
        `out`, a float32 (N, C, h, w) array."""
        first = examples[0]
        mean = self._mean_for(first)
        if not self.crop_size and not self.mirror:
            stacked = np.stack(examples).astype(np.float32)
            if mean is not None:
                stacked -= mean
            stacked *= self.scale
            out[...] = stacked
            return
        rng = get_rng()
        _, h, w = first.shape
        crop = self.crop_size
        for i, pixels in enumerate(examples):
            do_mirror = self.mirror and bool(rng.integers(2))
            h_off = w_off = 0
            if crop:
                if self.phase == caffe_pb2.TRAIN:
                    h_off = int(rng.integers(h - crop + 1))
                    w_off = int(rng.integers(w - crop + 1))
                else:
                    h_off, w_off = (h - crop) // 2, (w - crop) // 2
            ch, cw = (crop, crop) if crop else (h, w)
            window = (slice(None), slice(h_off, h_off + ch), slice(w_off, w_off + cw))
            x = pixels[window].astype(np.float32)
            if self.mean is not None:
                x -= mean[window]
            elif mean is not None:
                x -= mean
            x *= self.scale
            out[i] = x[:, :, ::-1] if do_mirror else x

    def transform(self, pixels, out=None):
        """Transform one (C, H, W) example; returns the float32 result."""
        if out is None:
            out = np.empty(self.infer_shape(pixels), dtype=np.float32)
        self.transform_batch([pixels], out[np.newaxis])
        return out
