"""pycaffe's Classifier and io.oversample: ten crops in pycaffe's order, predictions averaged."""
import numpy as np
import pytest

import npcaffe
from npcaffe import io as caffe_io

NET = """
name: "tiny"
input: "data" input_shape { dim: 1 dim: 3 dim: 6 dim: 6 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def test_oversample_gives_corners_centre_then_mirrors():
    image = np.arange(5 * 6 * 2, dtype=np.float32).reshape(5, 6, 2)
    crops = caffe_io.oversample([image, image + 100], (3, 4))
    assert crops.shape == (20, 3, 4, 2) and crops.dtype == np.float32
    # centre of 5x6 is (2.5, 3): bounds 2.5 -/+ 1.5 and 3 -/+ 2, truncated -> rows 1:4, cols 1:5
    boxes = [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]
    for k, (y, x) in enumerate(boxes):
        np.testing.assert_array_equal(crops[k], image[y:y + 3, x:x + 4])
        np.testing.assert_array_equal(crops[5 + k], image[y:y + 3, x:x + 4][:, ::-1])
        np.testing.assert_array_equal(crops[10 + k], image[y:y + 3, x:x + 4] + 100)
    with pytest.raises(ValueError, match="larger than the images"):
        caffe_io.oversample([image], (6, 4))


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(NET)
    npcaffe.set_random_seed(3)
    net = npcaffe.Net(str(path), npcaffe.TEST)
    weights = tmp_path / "tiny.caffemodel"
    net.save(str(weights))
    return str(path), str(weights)


def _by_hand(model, images, boxes, mirror):
    net = npcaffe.Net(model[0], model[1], npcaffe.TEST)
    mean = np.array([0.1, 0.2, 0.3], np.float32)
    out = []
    for image in images:
        resized = caffe_io.resize_image(image, (8, 8))
        probs = []
        for flip in ([False, True] if mirror else [False]):
            for y, x in boxes:
                crop = resized[y:y + 6, x:x + 6]
                if flip:
                    crop = crop[:, ::-1]
                chw = crop.transpose(2, 0, 1)[[2, 1, 0]] * 255 - mean.reshape(3, 1, 1)
                probs.append(net.forward(data=chw[None])["prob"][0].copy())
        out.append(np.mean(probs, axis=0))
    return np.array(out)


def test_classifier_predicts_as_pycaffe(model):
    rng = np.random.default_rng(0)
    images = [rng.random((10, 9, 3), dtype=np.float32) for _ in range(3)]
    classifier = npcaffe.Classifier(*model, image_dims=(8, 8), raw_scale=255, channel_swap=(2, 1, 0),
                                    mean=np.array([0.1, 0.2, 0.3], np.float32))
    got = classifier.predict(images)
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, _by_hand(model, images, [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)], True),
                               rtol=1e-5, atol=1e-7)
    centre = classifier.predict(images, oversample=False)
    np.testing.assert_allclose(centre, _by_hand(model, images, [(1, 1)], False), rtol=1e-5, atol=1e-7)
    assert not np.allclose(got, centre)
