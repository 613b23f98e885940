"""Splicing: weights pruned at iteration 0 keep learning, and some come back (mask 0 -> 1).

Run from the repository root; about 300 iterations of LeNet-300-100 (a few seconds).
"""
import numpy as np

import npcaffe as caffe

caffe.glog.set_quiet(True)  # hide the INFO lines of Caffe's log (warnings still show)

solver = caffe.get_solver("docs/examples/lenet300100_dns_solver.prototxt")
solver.net.copy_from("../shared/upstream-dns/caffe_lenet300100_original.caffemodel")
weights, mask = solver.net.params["ip1"][0], solver.net.params["ip1"][2]

solver.step(1)
mask_after_prune = mask.data.copy()
solver.step(299)

back = (mask_after_prune == 0) & (mask.data == 1)
gone = (mask_after_prune == 1) & (mask.data == 0)
ip1 = solver.net.layer_dict["ip1"]
T = max(float(ip1.mu) + float(ip1.c_rate) * float(ip1.std), 0.0)
print(f"after 300 iterations: {int(back.sum())} weights of ip1 spliced back, {int(gone.sum())} pruned later")
print(f"splice threshold 1.1 T = {1.1 * T:.5f}; |w| of the spliced weights now:",
      np.round(np.abs(weights.data[back])[:8], 5))
print("test accuracy:", dict(solver.test(0))["accuracy"])
