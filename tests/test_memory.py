"""A net whose blobs cannot fit in memory is an error naming the biggest blobs, raised before they are
allocated (npcaffe.memory)."""
import subprocess
import sys

import pytest

from npcaffe import Net, memory
from npcaffe.errors import NetError
from npcaffe.layer import TEST

NET = """
name: "big"
layer { name: "data" type: "DummyData" top: "data"
  dummy_data_param { shape { dim: BATCH dim: 1 dim: 28 dim: 28 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: NUM_OUTPUT kernel_size: KERNEL } }
"""


def net_file(tmp_path, batch=4, num_output=20, kernel=5):
    path = tmp_path / "net.prototxt"
    path.write_text(NET.replace("BATCH", str(batch)).replace("NUM_OUTPUT", str(num_output))
                    .replace("KERNEL", str(kernel)))
    return str(path)


def test_over_budget_names_the_biggest_blobs(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 50 * 2 ** 20)
    Net(net_file(tmp_path), TEST)  # LeNet's first layer: well inside 50 MiB
    with pytest.raises(NetError, match=r"net\.prototxt: layer 'data': the net's blobs need at least .* more than "
                                       r"the 50\.0 MiB of memory available; the biggest: blob 'data' "
                                       r"\(100000, 1, 28, 28\) 0\.58 GiB; check batch_size"):
        Net(net_file(tmp_path, batch=100000), TEST)


def test_swapped_kernel_size_and_num_output_is_refused_before_allocation(tmp_path):
    """num_output 5, kernel_size 20000 on a 1-channel input: a 1.6e9-value weight (12 GiB with its
    diff) — under a 2 GiB address-space limit it must be refused, not allocated."""
    path = net_file(tmp_path, batch=1, num_output=5, kernel=20000)
    script = ("import resource\n"
              "resource.setrlimit(resource.RLIMIT_AS, (3 * 2 ** 30, resource.RLIM_INFINITY))\n"
              "from npcaffe import Net\nfrom npcaffe.layer import TEST\nfrom npcaffe.errors import NetError\n"
              f"try:\n    Net({path!r}, TEST)\nexcept NetError as e:\n    print('NetError:', e)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "NetError:" in out.stdout and "layer 'conv'" in out.stdout, out.stdout
    assert "the biggest: blob 'conv.weight' (5, 1, 20000, 20000) 14.90 GiB" in out.stdout
