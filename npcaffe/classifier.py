"""pycaffe's Classifier: a TEST Net that classifies (H, W, K) images.

As python/caffe/classifier.py: the images are resized to `image_dims`
(default: the net's input size), then either cut into pycaffe's ten crops
(corners, centre, and their mirrors; `npcaffe.io.oversample`), whose
predictions are averaged, or centre-cropped to the input size; each crop
goes through a Transformer set up from the keyword arguments (transpose to
K x H x W, then channel_swap, raw_scale, mean, input_scale), and the net's
first output is returned, one row per image.
"""
import numpy as np

from . import io
from .layer import TEST
from .net import Net


def image_transformer(net, mean=None, input_scale=None, raw_scale=None, channel_swap=None):
    """The Transformer pycaffe's Classifier and Detector set up for the net's first input:
    (H, W, K) images transposed to (K, H, W), then the options given."""
    data = net.inputs[0]
    transformer = io.Transformer({data: net.blobs[data].data.shape})
    transformer.set_transpose(data, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(data, mean)
    if input_scale is not None:
        transformer.set_input_scale(data, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(data, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(data, channel_swap)
    return transformer


class Classifier(Net):
    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None):
        super().__init__(model_file, pretrained_file, TEST)
        data = self.inputs[0]
        self.transformer = image_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[data].data.shape[2:])
        self.image_dims = self.crop_dims if image_dims is None or not len(image_dims) else image_dims

    def predict(self, inputs, oversample=True):
        """(N, classes) predictions for N (H, W, K) images; averaged over ten crops by default."""
        inputs = list(inputs)
        height, width = (int(d) for d in self.image_dims[:2])
        resized = np.zeros((len(inputs), height, width, inputs[0].shape[2]), np.float32)
        for n, image in enumerate(inputs):
            resized[n] = io.resize_image(image, (height, width))
        if oversample:
            crops = io.oversample(resized, self.crop_dims)
        else:
            y0, x0, y1, x1 = io.crop_boxes((height, width), self.crop_dims)[4]
            crops = resized[:, y0:y1, x0:x1, :]
        data = self.inputs[0]
        batch = np.stack([self.transformer.preprocess(data, crop) for crop in crops])
        predictions = self.forward_all(**{data: batch})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(axis=1)
        return predictions
