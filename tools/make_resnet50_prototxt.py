"""Write prototxt/resnet50/ResNet-50-deploy.prototxt in the layout of the original release
(KaimingHe/deep-residual-networks): a legacy `input:` header, then per block
Convolution -> BatchNorm (use_global_stats) -> Scale (bias_term) -> ReLU, the
projection shortcut on each stage's first block, Eltwise sums, pool5, fc1000, prob.

As in the original, only conv1 has a bias; every other convolution has
bias_term: false.  Run from the repository root: python tools/make_resnet50_prototxt.py
"""
import os
import sys

STAGES = [(2, 3, 64, 1), (3, 4, 128, 2), (4, 6, 256, 2), (5, 3, 512, 2)]  # (stage, blocks, planes, stride)


def layer(bottom, top, name, kind, body=""):
    text = f'layer {{\n\tbottom: "{bottom}"\n\ttop: "{top}"\n\tname: "{name}"\n\ttype: "{kind}"\n'
    return text + body + "}\n\n"


def conv(bottom, top, num_output, kernel, stride, pad, bias):
    fields = [f"num_output: {num_output}", f"kernel_size: {kernel}", f"pad: {pad}", f"stride: {stride}"]
    if not bias:
        fields.append("bias_term: false")
    return layer(bottom, top, top, "Convolution", "\tconvolution_param {\n" + "".join(f"\t\t{f}\n" for f in fields) + "\t}\n")


def bn_scale(blob, suffix):
    return (layer(blob, blob, f"bn{suffix}", "BatchNorm", "\tbatch_norm_param {\n\t\tuse_global_stats: true\n\t}\n")
            + layer(blob, blob, f"scale{suffix}", "Scale", "\tscale_param {\n\t\tbias_term: true\n\t}\n"))


def relu(blob):
    return layer(blob, blob, f"{blob}_relu", "ReLU")


def resnet50():
    out = ['name: "ResNet-50"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 224\ninput_dim: 224\n\n']
    out.append(conv("data", "conv1", 64, 7, 2, 3, bias=True))
    out.append(bn_scale("conv1", "_conv1"))
    out.append(relu("conv1"))
    out.append(layer("conv1", "pool1", "pool1", "Pooling",
                     "\tpooling_param {\n\t\tkernel_size: 3\n\t\tstride: 2\n\t\tpool: MAX\n\t}\n"))
    previous = "pool1"
    for stage, blocks, planes, stride in STAGES:
        for b in range(blocks):
            block = f"{stage}{'abcdef'[b]}"
            s = stride if b == 0 else 1
            if b == 0:
                shortcut = f"res{block}_branch1"
                out.append(conv(previous, shortcut, 4 * planes, 1, s, 0, bias=False))
                out.append(bn_scale(shortcut, f"{block}_branch1"))
            else:
                shortcut = previous
            a, bb, c = (f"res{block}_branch2{x}" for x in "abc")
            out.append(conv(previous, a, planes, 1, s, 0, bias=False))
            out.append(bn_scale(a, f"{block}_branch2a"))
            out.append(relu(a))
            out.append(conv(a, bb, planes, 3, 1, 1, bias=False))
            out.append(bn_scale(bb, f"{block}_branch2b"))
            out.append(relu(bb))
            out.append(conv(bb, c, 4 * planes, 1, 1, 0, bias=False))
            out.append(bn_scale(c, f"{block}_branch2c"))
            out.append(f'layer {{\n\tbottom: "{shortcut}"\n\tbottom: "{c}"\n\ttop: "res{block}"\n'
                       f'\tname: "res{block}"\n\ttype: "Eltwise"\n}}\n\n')
            out.append(relu(f"res{block}"))
            previous = f"res{block}"
    out.append(layer(previous, "pool5", "pool5", "Pooling",
                     "\tpooling_param {\n\t\tkernel_size: 7\n\t\tstride: 1\n\t\tpool: AVE\n\t}\n"))
    out.append(layer("pool5", "fc1000", "fc1000", "InnerProduct", "\tinner_product_param {\n\t\tnum_output: 1000\n\t}\n"))
    out.append(layer("fc1000", "prob", "prob", "Softmax"))
    return "".join(out).rstrip("\n") + "\n"


def main(argv):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = argv[1] if len(argv) > 1 else os.path.join(root, "prototxt", "resnet50", "ResNet-50-deploy.prototxt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(resnet50())
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv)
