"""One step of dynamic network surgery, looked at blob by blob (run from the repository root).

A C-layer keeps four blobs: params[name][0] weights W, [1] biases b, [2] the weight mask T,
[3] the bias mask.  The net computes with W * T.  The very first TRAIN forward prunes.
"""
import numpy as np

import npcaffe as caffe

caffe.glog.set_quiet(True)  # hide the INFO lines of Caffe's log (warnings still show)

caffe.set_mode_cpu()
solver = caffe.get_solver("docs/examples/lenet300100_dns_solver.prototxt")
solver.net.copy_from("../shared/upstream-dns/caffe_lenet300100_original.caffemodel")

W, b, mask = (solver.net.params["ip1"][i].data for i in range(3))
print("ip1 weights", W.shape, "mask", mask.shape, "kept before:", int(mask.sum()), "of", mask.size)

solver.step(1)  # iteration 0: statistics, one gate draw, the first (drastic) prune, one SGD update

ip1 = solver.net.layer_dict["ip1"]
print("mu =", ip1.mu, " std =", ip1.std, " c_rate =", ip1.c_rate)
T = max(ip1.mu + ip1.c_rate * ip1.std, 0)
print("T =", T, " prune at |w| <= 0.9 T =", 0.9 * T, " splice at |w| > 1.1 T =", 1.1 * T)
print("kept after iteration 0:", int(mask.sum()), "of", mask.size, f"({100 * mask.mean():.1f}%)")
print("what the layer did:", ip1.last_update)

# Every pruned weight had |w| <= 0.9 T when it was pruned (W has had one SGD update since):
print("largest |w| pruned:", float(np.abs(W[mask == 0]).max()))
