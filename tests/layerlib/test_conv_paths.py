"""Each of Convolution's compute paths (npcaffe.layerlib.conv_paths) on its own, against the NumPy
reference convolution and its gradients (tests/conv_reference.py), on awkward sizes: padding,
strides, dilation, groups, two bottoms, a kernel larger than the input.  Outputs and bottom diffs
start as NaN, so an element a path leaves unwritten fails; parameter diffs start nonzero, so a
path that overwrites instead of accumulating fails."""
import types

import numpy as np
import pytest

from conv_reference import reference_convolution, reference_convolution_backward
from npcaffe.blob import Blob
from npcaffe.kernels.sparse import dense_to_csr
from npcaffe.layerlib import conv_paths
from npcaffe.layerlib.conv_paths import (ConvShape, DenseColumns, ImageColumns, NdColumns, PackedBatchInner, PackedColumns,
                                         PackedStride1, Scratch, SparseBatchInner, SparseColumns, SparseStride1,
                                         per_image_weight_gradient)


def conv_shape(num, channels, num_output, image, kernel, pad=None, stride=None, dilation=None, group=1):
    axes = len(image)
    pad, stride, dilation = pad or (0,) * axes, stride or (1,) * axes, dilation or (1,) * axes
    out = tuple(int((n + 2 * p - (d * (k - 1) + 1)) / s) + 1
                for n, k, p, s, d in zip(image, kernel, pad, stride, dilation))
    return ConvShape(num, channels, num_output, group, kernel, pad, stride, dilation, image, out)


class Problem:
    """Random weights, bias, bottoms and top diffs for a shape; NaN in what a path must write."""

    def __init__(self, shape, bottoms=1, density=1.0, bias=True, seed=0):
        rng = np.random.default_rng(seed)
        self.shape = shape
        weight_shape = (shape.num_output, shape.channels // shape.group) + shape.kernel
        self.weight = rng.uniform(-1, 1, weight_shape).astype(np.float32)
        self.weight[rng.random(weight_shape) >= density] = 0
        self.bias = rng.uniform(-1, 1, shape.num_output).astype(np.float32) if bias else None
        self.csr = dense_to_csr(self.weight.reshape(shape.num_output, -1)) if shape.group == 1 else None
        self.bottom, self.top = [], []
        for _ in range(bottoms):
            b = Blob((shape.num, shape.channels) + shape.image)
            b.data[...] = rng.uniform(-1, 1, b.shape)
            b.diff[...] = np.nan
            t = Blob((shape.num, shape.num_output) + shape.out)
            t.data[...] = np.nan
            t.diff[...] = rng.uniform(-1, 1, t.shape)
            self.bottom.append(b)
            self.top.append(t)
        self.weight_diff = rng.uniform(-1, 1, weight_shape).astype(np.float32)
        self.bias_diff = rng.uniform(-1, 1, shape.num_output).astype(np.float32)

    def reference(self, geometry=None):
        """[(top data, bottom diff)] per bottom, and the weight and bias diffs after backward."""
        s = self.shape
        outputs, weight_diff, bias_diff = [], self.weight_diff.astype(np.float64), self.bias_diff.astype(np.float64)
        for b, t in zip(self.bottom, self.top):
            y = reference_convolution(b.data, self.weight, self.bias, s.stride, s.pad, s.dilation, s.group)
            dx, dw, db = reference_convolution_backward(b.data, self.weight, t.diff, s.stride, s.pad, s.dilation,
                                                        s.group)
            outputs.append((y, dx))
            weight_diff, bias_diff = weight_diff + dw, bias_diff + db
        return outputs, weight_diff, bias_diff

    def run(self, path, csr=False, propagate_down=True, weight_diff=True, bias_diff=True):
        """forward, then backward, through `path`; the parameter diffs it accumulated into."""
        bias = self.bias
        path.forward(self.bottom, self.top, None if csr else self.weight, bias, self.csr if csr else None)
        grads = (self.weight_diff.copy() if weight_diff else None, self.bias_diff.copy() if bias_diff else None)
        path.backward(self.top, [propagate_down] * len(self.top), self.bottom, None if csr else self.weight,
                      self.csr if csr else None, *grads)
        return grads


def close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())))


def check(problem, grads, propagate_down=True):
    outputs, weight_diff, bias_diff = problem.reference()
    for (y, dx), b, t in zip(outputs, problem.bottom, problem.top):
        close(t.data, y)
        if propagate_down:
            close(b.diff, dx)
        else:
            assert np.isnan(b.diff).all()
    if grads[0] is not None:
        close(grads[0], weight_diff)
    if grads[1] is not None and problem.bias is not None:
        close(grads[1], bias_diff)


# (num, channels, num_output, image, kernel, pad, stride, dilation), 2-D, group 1
SHAPES_2D = [
    (3, 1, 4, (9, 8), (3, 3), (1, 1), (1, 1), (2, 1)),    # one channel, few taps, dilated
    (2, 3, 5, (7, 6), (3, 2), (1, 0), (2, 1), (1, 1)),    # strided rows
    (4, 6, 3, (5, 7), (3, 3), (2, 1), (2, 3), (1, 2)),    # padding, strides and dilation
    (2, 8, 7, (6, 6), (5, 5), (0, 0), (1, 1), (1, 1)),    # 200 taps: one GEMM for the weights
    (1, 2, 2, (2, 2), (3, 3), (0, 0), (2, 2), (1, 1)),    # kernel larger than the input
    (9, 2, 3, (4, 5), (1, 1), (0, 0), (1, 1), (1, 1)),    # 1x1
    (1, 5, 4, (3, 6), (1, 1), (0, 0), (1, 1), (1, 1)),    # 1x1, one image: the image is the columns
    (1, 3, 4, (6, 5), (3, 3), (1, 1), (1, 1), (1, 1)),    # one image: the GEMM writes the top
]


def stride_1(case):
    return case[6] == (1, 1)


def shape_2d(case, group=1):
    num, channels, num_output, image, kernel, pad, stride, dilation = case
    return conv_shape(num, channels * group, num_output * group, image, kernel, pad, stride, dilation, group)


# -- dense ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", SHAPES_2D)
@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("bottoms", [1, 2])
def test_dense_columns_match_reference(case, group, bottoms):
    problem = Problem(shape_2d(case, group), bottoms=bottoms, bias=group == 1)
    check(problem, problem.run(DenseColumns(problem.shape, Scratch())))


@pytest.mark.parametrize("case", SHAPES_2D)
@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("bottoms", [1, 2])
def test_image_columns_match_reference(case, group, bottoms):
    problem = Problem(shape_2d(case, group), bottoms=bottoms, bias=group == 1)
    check(problem, problem.run(ImageColumns(problem.shape, Scratch())))


@pytest.mark.parametrize("propagate_down, weight_diff, bias_diff",
                         [(False, True, True), (True, False, False), (False, False, True)])
def test_image_columns_compute_only_what_is_asked(propagate_down, weight_diff, bias_diff):
    problem = Problem(shape_2d(SHAPES_2D[2]))
    grads = problem.run(ImageColumns(problem.shape, Scratch()), propagate_down=propagate_down,
                        weight_diff=weight_diff, bias_diff=bias_diff)
    check(problem, grads, propagate_down=propagate_down)


def test_image_columns_in_place_reads_each_image_before_writing_it():
    problem = Problem(conv_shape(3, 4, 4, (5, 6), (3, 3), pad=(1, 1)))
    b = problem.bottom[0]
    want = reference_convolution(b.data.copy(), problem.weight, problem.bias, (1, 1), (1, 1), (1, 1), 1)
    ImageColumns(problem.shape, Scratch()).forward([b], [b], problem.weight, problem.bias)
    close(b.data, want)


def test_large_outputs_of_a_batch_go_image_by_image():
    at, at_1x1 = conv_paths.IMAGE_COLUMNS_POSITIONS, conv_paths.IMAGE_COLUMNS_POSITIONS_1X1
    assert ImageColumns.suits(conv_shape(2, 3, 4, (at + 2, 1), (3, 1)))  # (at + 2 - 2) x 1 positions
    assert not ImageColumns.suits(conv_shape(2, 3, 4, (at + 1, 1), (3, 1)))
    assert ImageColumns.suits(conv_shape(2, 3, 4, (at_1x1, 1), (1, 1)))
    assert not ImageColumns.suits(conv_shape(2, 3, 4, (at_1x1 - 1, 1), (1, 1)))
    assert not ImageColumns.suits(conv_shape(1, 3, 4, (64, 64), (1, 1)))  # one image: DenseColumns' own loop
    assert not ImageColumns.suits(conv_shape(64, 1, 20, (28, 28), (5, 5)))  # LeNet-5's conv1 and conv2 stay
    assert not ImageColumns.suits(conv_shape(64, 20, 50, (12, 12), (5, 5)))


def test_dense_columns_backward_unrolls_again_when_the_bottom_changed():
    """Backward reuses forward's columns only while the bottom holds the values forward saw."""
    problem = Problem(shape_2d(SHAPES_2D[2]))
    path = DenseColumns(problem.shape, Scratch())
    path.forward(problem.bottom, problem.top, problem.weight, problem.bias)
    problem.bottom[0].data[...] *= -2
    grads = (problem.weight_diff.copy(), problem.bias_diff.copy())
    path.backward(problem.top, [True], problem.bottom, problem.weight, None, *grads)
    _, weight_diff, _ = problem.reference()
    close(grads[0], weight_diff)


def test_dense_columns_one_image_1x1_is_one_gemm_of_the_image_itself():
    problem = Problem(shape_2d(SHAPES_2D[-2]))
    path = DenseColumns(problem.shape, Scratch())
    path.forward(problem.bottom, problem.top, problem.weight, problem.bias)
    x = problem.bottom[0].data.reshape(5, -1)
    want = np.dot(problem.weight.reshape(4, 5), x) + problem.bias.reshape(-1, 1)
    np.testing.assert_array_equal(problem.top[0].data.reshape(4, -1), want)


def test_dense_columns_keep_no_copy_for_a_backward_that_will_not_come():
    """keep_for_backward False (a net that never runs the layer's backward): forward saves nothing,
    and a backward after all unrolls the bottom again."""
    problem = Problem(shape_2d(SHAPES_2D[2]))
    path = DenseColumns(problem.shape, Scratch())
    path.keep_for_backward = False
    path.forward(problem.bottom, problem.top, problem.weight, problem.bias)
    assert path.col_source is None
    grads = (problem.weight_diff.copy(), problem.bias_diff.copy())
    path.backward(problem.top, [True], problem.bottom, problem.weight, None, *grads)
    check(problem, grads)


def test_the_net_tells_each_layer_whether_its_backward_can_run():
    from google.protobuf import text_format
    import npcaffe
    from npcaffe.proto import caffe_pb2
    text = """
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
      convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" } } }"""
    for force, expected in (("", False), ("force_backward: true", True)):
        net = npcaffe.Net(text_format.Parse(force + text, caffe_pb2.NetParameter()), npcaffe.TEST)
        net.forward()
        conv = net.layer_dict["conv"]
        assert conv.backward_expected is expected
        assert (conv.compute_path().col_source is not None) is expected


@pytest.mark.parametrize("wanted", [(False, True, True), (True, False, True), (True, True, False),
                                    (False, False, True)])
def test_dense_columns_compute_only_what_is_wanted(wanted):
    """propagate_down False leaves the bottom diff alone; a None parameter diff is not computed."""
    propagate_down, weight_diff, bias_diff = wanted
    problem = Problem(shape_2d(SHAPES_2D[0]))
    grads = problem.run(DenseColumns(problem.shape, Scratch()), propagate_down=propagate_down,
                        weight_diff=weight_diff, bias_diff=bias_diff)
    assert (grads[0] is None) != weight_diff and (grads[1] is None) != bias_diff
    check(problem, grads, propagate_down)


def test_per_image_weight_gradient_equals_one_gemm():
    rng = np.random.default_rng(3)
    num, outputs, taps, positions = 5, 4, 7, 11
    top_diff = rng.standard_normal((num, outputs, positions)).astype(np.float32)
    col = rng.standard_normal((taps, num * positions)).astype(np.float32)
    out = np.full((outputs, taps), np.nan, np.float32)
    per_image_weight_gradient(top_diff, col, Scratch(), out)
    want = top_diff.transpose(1, 0, 2).reshape(outputs, -1).astype(np.float64) @ col.T.astype(np.float64)
    close(out, want)


@pytest.mark.parametrize("num, channels, num_output, image, kernel, pad, stride, dilation, group", [
    (2, 3, 2, (9,), (3,), (1,), (2,), (1,), 1),                                   # 1-D
    (2, 4, 4, (4, 5, 6), (2, 3, 2), (1, 0, 1), (2, 1, 1), (1, 1, 2), 2),         # 3-D, groups
    (1, 2, 3, (3, 4, 3), (2, 2, 2), (0, 0, 0), (1, 1, 1), (1, 1, 1), 1),
])
def test_nd_columns_match_reference(num, channels, num_output, image, kernel, pad, stride, dilation, group):
    problem = Problem(conv_shape(num, channels, num_output, image, kernel, pad, stride, dilation, group),
                      bottoms=2)
    check(problem, problem.run(NdColumns(problem.shape, Scratch())))


# -- sparse weights (TRAIN) ----------------------------------------------------------------------

SPARSE_PATHS = [SparseBatchInner, SparseColumns, SparseStride1]


@pytest.mark.parametrize("path_class, case", [(path_class, case) for path_class in SPARSE_PATHS for case in SHAPES_2D
                                              if path_class is not SparseStride1 or stride_1(case)])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.5])
def test_sparse_paths_match_reference(path_class, case, density):
    shape = shape_2d(case)
    problem = Problem(shape, bottoms=2, density=density, seed=4)
    check(problem, problem.run(path_class(shape, Scratch()), csr=True))


@pytest.mark.parametrize("path_class", SPARSE_PATHS)
def test_sparse_paths_compute_only_what_is_wanted(path_class):
    problem = Problem(shape_2d(SHAPES_2D[0]), density=0.3)
    grads = problem.run(path_class(problem.shape, Scratch()), csr=True, propagate_down=False, bias_diff=False)
    assert grads[1] is None
    check(problem, grads, propagate_down=False)


def test_sparse_batch_inner_weight_gradient_in_bands(monkeypatch):
    """The weight gradient one band of output rows at a time (here one row) sums to the same."""
    monkeypatch.setattr(conv_paths, "WEIGHT_GRAD_BAND_FLOATS", 1)
    problem = Problem(shape_2d(SHAPES_2D[2]), density=0.3)
    check(problem, problem.run(SparseBatchInner(problem.shape, Scratch()), csr=True))


def test_sparse_columns_in_chunks_of_images(monkeypatch):
    """Columns a few images at a time (here one) give the same forward and weight gradient."""
    monkeypatch.setattr(conv_paths, "COLUMN_CHUNK_FLOATS", 1)
    for case in (SHAPES_2D[0], SHAPES_2D[3]):   # per-image and one-GEMM weight gradients
        problem = Problem(shape_2d(case), bottoms=2, density=0.3)
        check(problem, problem.run(SparseColumns(problem.shape, Scratch()), csr=True))


def test_sparse_batch_inner_backward_copies_a_bottom_written_since_forward():
    problem = Problem(shape_2d(SHAPES_2D[3]), density=0.2)
    path = SparseBatchInner(problem.shape, Scratch())
    path.forward(problem.bottom, problem.top, None, problem.bias, problem.csr)
    problem.bottom[0].data[...] *= 3
    grads = (problem.weight_diff.copy(), None)
    path.backward(problem.top, [False], problem.bottom, None, problem.csr, *grads)
    _, weight_diff, _ = problem.reference()
    close(grads[0], weight_diff)


def test_batch_inner_suits_lenet5_conv2_not_conv1():
    conv1 = conv_shape(64, 1, 20, (28, 28), (5, 5))
    conv2 = conv_shape(64, 20, 50, (12, 12), (5, 5))
    assert SparseBatchInner.suits(conv2) and not SparseBatchInner.suits(conv1)
    assert not SparseBatchInner.suits(conv2._replace(channels=40, num_output=100, group=2))


# -- packed weights (TEST) -------------------------------------------------------------------------

def packed_weights(problem):
    """What the Packed* paths read of npcaffe.sparse.packing.PackedWeights."""
    indptr, indices, values = problem.csr
    bias = np.zeros(0, np.float32) if problem.bias is None else problem.bias
    return types.SimpleNamespace(indptr=indptr, indices=indices, values=values, bias=bias, scratch={})


PACKED_PATHS = [(PackedStride1, 1), (PackedStride1, 3), (PackedColumns, 2), (PackedBatchInner, 8),
                (PackedBatchInner, 11)]


@pytest.mark.parametrize("path_class, num, case", [(path_class, num, case) for path_class, num in PACKED_PATHS
                                                   for case in SHAPES_2D
                                                   if path_class is not PackedStride1 or stride_1(case)])
@pytest.mark.parametrize("bias", [True, False])
def test_packed_paths_match_reference(path_class, num, case, bias):
    shape = shape_2d(case)._replace(num=num)
    problem = Problem(shape, bottoms=2, density=0.2, bias=bias, seed=5)
    packed = packed_weights(problem)
    path = path_class(shape, Scratch())
    pairs = [(b.data, t.data) for b, t in zip(problem.bottom, problem.top)]
    outputs, _, _ = problem.reference()
    for _ in range(2):   # again with the work arrays kept in packed.scratch
        for _, t in pairs:
            t[...] = np.nan
        path.forward(pairs, packed)
        for (y, _), (_, t) in zip(outputs, pairs):
            close(t, y)


# -- depthwise (group = channels) ----------------------------------------------------------------

def depthwise_shape(case, multiplier):
    num, channels, _, image, kernel, pad, stride, dilation = case
    channels += 2  # at least 3 channels, so a wrong channel index shows
    return conv_shape(num, channels, multiplier * channels, image, kernel, pad, stride, dilation, group=channels)


@pytest.mark.parametrize("case", SHAPES_2D)
@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("bottoms", [1, 2])
def test_depthwise_matches_reference(case, multiplier, bottoms):
    problem = Problem(depthwise_shape(case, multiplier), bottoms=bottoms, bias=bottoms == 1)
    assert conv_paths.Depthwise.suits(problem.shape)
    check(problem, problem.run(conv_paths.Depthwise(problem.shape, Scratch())))


@pytest.mark.parametrize("wanted", [(False, True, True), (True, False, True), (True, True, False),
                                    (False, False, False)])
def test_depthwise_computes_only_what_is_wanted(wanted):
    propagate_down, weight_diff, bias_diff = wanted
    problem = Problem(depthwise_shape(SHAPES_2D[2], 1))
    grads = problem.run(conv_paths.Depthwise(problem.shape, Scratch()), propagate_down=propagate_down,
                        weight_diff=weight_diff, bias_diff=bias_diff)
    check(problem, grads, propagate_down=propagate_down)


def test_depthwise_suits_only_one_input_channel_per_group():
    assert not conv_paths.Depthwise.suits(shape_2d(SHAPES_2D[1], group=3))  # 3 input channels per group
    assert not conv_paths.Depthwise.suits(shape_2d(SHAPES_2D[2], group=1))
    assert conv_paths.Depthwise.suits(depthwise_shape(SHAPES_2D[2], 3))
