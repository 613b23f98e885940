import gzip
import os

from helpers import shared_path
from npcaffe import cli


def report(capsys, *argv):
    assert cli.main(["prune-report", *argv]) == 0
    return capsys.readouterr().out


def test_upstream_sparse_lenet5(capsys):
    out = report(capsys, "--model", shared_path("upstream-dns", "lenet5.prototxt"),
                 "--weights", shared_path("upstream-dns", "caffe_lenet5_sparse.caffemodel"))
    assert "3993 of 431080 parameters kept (4.0K of 431K)" in out and "~108x" in out
    kept = {line.split()[0]: int(line.split()[3]) for line in out.splitlines()[1:5]}
    assert kept == {"conv1": 74, "conv2": 779, "ip1": 2923, "ip2": 217}


def test_upstream_sparse_lenet300100(capsys):
    out = report(capsys, "--model", shared_path("upstream-dns", "lenet300100.prototxt"),
                 "--weights", shared_path("upstream-dns", "caffe_lenet300100_sparse.caffemodel"))
    assert "4988 of 266610 parameters kept" in out and "53.45x" in out


def test_masked_snapshot_counts_mask_times_weight(capsys, tmp_path):
    # Upstream's own 4-blob DNS snapshot at iteration 50; its mask counts are in masks_nnz.csv.
    snap = tmp_path / "it50.caffemodel"
    with gzip.open(shared_path("crosscheck", "lenet5-dns", "upstream", "snap", "lenet5_dns_iter_50.caffemodel.gz")) as f:
        snap.write_bytes(f.read())
    out = report(capsys, "--model", shared_path("upstream-dns", "lenet5.prototxt"), "--weights", str(snap))
    expected = {}
    with open(shared_path("crosscheck", "lenet5-dns", "upstream", "masks_nnz.csv")) as f:
        for row in f.read().splitlines()[1:]:
            it, layer, w, b, count = row.split(",")
            if it == "50":
                expected[layer] = (int(count), int(w) + int(b))
    got = {line.split()[0]: (int(line.split()[2]), int(line.split()[3])) for line in out.splitlines()[1:5]}
    assert got == expected


def test_alexnet_dns_fresh_weights_paper_sizes(capsys):
    model = os.path.join(os.path.dirname(__file__), "..", "..", "prototxt", "alexnet", "alexnet_dns_train_val.prototxt")
    out = report(capsys, "--model", model, "--data-shape", "data=1,3,227,227", "--data-shape", "label=1")
    sizes = {line.split()[0]: line.split("(")[-1].split(" ->")[0] for line in out.splitlines()[1:9]}
    assert sizes == {"conv1": "35K", "conv2": "307K", "conv3": "885K", "conv4": "664K", "conv5": "443K",
                     "fc6": "38M", "fc7": "17M", "fc8": "4M"}
    assert "of 60965224 parameters kept" in out and "of 61M)" in out


def test_multiply_adds_of_lenet5_dense_and_pruned():
    import npcaffe
    from npcaffe.pruning.report import count_macs, format_macs
    net = npcaffe.Net(shared_path("upstream-dns", "lenet5.prototxt"), npcaffe.TEST)
    dense = {r.name: r.dense for r in count_macs(net)}
    # weights x output positions per image: 20x1x5x5 x 24x24, 50x20x5x5 x 8x8, 500x800, 10x500
    assert dense == {"conv1": 500 * 576, "conv2": 25000 * 64, "ip1": 400000, "ip2": 5000}
    net.copy_from(shared_path("upstream-dns", "caffe_lenet5_sparse.caffemodel"))
    rows = count_macs(net)
    kept = {r.name: r.kept for r in rows}
    nonzero = {name: int((net.params[name][0].data != 0).sum()) for name in kept}
    assert kept == {"conv1": nonzero["conv1"] * 576, "conv2": nonzero["conv2"] * 64, "ip1": nonzero["ip1"],
                    "ip2": nonzero["ip2"]}
    assert format_macs(rows).startswith(f"multiply-adds per sample (Convolution / InnerProduct weights): "
                                        f"{sum(kept.values())} of 2293000 kept")


def test_every_parameter_zero_is_said_in_words():
    from npcaffe.pruning.report import LayerCount, format_report
    text = format_report([LayerCount("ip1", "InnerProduct", 60, 0), LayerCount("ip2", "InnerProduct", 12, 3)])
    assert "inf" not in text
    assert "0.00%  none kept   (60 -> 0)" in text and "3 of 72 parameters kept (3 of 72), compression 24.00x" in text
    text = format_report([LayerCount("ip1", "InnerProduct", 60, 0)])
    assert text.endswith("0 of 60 parameters kept (0 of 60), every parameter is zero") and "inf" not in text


def test_multiply_adds_per_layer_dense_kept_and_slim(capsys):
    out = report(capsys, "--model", shared_path("upstream-dns", "lenet5.prototxt"),
                 "--weights", shared_path("upstream-dns", "caffe_lenet5_sparse.caffemodel"), "--slim")
    table = out.split("\n\n")[1].splitlines()
    rows = {line.split()[0]: [int(line.split()[i]) for i in (1, 2, 4)] for line in table[1:]}
    # the DNS release's LeNet-5 slims to 8, 19 and 57 channels: conv1 8x1x5x5 on 24x24, conv2 19x8x5x5 on 8x8,
    # ip1 57 x 19x4x4, ip2 10x57
    assert rows["conv1"] == [288000, 41472, 8 * 25 * 576] and rows["conv2"] == [1600000, 49280, 19 * 8 * 25 * 64]
    assert rows["ip1"][2] == 57 * 19 * 16 and rows["ip2"][2] == 570
    assert rows["total"] == [2293000, 93887, 376298]
