"""The Layer contract: forward reshapes, then computes; kept views follow new shapes and storage."""
import numpy as np

from helpers import layer_param, make_blob
from npcaffe.blob import Blob
from npcaffe.layer import TEST, create_layer


def test_forward_outside_a_net_reshapes_every_time():
    """Layer.forward is Caffe's Forward: reshape, then compute; only a Net's plan skips reshapes."""
    layer = create_layer(layer_param('name: "p" type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }'),
                         TEST)
    bottom, top = [make_blob((2, 3, 4, 4))], [Blob(())]
    layer.setup(bottom, top)
    calls = []
    reshape = layer.reshape
    layer.reshape = lambda b, t: (calls.append(1), reshape(b, t))
    layer.forward(bottom, top)
    layer.forward(bottom, top)
    assert len(calls) == 2 and top[0].shape == (2, 3, 2, 2)


def test_layers_without_the_flag_reshape_every_forward():
    layer = create_layer(layer_param('name: "e" type: "Eltwise"'), TEST)
    assert not layer.reshape_from_shapes
    bottom, top = [make_blob((2, 3)), make_blob((2, 3), seed=1)], [Blob(())]
    layer.setup(bottom, top)
    calls = []
    reshape = layer.reshape
    layer.reshape = lambda b, t: (calls.append(1), reshape(b, t))
    layer.forward(bottom, top)
    layer.forward(bottom, top)
    assert len(calls) == 2
    np.testing.assert_allclose(top[0].data, bottom[0].data + bottom[1].data, rtol=1e-6)


def test_kept_views_follow_reshapes_and_new_storage():
    """Layer.blob_views: the InnerProduct's matrix views are made again when a blob changes
    shape or storage, so results stay right across batch sizes."""
    layer = create_layer(layer_param('name: "ip" type: "InnerProduct" inner_product_param { num_output: 3 '
                                     'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }'), TEST)
    bottom, top = [make_blob((2, 4))], [Blob(())]
    layer.setup(bottom, top)
    w, b = layer.blobs[0].data.copy(), layer.blobs[1].data.copy()
    for shape in [(2, 4), (2, 4), (5, 4), (1, 4), (5, 4)]:  # grows (new storage), shrinks, grows back
        bottom[0].reshape(shape)
        bottom[0].data[...] = np.random.default_rng(shape[0]).standard_normal(shape)
        layer.forward(bottom, top)
        np.testing.assert_allclose(top[0].data, bottom[0].data @ w.T + b, rtol=1e-5, atol=1e-6)
