"""pycaffe's Detector: a TEST Net scoring windows cut from images (R-CNN style).

As python/caffe/detector.py: `detect_windows([(image file, windows), ...])`
loads each image (npcaffe.io.load_image, RGB in [0, 1]), cuts every window
(ymin, xmin, ymax, xmax), warps it to the net's input size through the
Transformer set up from the keyword arguments (as Classifier's), runs the
net and returns one {'window', 'prediction', 'filename'} dict per window,
in order.  With `context_pad` p, a window is first grown so that, once
warped, a border of p input pixels around it is context (R-CNN's feature
extraction); the part of the grown box outside the image is filled with
the mean in raw image space.

pycaffe was written for Python 2; where it relies on Python 2 semantics
this mirrors them: builtin round() rounds halves away from zero, and the
float box coordinates are truncated to integers when slicing.
`detect_selective_search` needs the selective_search_ijcv_with_python
module (and MATLAB), as upstream.
"""
import math
import os

import numpy as np

from . import io
from .classifier import image_transformer
from .errors import DataError
from .layer import TEST
from .net import Net


def _round_half_away(x):
    # Python 2's round(), which pycaffe's crop arithmetic was written against.
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


class Detector(Net):
    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
                 channel_swap=None, context_pad=None):
        super().__init__(model_file, pretrained_file, TEST)
        self.transformer = image_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """[{'window', 'prediction', 'filename'}] for every window of every (image file, windows) pair."""
        images_windows = [(name, [np.asarray(w) for w in windows]) for name, windows in images_windows]
        crops = []
        for name, windows in images_windows:
            image = io.load_image(name).astype(np.float32)
            crops.extend(self.crop(image, window) for window in windows)
        if not crops:
            return []
        data = self.inputs[0]
        batch = np.stack([self.transformer.preprocess(data, crop) for crop in crops])
        predictions = self.forward_all(**{data: batch})[self.outputs[0]]
        detections = []
        for name, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[len(detections)], "filename": name})
        return detections

    def detect_selective_search(self, image_fnames):
        """detect_windows over Selective Search proposals (needs selective_search_ijcv_with_python)."""
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError:
            raise DataError("detect_selective_search needs the selective_search_ijcv_with_python module "
                            "(and MATLAB), as pycaffe's; or pass your own windows to detect_windows") from None
        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows = selective_search.get_windows(image_fnames, cmd="selective_search_rcnn")
        return self.detect_windows(zip(image_fnames, windows))

    def crop(self, im, window):
        """The window (ymin, xmin, ymax, xmax; ymax and xmax excluded) of an (H, W, K) image, with
        context_pad's border of context when configured."""
        window = np.asarray(window)
        if not self.context_pad:
            return im[int(window[0]):int(window[2]), int(window[1]):int(window[3])]
        crop_size = self.blobs[self.inputs[0]].width  # the net input is assumed square, as upstream
        scale = crop_size / (1.0 * crop_size - self.context_pad * 2)
        half_h = (window[2] - window[0] + 1) / 2.0
        half_w = (window[3] - window[1] + 1) / 2.0
        centre = (window[0] + half_h, window[1] + half_w)
        box = np.round(np.tile(centre, 2) + scale * np.array((-half_h, -half_w, half_h, half_w)))
        scale_h = crop_size / (box[2] - box[0] + 1)
        scale_w = crop_size / (box[3] - box[1] + 1)
        pad_y = _round_half_away(max(0, -box[0]) * scale_h)  # rows of the input outside the image
        pad_x = _round_half_away(max(0, -box[1]) * scale_w)
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w])
        clip_h, clip_w = box[2] - box[0] + 1, box[3] - box[1] + 1
        if clip_h <= 0 or clip_w <= 0:
            raise DataError(f"window {tuple(window)} lies outside the {im_h}x{im_w} image")
        crop_h = min(_round_half_away(clip_h * scale_h), crop_size - pad_y)
        crop_w = min(_round_half_away(clip_w * scale_w), crop_size - pad_x)
        context = im[int(box[0]):int(box[2]), int(box[1]):int(box[3])]
        crop = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        crop[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = io.resize_image(context, (crop_h, crop_w))
        return crop

    def configure_crop(self, context_pad):
        """Crop dimensions (H, W, K) of the net input and, with context, the mean in raw image space."""
        data = self.inputs[0]
        transpose = self.transformer.transpose[data]
        inverse = [transpose[t] for t in transpose]
        self.crop_dims = np.array(self.blobs[data].data.shape[1:])[inverse]
        self.context_pad = context_pad
        if not context_pad:
            return
        mean = self.transformer.mean.get(data)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        crop_mean = mean.copy().transpose(inverse)
        order = self.transformer.channel_swap.get(data)
        if order is not None:
            crop_mean = crop_mean[:, :, [list(order).index(i) for i in range(crop_mean.shape[2])]]
        raw_scale = self.transformer.raw_scale.get(data)
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = crop_mean
