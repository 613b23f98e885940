"""pycaffe's Detector: windows cut from image files, warped to the net input, scored in order."""
import numpy as np
import pytest

import npcaffe
from npcaffe import io as caffe_io

PIL = pytest.importorskip("PIL.Image")

NET = """
name: "tiny"
input: "data" input_shape { dim: 1 dim: 3 dim: 6 dim: 6 }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""
MEAN = np.array([-0.2, -0.3, -0.4], np.float32)  # below every pixel: mean-filled context shows


@pytest.fixture
def files(tmp_path):
    model = tmp_path / "tiny.prototxt"
    model.write_text(NET)
    npcaffe.set_random_seed(5)
    weights = tmp_path / "tiny.caffemodel"
    npcaffe.Net(str(model), npcaffe.TEST).save(str(weights))
    pixels = np.random.default_rng(0).integers(40, 255, size=(20, 16, 3), dtype=np.uint8)
    image = tmp_path / "image.png"
    PIL.fromarray(pixels).save(image)
    return str(model), str(weights), str(image)


def test_detect_windows_scores_each_window_in_order(files):
    model, weights, image = files
    detector = npcaffe.Detector(model, weights, mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0))
    windows = [np.array([0, 0, 10, 8]), np.array([5, 3, 17, 15])]
    detections = detector.detect_windows([(image, windows)])
    assert [d["filename"] for d in detections] == [image, image]
    net = npcaffe.Net(model, weights, npcaffe.TEST)
    pixels = caffe_io.load_image(image)
    for detection, (y0, x0, y1, x1) in zip(detections, windows):
        np.testing.assert_array_equal(detection["window"], (y0, x0, y1, x1))
        data = detector.transformer.preprocess("data", pixels[y0:y1, x0:x1])
        want = net.forward(data=data[None])["prob"][0]
        np.testing.assert_allclose(detection["prediction"], want, rtol=1e-6)


def test_context_pad_fills_outside_the_image_with_the_raw_mean(files):
    model, weights, image = files
    detector = npcaffe.Detector(model, weights, mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0), context_pad=1)
    raw_mean = MEAN[[2, 1, 0]] / 255  # back in the image's channel order and scale
    np.testing.assert_allclose(detector.crop_mean.reshape(3), raw_mean)
    pixels = caffe_io.load_image(image)
    inside = detector.crop(pixels, np.array([6, 5, 12, 10]))
    assert inside.shape == (6, 6, 3) and inside.min() > 0      # all from the image
    corner = detector.crop(pixels, np.array([0, 0, 6, 6]))
    assert corner.shape == (6, 6, 3)
    np.testing.assert_allclose(corner[0], np.broadcast_to(raw_mean, (6, 3)))  # grown box above the image
    np.testing.assert_allclose(corner[:, 0], np.broadcast_to(raw_mean, (6, 3)))
    assert corner[1:, 1:].min() > 0
    detections = detector.detect_windows([(image, [np.array([0, 0, 6, 6])])])
    assert detections[0]["prediction"].shape == (4,)
