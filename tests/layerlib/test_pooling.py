"""The pooling family (after Caffe's test_pooling_layer.cpp and test_spp_layer.cpp): MAX and AVE
Pooling, stochastic pooling, SPP: shapes, hand values, gradients, errors."""
import numpy as np
import pytest

from gradient_check import check_gradient, check_gradient_exhaustive
from helpers import layer_param, make_blob
from npcaffe import rng
from npcaffe.blob import Blob
from npcaffe.errors import NetError
from npcaffe.layer import TEST, TRAIN, create_layer
from npcaffe.layerlib.pooling import Pooling, StochasticPooling


MAGIC6 = np.array([[35, 1, 6, 26, 19, 24],
                   [3, 32, 7, 21, 23, 25],
                   [31, 9, 2, 22, 27, 20],
                   [8, 28, 33, 17, 10, 15],
                   [30, 5, 34, 12, 14, 16],
                   [4, 36, 29, 13, 18, 11]], np.float32)


def pool_layer(params, name="pool"):
    return create_layer(layer_param(f'name: "{name}" type: "Pooling" pooling_param {{ {params} }}'))


def tops(n=1):
    return [Blob((1,), name=f"top{i}") for i in range(n)]


def make(text, phase=TRAIN):
    return create_layer(layer_param(f'name: "v" {text}'), phase)


def forward(layer, bottom, ntop=1):
    top = [Blob(()) for _ in range(ntop)]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    return top[0] if ntop == 1 else top


# -- MAX and AVE ---------------------------------------------------------------------------------

def square_input(num=2, channels=2):
    b = Blob((num, channels, 3, 5))
    b.data[...] = np.array([[1, 2, 5, 2, 3], [9, 4, 1, 4, 8], [1, 2, 5, 2, 3]], np.float32)
    return b


@pytest.mark.parametrize("with_mask", [False, True])
def test_pool_max_square(with_mask):
    bottom, top = [square_input()], tops(2 if with_mask else 1)
    layer = pool_layer("pool: MAX kernel_size: 2")
    layer.setup(bottom, top)
    assert top[0].shape == (2, 2, 2, 4)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, np.broadcast_to([[9, 5, 5, 8], [9, 5, 5, 8]], (2, 2, 2, 4)))
    if with_mask:
        np.testing.assert_array_equal(top[1].data, np.broadcast_to([[5, 2, 2, 9], [5, 12, 12, 9]], (2, 2, 2, 4)))
    # Backward routes each diff to its argmax; windows sharing an argmax add up.
    top[0].diff[...] = np.arange(1, 9, dtype=np.float32).reshape(2, 4)
    layer.backward(top, [True], bottom)
    expected = np.zeros(15)
    for value, index in zip(range(1, 9), [5, 2, 2, 9, 5, 12, 12, 9]):
        expected[index] += value
    np.testing.assert_array_equal(bottom[0].diff[1, 1].ravel(), expected)


def test_pool_max_rect_high_and_wide():
    bottom = [Blob((1, 1, 6, 6))]
    bottom[0].data[...] = MAGIC6
    top = tops(2)
    layer = pool_layer("pool: MAX kernel_h: 3 kernel_w: 2")
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data[0, 0], [[35, 32, 26, 27, 27], [32, 33, 33, 27, 27],
                                                      [31, 34, 34, 27, 27], [36, 36, 34, 18, 18]])
    np.testing.assert_array_equal(top[1].data[0, 0], [[0, 7, 3, 16, 16], [7, 20, 20, 16, 16],
                                                      [12, 26, 26, 16, 16], [31, 31, 26, 34, 34]])
    layer = pool_layer("pool: MAX kernel_h: 2 kernel_w: 3")
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data[0, 0], [[35, 32, 26, 26], [32, 32, 27, 27], [33, 33, 33, 27],
                                                      [34, 34, 34, 17], [36, 36, 34, 18]])
    np.testing.assert_array_equal(top[1].data[0, 0], [[0, 7, 3, 3], [7, 7, 16, 16], [20, 20, 20, 16],
                                                      [26, 26, 26, 21], [31, 31, 26, 34]])


def test_pool_max_padded():
    bottom = [Blob((1, 1, 3, 3))]
    bottom[0].data[...] = [[1, 2, 4], [2, 3, 2], [4, 2, 1]]
    top = tops()
    layer = pool_layer("pool: MAX kernel_size: 3 stride: 2 pad: 2")
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data[0, 0], [[1, 4, 4], [4, 4, 4], [4, 4, 1]])


def test_pool_ave_padded_divides_by_padded_window():
    bottom = [Blob((1, 1, 3, 3))]
    bottom[0].data[...] = 2
    top = tops()
    layer = pool_layer("pool: AVE kernel_size: 3 stride: 1 pad: 1")
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data[0, 0], [[8 / 9, 4 / 3, 8 / 9], [4 / 3, 2, 4 / 3], [8 / 9, 4 / 3, 8 / 9]],
                               rtol=1e-6)
    # Beyond the far edge the window is clipped to H + pad, not to H: the last
    # window of a 4x4 input (kernel 3, stride 2, pad 1) spans rows 3..4 -> size 2.
    bottom = [Blob((1, 1, 4, 4))]
    bottom[0].data[...] = 1
    layer = pool_layer("pool: AVE kernel_size: 3 stride: 2 pad: 1")
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data[0, 0], [[4 / 9, 6 / 9, 2 / 6], [6 / 9, 1, 3 / 6], [2 / 6, 3 / 6, 1 / 4]],
                               rtol=1e-6)
    top[0].diff[...] = 0
    top[0].diff[0, 0, 2, 2] = 1
    layer.backward(top, [True], bottom)
    expected = np.zeros((4, 4))
    expected[3, 3] = 1 / 4
    np.testing.assert_array_equal(bottom[0].diff[0, 0], expected)


@pytest.mark.parametrize("params, hw, expected", [
    ("kernel_size: 3 stride: 2", (6, 5), (3, 2)),                        # Caffe's TestSetup
    ("pool: AVE kernel_size: 3 stride: 2 pad: 1", (6, 5), (4, 3)),       # TestSetupPadded
    ("pool: AVE global_pooling: true", (6, 5), (1, 1)),                  # TestSetupGlobalPooling
    ("kernel_size: 3 stride: 2 pad: 1", (7, 7), (4, 4)),                 # last window starts inside: kept
    ("kernel_size: 2 stride: 2 pad: 1", (5, 5), (3, 3)),                 # ceil gives 4; last starts at H+pad: clipped
    ("kernel_size: 2 stride: 2 pad_h: 1 pad_w: 0", (5, 6), (3, 3)),      # clipping applies to both axes
    ("kernel_size: 3 stride: 2", (6, 6), (3, 3)),                        # CEIL: ceil(1.5) + 1
    ("kernel_size: 3 stride: 2 round_mode: FLOOR", (6, 6), (2, 2)),      # FLOOR: floor(1.5) + 1
    ("kernel_size: 3 stride: 2 ceil_mode: false", (6, 6), (2, 2)),       # the forks' ceil_mode: false is FLOOR
    ("kernel_size: 3 stride: 2 ceil_mode: true", (6, 6), (3, 3)),        # ... and true (its default) CEIL
    ("kernel_size: 3 stride: 2 pad: 1 ceil_mode: false", (112, 112), (56, 56)),  # DenseNet's pool1
    ("kernel_size: 3 stride: 2 pad: 1", (112, 112), (57, 57)),           # the same pool1 rounding up
    ("kernel_size: 2 stride: 2 pad: 1 ceil_mode: true", (5, 5), (3, 3)),  # pad clipping as with round_mode
    ("kernel_size: 1 stride: 3", (5, 5), (3, 3)),                        # last window empty, as upstream
])
def test_pool_output_shapes(params, hw, expected):
    bottom, top = [make_blob((2, 3) + hw)], tops()
    pool_layer(params).setup(bottom, top)
    assert top[0].shape == (2, 3) + expected


def test_pool_global_matches_mean():
    bottom, top = [make_blob((2, 3, 4, 5), seed=30)], tops()
    layer = pool_layer("pool: AVE global_pooling: true")
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data[:, :, 0, 0], bottom[0].data.mean(axis=(2, 3)), rtol=1e-5)


@pytest.mark.parametrize("params", [
    "pool: MAX kernel_h: 3 kernel_w: 3 stride: 2 pad: 1",
    "pool: MAX kernel_h: 4 kernel_w: 3 stride: 2 pad: 1",
])
def test_pool_max_gradient(params):
    # Caffe's TestGradientMax: step 1e-4, threshold 1e-2.
    bottom = [make_blob((2, 2, 6, 5), seed=31)]
    check_gradient_exhaustive(pool_layer(params), bottom, tops(), stepsize=1e-4, threshold=1e-2)


def test_pool_max_gradient_with_mask_top():
    bottom = [make_blob((1, 2, 6, 5), seed=32)]
    check_gradient_exhaustive(pool_layer("pool: MAX kernel_h: 3 kernel_w: 4 stride: 2"), bottom, tops(2),
                              stepsize=1e-4, threshold=1e-2)


@pytest.mark.parametrize("params", [
    "pool: AVE kernel_h: 3 kernel_w: 4 stride: 2",
    "pool: AVE kernel_h: 4 kernel_w: 3 stride: 2 pad: 2",
    "pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR",
])
def test_pool_ave_gradient(params):
    bottom = [make_blob((2, 2, 6, 5), seed=33)]
    check_gradient(pool_layer(params), bottom, tops(), stepsize=1e-2, threshold=1e-2)


@pytest.mark.parametrize("params, ntop, match", [
    ("pool: MAX kernel_size: 3 pad: 3", 1, r"pad \(3, 3\) must be smaller than the kernel"),
    ("pool: AVE kernel_h: 2 kernel_w: 3 pad_h: 1 pad_w: 3", 1, "must be smaller than the kernel"),
    ("kernel_size: 3 kernel_h: 3 kernel_w: 3", 1, "kernel_size, or as both kernel_h and kernel_w"),
    ("kernel_h: 3", 1, "not neither"),
    ("pool: AVE global_pooling: true kernel_size: 2", 1, "remove kernel_size"),
    ("pool: AVE global_pooling: true stride: 2", 1, "global_pooling needs pad 0 and stride 1"),
    ("kernel_size: 2 pad: 1 pad_h: 1 pad_w: 1", 1, "give pad, or both pad_h and pad_w"),
    ("kernel_size: 2 stride_h: 2", 1, "give stride, or both"),
    ("pool: AVE kernel_size: 2", 2, "at most 1 top"),
    ("kernel_size: 2 round_mode: FLOOR ceil_mode: false", 1, "round_mode .BVLC. or ceil_mode .forks., not both"),
])
def test_pool_bad_parameters(params, ntop, match):
    with pytest.raises(NetError, match=match):
        pool_layer(params).setup([make_blob((1, 1, 6, 6))], tops(ntop))


def test_pool_needs_4_axes():
    with pytest.raises(NetError, match="4 axes"):
        pool_layer("kernel_size: 2").setup([make_blob((1, 6, 6))], tops())


# -- SPP ------------------------------------------------------------------------------------------

def test_spp_shapes_and_values():
    x = make_blob((2, 3, 9, 7), seed=6)
    top = forward(make('type: "SPP" spp_param { pyramid_height: 3 pool: MAX }'), [x])
    assert top.shape == (2, 3 * (1 + 4 + 16))
    np.testing.assert_allclose(top.data[:, :3], x.data.max(axis=(2, 3)), rtol=1e-6)
    level1 = top.data[:, 3:15].reshape(2, 3, 2, 2)
    # level 1: kernel ceil(9/2)=5, pad (10-9+1)/2=1 in h; kernel 4, pad 1 in w
    np.testing.assert_allclose(level1[:, :, 0, 0], x.data[:, :, :4, :3].max(axis=(2, 3)), rtol=1e-6)
    top = forward(make('type: "SPP" spp_param { pyramid_height: 1 pool: AVE }'), [x])
    assert top.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(top.data[:, :, 0, 0], x.data.mean(axis=(2, 3)), rtol=1e-5)


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_spp_gradient(pool):
    check_gradient(make(f'type: "SPP" spp_param {{ pyramid_height: 2 pool: {pool} }}'),
                   [make_blob((2, 2, 4, 5), seed=7)], [Blob(())])


def test_spp_reshapes_with_the_input():
    layer = make('type: "SPP" spp_param { pyramid_height: 2 }')
    x, top = make_blob((1, 2, 6, 6)), Blob(())
    layer.setup([x], [top])
    x.reshape(1, 2, 8, 10)
    layer.forward([x], [top])
    assert top.shape == (1, 10)


# -- stochastic pooling ------------------------------------------------------------------------

STO = 'type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 }'


def test_stochastic_pooling_test_phase_hand_values():
    x = Blob((1, 1, 2, 4))
    x.data[...] = np.array([[1, 3, 0, 0], [0, 0, 2, 2]], np.float32).reshape(1, 1, 2, 4)
    top = forward(make(STO, TEST), [x])
    np.testing.assert_allclose(top.data.ravel(), [10 / 4, 8 / 4])
    check_gradient(make(STO, TEST), [make_blob((1, 2, 4, 4), low=0.1, high=1, seed=8)], [Blob(())])


def test_stochastic_pooling_train_samples_window_values():
    x = make_blob((2, 3, 4, 6), low=0.1, high=1.0, seed=9)
    rng.set_random_seed(5)
    top = forward(make(STO), [x])
    windows = x.data.reshape(2, 3, 2, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 3, 2, 3, 4)
    assert all(top.data[n, c, i, j] in windows[n, c, i, j]
               for n in range(2) for c in range(3) for i in range(2) for j in range(3))
    rng.set_random_seed(5)
    again = forward(make(STO), [x])
    np.testing.assert_array_equal(top.data, again.data)  # seeded from npcaffe.rng
    check_gradient(make(STO), [x], [Blob(())])


def test_pooling_type_dispatches_stochastic_to_its_variant():
    layer = make(STO)
    assert isinstance(layer, StochasticPooling) and layer.type == "Pooling"
    assert type(make('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 }')) is Pooling
    with pytest.raises(NetError, match="takes at most 1 top"):
        layer.setup([make_blob((1, 1, 4, 4))], [Blob(()), Blob(())])
