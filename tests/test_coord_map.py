"""coord_map: maps between NetSpec tops and the Crop that aligns them (pycaffe's caffe.coord_map)."""
import numpy as np
import pytest

import npcaffe
from npcaffe import layers as L, params as P
from npcaffe.coord_map import CropError, coord_map_from_to, crop


def _fcn(pad=1, deconv_kernel=4):
    """data -> conv (3x3, pad) -> 2x2 max pool -> 1x1 score -> deconv (x2) ; by hand the upsampled
    score sits at data coordinate + 1 for pad 1 and kernel 4: output = 2 * (x / 2 - 1/4) + 3/2."""
    n = npcaffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=3, kernel_size=3, pad=pad, weight_filler=dict(type="xavier"))
    n.relu = L.ReLU(n.conv, in_place=True)
    n.pool = L.Pooling(n.relu, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.score = L.Convolution(n.pool, num_output=2, kernel_size=1, weight_filler=dict(type="xavier"))
    n.up = L.Deconvolution(n.score, convolution_param=dict(num_output=2, kernel_size=deconv_kernel, stride=2,
                                                           bias_term=False))
    return n


def test_fcn_crop_offset_and_the_net_it_builds():
    n = _fcn()
    axis, a, b = coord_map_from_to(n.up, n.data)
    assert axis == 1 and np.all(a == 1) and np.all(b == -1)
    n.crop = crop(n.up, n.data)
    net = npcaffe.Net(n.to_proto(), npcaffe.TEST)
    layer = net.layer_dict["crop"].layer_param
    assert (layer.crop_param.axis, list(layer.crop_param.offset)) == (2, [1])
    assert net.blobs["up"].shape == (1, 2, 10, 10) and net.blobs["crop"].shape == (1, 2, 8, 8)
    net.blobs["data"].data[...] = np.random.default_rng(0).standard_normal((1, 2, 8, 8))
    net.forward()
    np.testing.assert_array_equal(net.blobs["crop"].data, net.blobs["up"].data[:, :, 1:9, 1:9])


def test_maps_compose_and_invert():
    n = _fcn()
    forward = coord_map_from_to(n.data, n.pool)   # pool = data / 2 - 1/4
    assert forward[0] == 1 and np.allclose(forward[1], 0.5) and np.allclose(forward[2], -0.25)
    backward = coord_map_from_to(n.pool, n.data)
    assert np.allclose(backward[1], 2) and np.allclose(backward[2], 0.5)


def test_crop_refusals():
    n = _fcn()
    with pytest.raises(CropError, match="scale mismatch"):
        crop(n.pool, n.data)
    with pytest.raises(CropError, match="negative offset"):
        crop(n.data, n.up)             # data is smaller than the upsampled score
    odd = _fcn(deconv_kernel=3)        # output = x + 1/2: no integer crop
    with pytest.raises(CropError, match="non-integer"):
        crop(odd.up, odd.data)
    other = npcaffe.NetSpec()
    other.x = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    other.fc = L.InnerProduct(other.x, num_output=3)
    with pytest.raises(RuntimeError, match="no common ancestor"):
        coord_map_from_to(other.fc, n.data)
