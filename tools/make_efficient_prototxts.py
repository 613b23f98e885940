"""Write the deploy prototxts of the efficient architectures under prototxt/<name>/, from the published
architectures, in the layout (layer names, layer types, BatchNorm + Scale pairs) of their best-known
Caffe releases:

    mobilenet_v1       shicai/MobileNet-Caffe mobilenet_deploy.prototxt (grouped Convolution), and
                       the same net with yonghenglh6/DepthwiseConvolution's DepthwiseConvolution type
    mobilenet_v2       shicai/MobileNet-Caffe mobilenet_v2_deploy.prototxt's layout, the paper's Table 2
    shufflenet_v1      farmingyard/ShuffleNet shufflenet_1x_g3_deploy.prototxt (ConvolutionDepthwise,
                       ShuffleChannel)
    shufflenet_v2      farmingyard/ShuffleNet shufflenet_v2_1x_deploy.prototxt
    se_resnet50        hujie-frank/SENet models/SE-ResNet-50.prototxt (Axpy, Sigmoid, global pooling)
    se_resnext50       hujie-frank/SENet models/SE-ResNeXt-50.prototxt
    squeezenet_v1_1    DeepScale/SqueezeNet SqueezeNet_v1.1/deploy.prototxt (input 227)
    densenet121        shicai/DenseNet-Caffe DenseNet_121.prototxt (pool1 round_mode: FLOOR)
    vgg16              the BVLC model zoo's VGG_ILSVRC_16_layers_deploy.prototxt

Deploy nets: an Input layer of 1 x 3 x 224 x 224 (227 for SqueezeNet), BatchNorm with
use_global_stats, no fillers (weights come from a caffemodel or Caffe's default constant 0).
Where a release differs from the published architecture's parameter count, the paper wins and
the function's docstring says what differs.

Usage (from the repository root):
    python tools/make_efficient_prototxts.py            writes every net under prototxt/
    python tools/make_efficient_prototxts.py NAME PATH  writes one (NAME as listed by --list) to PATH
    python tools/make_efficient_prototxts.py --list
"""
import os
import sys


class Prototxt:
    """A deploy net's text, layer by layer, in the releases' layout (two-space indents)."""

    def __init__(self, name, size=224):
        self.parts = [f'name: "{name}"\n'
                      f'layer {{\n  name: "data"\n  type: "Input"\n  top: "data"\n  input_param {{\n'
                      f'    shape {{\n      dim: 1\n      dim: 3\n      dim: {size}\n      dim: {size}\n    }}\n'
                      f'  }}\n}}\n']

    def layer(self, name, kind, bottom, top, body=""):
        bottoms = [bottom] if isinstance(bottom, str) else bottom
        tops = [top] if isinstance(top, str) else top
        text = f'layer {{\n  name: "{name}"\n  type: "{kind}"\n'
        text += "".join(f'  bottom: "{b}"\n' for b in bottoms) + "".join(f'  top: "{t}"\n' for t in tops)
        self.parts.append(text + body + "}\n")
        return tops[0]

    @staticmethod
    def _message(field, entries):
        return f"  {field} {{\n" + "".join(f"    {e}\n" for e in entries) + "  }\n"

    def conv(self, name, bottom, num_output, kernel, stride=1, pad=0, group=1, bias=False, kind="Convolution",
             top=None):
        entries = [] if num_output is None else [f"num_output: {num_output}"]
        if not bias:
            entries.append("bias_term: false")
        if pad:
            entries.append(f"pad: {pad}")
        entries.append(f"kernel_size: {kernel}")
        if group != 1:
            entries.append(f"group: {group}")
        if stride != 1:
            entries.append(f"stride: {stride}")
        return self.layer(name, kind, bottom, top or name, self._message("convolution_param", entries))

    def bn(self, name, blob, top=None, eps=None):
        entries = ["use_global_stats: true"] if eps is None else [f"eps: {eps}"]
        return self.layer(name, "BatchNorm", blob, top or blob, self._message("batch_norm_param", entries))

    def scale(self, name, blob):
        return self.layer(name, "Scale", blob, blob, self._message("scale_param", ["bias_term: true"]))

    def relu(self, name, blob):
        return self.layer(name, "ReLU", blob, blob)

    def pool(self, name, bottom, method, kernel=None, stride=1, pad=0, floor=False, top=None):
        entries = [f"pool: {method}"]
        if kernel is None:
            entries.append("global_pooling: true")
        else:
            entries += [f"kernel_size: {kernel}", f"stride: {stride}"] + ([f"pad: {pad}"] if pad else [])
        if floor:
            entries.append("round_mode: FLOOR")
        return self.layer(name, "Pooling", bottom, top or name, self._message("pooling_param", entries))

    def inner_product(self, name, bottom, num_output):
        return self.layer(name, "InnerProduct", bottom, name, self._message("inner_product_param",
                                                                             [f"num_output: {num_output}"]))

    def text(self):
        return "".join(self.parts)


# -- MobileNet v1 -----------------------------------------------------------------------------------

MOBILENET_V1 = [  # (name, depthwise stride, pointwise outputs): the paper's Table 1
    ("conv2_1", 1, 64), ("conv2_2", 2, 128), ("conv3_1", 1, 128), ("conv3_2", 2, 256), ("conv4_1", 1, 256),
    ("conv4_2", 2, 512), ("conv5_1", 1, 512), ("conv5_2", 1, 512), ("conv5_3", 1, 512), ("conv5_4", 1, 512),
    ("conv5_5", 1, 512), ("conv5_6", 2, 1024), ("conv6", 1, 1024)]


def mobilenet_v1(depthwise_type="Convolution"):
    """MobileNet v1 1.0-224 (Howard et al. 2017), shicai/MobileNet-Caffe's names: every convolution
    without bias and followed by BatchNorm + Scale + ReLU, the depthwise ones as grouped Convolution
    (group = channels) or as `depthwise_type`; global average pooling, fc7 a 1 x 1 Convolution with
    bias, prob.  4,231,976 learned parameters (Keras' MobileNet, weights and BN gamma / beta)."""
    net = Prototxt("MOBILENET" if depthwise_type == "Convolution" else f"MOBILENET ({depthwise_type})")
    x = net.conv("conv1", "data", 32, 3, stride=2, pad=1)
    net.bn("conv1/bn", x)
    net.scale("conv1/scale", x)
    net.relu("relu1", x)
    channels = 32
    for name, stride, outputs in MOBILENET_V1:
        suffix = name[4:]
        x = net.conv(f"{name}/dw", x, channels, 3, stride=stride, pad=1, group=channels, kind=depthwise_type)
        net.bn(f"{name}/dw/bn", x)
        net.scale(f"{name}/dw/scale", x)
        net.relu(f"relu{suffix}/dw", x)
        x = net.conv(f"{name}/sep", x, outputs, 1)
        net.bn(f"{name}/sep/bn", x)
        net.scale(f"{name}/sep/scale", x)
        net.relu(f"relu{suffix}/sep", x)
        channels = outputs
    x = net.pool("pool6", x, "AVE")
    x = net.conv("fc7", x, 1000, 1, bias=True)
    net.layer("prob", "Softmax", x, "prob")
    return net.text()


# -- MobileNet v2 -----------------------------------------------------------------------------------

MOBILENET_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]  # (expansion t, outputs c, repeats n, first stride s): the paper's Table 2


def mobilenet_v2():
    """MobileNet v2 1.0-224 (Sandler et al. 2018) in shicai/MobileNet-Caffe's layout: inverted residual
    blocks conv{s}_{i}/expand (1 x 1, ReLU), /dwise (3 x 3 grouped Convolution, ReLU), /linear (1 x 1,
    no ReLU), each with BatchNorm + Scale, an Eltwise sum block_{s}_{i} where stride 1 keeps the
    channels; conv6_4 (1280), global pooling, fc7 (1 x 1 Convolution with bias), prob.  The first block
    (t = 1) has no expansion, as in the paper and torchvision / Keras, whose 3,504,872 learned
    parameters this net has."""
    net = Prototxt("MOBILENET_V2")
    x = net.conv("conv1", "data", 32, 3, stride=2, pad=1)
    net.bn("conv1/bn", x)
    net.scale("conv1/scale", x)
    net.relu("relu1", x)
    channels, stage, index = 32, 2, 0
    for t, outputs, repeats, first_stride in MOBILENET_V2:
        for r in range(repeats):
            stride = first_stride if r == 0 else 1
            if stride == 2:
                stage, index = stage + 1, 0
            index += 1
            name, block_input = f"conv{stage}_{index}", x
            if t != 1:
                x = net.conv(f"{name}/expand", x, t * channels, 1)
                net.bn(f"{name}/expand/bn", x)
                net.scale(f"{name}/expand/scale", x)
                net.relu(f"relu{stage}_{index}/expand", x)
            hidden = t * channels
            x = net.conv(f"{name}/dwise", x, hidden, 3, stride=stride, pad=1, group=hidden)
            net.bn(f"{name}/dwise/bn", x)
            net.scale(f"{name}/dwise/scale", x)
            net.relu(f"relu{stage}_{index}/dwise", x)
            x = net.conv(f"{name}/linear", x, outputs, 1)
            net.bn(f"{name}/linear/bn", x)
            net.scale(f"{name}/linear/scale", x)
            if stride == 1 and channels == outputs:
                x = net.layer(f"block_{stage}_{index}", "Eltwise", [block_input, x], f"block_{stage}_{index}")
            channels = outputs
    x = net.conv("conv6_4", x, 1280, 1)
    net.bn("conv6_4/bn", x)
    net.scale("conv6_4/scale", x)
    net.relu("relu6_4", x)
    x = net.pool("pool6", x, "AVE")
    x = net.conv("fc7", x, 1000, 1, bias=True)
    net.layer("prob", "Softmax", x, "prob")
    return net.text()


# -- ShuffleNet v1 and v2 ---------------------------------------------------------------------------

def _bn_scale(net, name, x, relu):
    net.bn(f"{name}_bn", x)
    net.scale(f"{name}_scale", x)
    if relu:
        net.relu(f"{name}_relu", x)
    return x


def _stem(net):
    x = net.conv("conv1", "data", 24, 3, stride=2, pad=1)
    _bn_scale(net, "conv1", x, True)
    return net.pool("pool1", x, "MAX", 3, 2)


def shufflenet_v1(groups=3):
    """ShuffleNet 1x, g = 3 (Zhang et al. 2017), as farmingyard/ShuffleNet's shufflenet_1x_g3_deploy:
    stages of 4 / 8 / 4 units with 240 / 480 / 960 outputs; unit k: resx{k}_conv1 (1 x 1, group 3, but
    group 1 on the 24-channel stem), shuffle{k} (ShuffleChannel, after the first unit's conv1 only where
    it is grouped), resx{k}_conv2 (3 x 3 ConvolutionDepthwise, no ReLU), resx{k}_conv3 (1 x 1, group 3),
    then an Eltwise sum with the unit's input, or, in a stage's first unit (stride 2), a Concat with
    resx{k}_match_conv (3 x 3 average pooling, stride 2) so conv3 makes out - in channels; bottleneck =
    conv3's outputs / 4, as the release (the paper's reference code uses out / 4 also in first units).
    Global pooling and fc1000 (1 x 1 Convolution with bias), no Softmax, as released."""
    net = Prototxt("shufflenet")
    x = _stem(net)
    channels, unit = 24, 0
    for repeats, outputs in ((4, 240), (8, 480), (4, 960)):
        for r in range(repeats):
            unit += 1
            first = r == 0
            name, block_input = f"resx{unit}", x
            made = outputs - channels if first else outputs
            bottleneck = made // 4
            if first:
                shortcut = net.pool(f"{name}_match_conv", x, "AVE", 3, 2)
            stem_unit = channels == 24
            x = net.conv(f"{name}_conv1", x, bottleneck, 1, group=1 if stem_unit else groups)
            _bn_scale(net, f"{name}_conv1", x, True)
            if not stem_unit:
                x = net.layer(f"shuffle{unit}", "ShuffleChannel", x, f"shuffle{unit}",
                              Prototxt._message("shuffle_channel_param", [f"group: {groups}"]))
            x = net.conv(f"{name}_conv2", x, bottleneck, 3, stride=2 if first else 1, pad=1,
                         kind="ConvolutionDepthwise")
            _bn_scale(net, f"{name}_conv2", x, False)
            x = net.conv(f"{name}_conv3", x, made, 1, group=groups)
            _bn_scale(net, f"{name}_conv3", x, False)
            if first:
                x = net.layer(f"{name}_concat", "Concat", [shortcut, x], f"{name}_concat")
                net.relu(f"{name}_concat_relu", x)
            else:
                x = net.layer(f"{name}_elewise", "Eltwise", [block_input, x], f"{name}_elewise")
                net.relu(f"{name}_elewise_relu", x)
            channels = outputs
    x = net.pool("pool_ave", x, "AVE")
    net.conv("fc1000", x, 1000, 1, bias=True)
    return net.text()


def shufflenet_v2():
    """ShuffleNet v2 1x (Ma et al. 2018), as farmingyard/ShuffleNet's shufflenet_v2_1x_deploy: stages of
    4 / 8 / 4 units with 116 / 232 / 464 outputs.  A stage's first unit (stride 2) runs both branches on
    its input - branch{k}_1: 3 x 3 ConvolutionDepthwise, 1 x 1; branch{k}_2: 1 x 1, 3 x 3
    ConvolutionDepthwise, 1 x 1 - and concatenates them; the others Slice the input in halves
    (branch{k}_1 passes, branch{k}_2 goes through 1 x 1, depthwise, 1 x 1); every unit ends with
    Concat and ShuffleChannel (group 2).  conv5 (1024), global pooling, fc1000 (1 x 1 Convolution with
    bias), no Softmax, as released.  2,278,604 learned parameters, torchvision's shufflenet_v2_x1_0."""
    net = Prototxt("shufflenet_v2")
    x = _stem(net)
    channels, unit = 24, 0
    for repeats, outputs in ((4, 116), (8, 232), (4, 464)):
        half = outputs // 2
        for r in range(repeats):
            unit += 1
            first = r == 0
            if first:
                left = net.conv(f"branch{unit}_1_conv1", x, channels, 3, stride=2, pad=1,
                                kind="ConvolutionDepthwise")
                _bn_scale(net, f"branch{unit}_1_conv1", left, False)
                left = net.conv(f"branch{unit}_1_conv2", left, half, 1)
                _bn_scale(net, f"branch{unit}_1_conv2", left, True)
                right = x
            else:
                left, right = f"branch{unit}_1", f"branch{unit}_2"
                net.layer(f"slice{unit}", "Slice", x, [left, right],
                          Prototxt._message("slice_param", [f"slice_point: {half}", "axis: 1"]))
            right = net.conv(f"branch{unit}_2_conv1", right, half, 1)
            _bn_scale(net, f"branch{unit}_2_conv1", right, True)
            right = net.conv(f"branch{unit}_2_conv2", right, half, 3, stride=2 if first else 1, pad=1,
                             kind="ConvolutionDepthwise")
            _bn_scale(net, f"branch{unit}_2_conv2", right, False)
            right = net.conv(f"branch{unit}_2_conv3", right, half, 1)
            _bn_scale(net, f"branch{unit}_2_conv3", right, True)
            x = net.layer(f"concat{unit}", "Concat", [left, right], f"concat{unit}")
            x = net.layer(f"shuffle{unit}", "ShuffleChannel", x, f"shuffle{unit}",
                          Prototxt._message("shuffle_channel_param", ["group: 2"]))
            channels = outputs
    x = net.conv("conv5", x, 1024, 1)
    _bn_scale(net, "conv5", x, True)
    x = net.pool("pool_ave", x, "AVE")
    net.conv("fc1000", x, 1000, 1, bias=True)
    return net.text()


# -- SE-ResNet-50 and SE-ResNeXt-50 -----------------------------------------------------------------

def _se_resnet(name, widths, group, stride_on_3x3):
    """hujie-frank/SENet's layout: conv{s}_{i}_1x1_reduce / _3x3 / _1x1_increase with BatchNorm +
    Scale ('/bn', '/bn/scale'), the SE branch _global_pool (global AVE), _1x1_down (C / 16, bias),
    ReLU, _1x1_up (C, bias), Sigmoid (_prob, in place), and Axpy (gate, increase, shortcut) as the
    block's output, then ReLU; _1x1_proj shortcuts on each stage's first block."""
    net = Prototxt(name)
    x = net.conv("conv1/7x7_s2", "data", 64, 7, stride=2, pad=3)
    net.bn("conv1/7x7_s2/bn", x)
    net.scale("conv1/7x7_s2/bn/scale", x)
    net.relu("conv1/relu_7x7_s2", x)
    x = net.pool("pool1/3x3_s2", x, "MAX", 3, 2)
    for stage, (blocks, inner, outputs) in enumerate(widths, start=2):
        for i in range(1, blocks + 1):
            stride = 2 if i == 1 and stage > 2 else 1
            prefix, block_input = f"conv{stage}_{i}", x
            parts = [("1x1_reduce", inner, 1, 1 if stride_on_3x3 else stride, 1),
                     ("3x3", inner, 3, stride if stride_on_3x3 else 1, group),
                     ("1x1_increase", outputs, 1, 1, 1)]
            for part, num_output, kernel, s, g in parts:
                x = net.conv(f"{prefix}_{part}", x, num_output, kernel, stride=s, pad=kernel // 2, group=g)
                net.bn(f"{prefix}_{part}/bn", x)
                net.scale(f"{prefix}_{part}/bn/scale", x)
                if part != "1x1_increase":
                    net.relu(f"{prefix}_{part}/relu", x)
            increase = x
            gate = net.pool(f"{prefix}_global_pool", x, "AVE")
            gate = net.conv(f"{prefix}_1x1_down", gate, outputs // 16, 1, bias=True)
            net.relu(f"{prefix}_1x1_down/relu", gate)
            gate = net.conv(f"{prefix}_1x1_up", gate, outputs, 1, bias=True)
            net.layer(f"{prefix}_prob", "Sigmoid", gate, gate)
            if i == 1:
                shortcut = net.conv(f"{prefix}_1x1_proj", block_input, outputs, 1, stride=stride)
                net.bn(f"{prefix}_1x1_proj/bn", shortcut)
                net.scale(f"{prefix}_1x1_proj/bn/scale", shortcut)
            else:
                shortcut = block_input
            x = net.layer(prefix, "Axpy", [gate, increase, shortcut], prefix)
            net.relu(f"{prefix}/relu", x)
    x = net.pool("pool5/7x7_s1", x, "AVE", 7, 1)
    x = net.inner_product("classifier", x, 1000)
    net.layer("prob", "Softmax", x, "prob")
    return net.text()


def se_resnet50():
    """SE-ResNet-50 (Hu et al. 2018), hujie-frank/SENet's: ResNet-50 with the stride on each stage's
    first 1 x 1 (as the original Caffe ResNet) and an SE gate (reduction 16) per block.
    28,088,024 learned parameters (ResNet-50's 25,557,032 + the SE branches' 2,530,992)."""
    return _se_resnet("SE-ResNet-50", [(3, 64, 256), (4, 128, 512), (6, 256, 1024), (3, 512, 2048)], 1, False)


def se_resnext50():
    """SE-ResNeXt-50 (32 x 4d), hujie-frank/SENet's: ResNeXt-50's grouped 3 x 3 (32 groups, the stride
    on it) with the same SE gates.  27,559,896 learned parameters (ResNeXt-50 32x4d's 25,028,904 + the
    SE branches' 2,530,992)."""
    return _se_resnet("SE-ResNeXt-50 (32 x 4d)", [(3, 128, 256), (4, 256, 512), (6, 512, 1024), (3, 1024, 2048)],
                      32, True)


# -- SqueezeNet v1.1 --------------------------------------------------------------------------------

SQUEEZENET_FIRES = [(2, 16, 64), (3, 16, 64), (4, 32, 128), (5, 32, 128), (6, 48, 192), (7, 48, 192),
                    (8, 64, 256), (9, 64, 256)]  # (fire, squeeze, expand each)


def squeezenet_v1_1():
    """SqueezeNet v1.1 (Iandola et al.; DeepScale/SqueezeNet's v1.1 deploy.prototxt, input 227): conv1
    (64, 3 x 3, stride 2, bias), max pooling after conv1, fire3 and fire5 (3 x 3, stride 2, rounding
    up), fire modules squeeze 1 x 1 -> expand 1 x 1 and 3 x 3 (pad 1) -> Concat, every convolution
    with bias and ReLU; conv10 (1000, 1 x 1), global average pooling, prob.  Dropout (drop9) is the
    identity in a deploy net.  1,235,496 parameters."""
    net = Prototxt("SqueezeNet_v1.1", size=227)
    x = net.conv("conv1", "data", 64, 3, stride=2, bias=True)
    net.relu("relu_conv1", x)
    x = net.pool("pool1", x, "MAX", 3, 2)
    for fire, squeeze, expand in SQUEEZENET_FIRES:
        f = f"fire{fire}"
        s = net.conv(f"{f}/squeeze1x1", x, squeeze, 1, bias=True)
        net.relu(f"{f}/relu_squeeze1x1", s)
        a = net.conv(f"{f}/expand1x1", s, expand, 1, bias=True)
        net.relu(f"{f}/relu_expand1x1", a)
        b = net.conv(f"{f}/expand3x3", s, expand, 3, pad=1, bias=True)
        net.relu(f"{f}/relu_expand3x3", b)
        x = net.layer(f"{f}/concat", "Concat", [a, b], f"{f}/concat")
        if fire in (3, 5):
            x = net.pool(f"pool{fire}", x, "MAX", 3, 2)
    net.layer("drop9", "Dropout", x, x, Prototxt._message("dropout_param", ["dropout_ratio: 0.5"]))
    x = net.conv("conv10", x, 1000, 1, bias=True)
    net.relu("relu_conv10", x)
    x = net.pool("pool10", x, "AVE")
    net.layer("prob", "Softmax", x, "prob")
    return net.text()


# -- DenseNet-121 -----------------------------------------------------------------------------------

def densenet121():
    """DenseNet-121 (Huang et al. 2017), shicai/DenseNet-Caffe's DenseNet_121: growth 32, blocks of
    6 / 12 / 24 / 16 layers (BN-Scale-ReLU-1 x 1 (128)-BN-Scale-ReLU-3 x 3 (32), concatenated),
    transitions halving the channels (1 x 1, 2 x 2 average pooling); BatchNorm (eps 1e-5) writes a new
    blob, Scale and ReLU work on it in place; pool1 (3 x 3, stride 2, pad 1) rounds down (round_mode:
    FLOOR, BVLC master; the release's older versions wrote the forks' ceil_mode: false) to 56 x 56.
    Global pooling, fc6 (1 x 1 Convolution with bias), no Softmax, as released.  7,978,856 learned
    parameters, torchvision's densenet121."""
    net = Prototxt("DENSENET_121")
    x = net.conv("conv1", "data", 64, 7, stride=2, pad=3)
    net.bn("conv1/bn", x, top="conv1/bn", eps="1e-5")
    net.scale("conv1/scale", "conv1/bn")
    net.relu("relu1", "conv1/bn")
    x = net.pool("pool1", "conv1/bn", "MAX", 3, 2, pad=1, floor=True)
    channels = 64
    blocks = (6, 12, 24, 16)
    for stage, layers in enumerate(blocks, start=2):
        for i in range(1, layers + 1):
            for part, num_output, kernel in (("x1", 128, 1), ("x2", 32, 3)):
                bottom = x if part == "x1" else f"conv{stage}_{i}/x1"
                normed = net.bn(f"conv{stage}_{i}/{part}/bn", bottom, top=f"conv{stage}_{i}/{part}/bn", eps="1e-5")
                net.scale(f"conv{stage}_{i}/{part}/scale", normed)
                net.relu(f"relu{stage}_{i}/{part}", normed)
                net.conv(f"conv{stage}_{i}/{part}", normed, num_output, kernel, pad=kernel // 2)
            x = net.layer(f"concat_{stage}_{i}", "Concat", [x, f"conv{stage}_{i}/x2"], f"concat_{stage}_{i}")
            channels += 32
        normed = net.bn(f"conv{stage}_blk/bn", x, top=f"conv{stage}_blk/bn", eps="1e-5")
        net.scale(f"conv{stage}_blk/scale", normed)
        net.relu(f"relu{stage}_blk", normed)
        if stage - 1 < len(blocks):
            channels //= 2
            x = net.conv(f"conv{stage}_blk", normed, channels, 1)
            x = net.pool(f"pool{stage}", x, "AVE", 2, 2)
        else:
            x = net.pool("pool5", normed, "AVE")
    net.conv("fc6", x, 1000, 1, bias=True)
    return net.text()


# -- VGG-16 -----------------------------------------------------------------------------------------

def vgg16():
    """VGG-16 (Simonyan & Zisserman 2015, configuration D), the BVLC model zoo's deploy net: 13 3 x 3
    convolutions (pad 1, bias, ReLU) in five stages of 64 / 128 / 256 / 512 / 512 channels, each ended
    by 2 x 2 max pooling; fc6, fc7 (4096, ReLU, Dropout), fc8 (1000), prob.  138,357,544 parameters."""
    net = Prototxt("VGG_ILSVRC_16_layers")
    x = "data"
    for stage, (convs, channels) in enumerate(((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)), start=1):
        for i in range(1, convs + 1):
            x = net.conv(f"conv{stage}_{i}", x, channels, 3, pad=1, bias=True)
            net.relu(f"relu{stage}_{i}", x)
        x = net.pool(f"pool{stage}", x, "MAX", 2, 2)
    for fc in (6, 7):
        x = net.inner_product(f"fc{fc}", x, 4096)
        net.relu(f"relu{fc}", x)
        net.layer(f"drop{fc}", "Dropout", x, x, Prototxt._message("dropout_param", ["dropout_ratio: 0.5"]))
    x = net.inner_product("fc8", x, 1000)
    net.layer("prob", "Softmax", x, "prob")
    return net.text()


# file under prototxt/ -> the function writing it
NETS = {
    "mobilenet_v1/mobilenet_v1_deploy.prototxt": mobilenet_v1,
    "mobilenet_v1/mobilenet_v1_depthwise_deploy.prototxt": lambda: mobilenet_v1("DepthwiseConvolution"),
    "mobilenet_v2/mobilenet_v2_deploy.prototxt": mobilenet_v2,
    "shufflenet_v1/shufflenet_v1_g3_deploy.prototxt": shufflenet_v1,
    "shufflenet_v2/shufflenet_v2_1x_deploy.prototxt": shufflenet_v2,
    "se_resnet50/SE-ResNet-50-deploy.prototxt": se_resnet50,
    "se_resnext50/SE-ResNeXt-50-deploy.prototxt": se_resnext50,
    "squeezenet_v1_1/squeezenet_v1_1_deploy.prototxt": squeezenet_v1_1,
    "densenet121/DenseNet-121-deploy.prototxt": densenet121,
    "vgg16/VGG-16-deploy.prototxt": vgg16,
}


def main(argv):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if argv[1:] == ["--list"]:
        print("\n".join(NETS))
        return 0
    if len(argv) == 3:
        if argv[1] not in NETS:
            print(f"unknown net '{argv[1]}'; --list names them", file=sys.stderr)
            return 2
        jobs = {argv[1]: argv[2]}
    elif len(argv) == 1:
        jobs = {key: os.path.join(root, "prototxt", key) for key in NETS}
    else:
        print(__doc__.split("Usage")[1], file=sys.stderr)
        return 2
    for key, path in jobs.items():
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write(NETS[key]())
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
