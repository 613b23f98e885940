"""The surgery gate: one rand() draw per C-layer per iteration, and a trace of every draw.

The masks change only when sigma(iter) = (1 + gamma*iter)^-power > r.  With a large gamma
the gate closes more and more often.
"""
import os
import tempfile

import numpy as np

import npcaffe as caffe

caffe.glog.set_quiet(True)  # hide the INFO lines of Caffe's log (warnings still show)
from npcaffe.dnstrace import trace_dns

solver = caffe.get_solver("docs/examples/lenet300100_dns_solver.prototxt")
solver.net.copy_from("../shared/upstream-dns/caffe_lenet300100_original.caffemodel")
for layer in solver.net.layers:
    if hasattr(layer, "gamma"):
        layer.gamma = np.float32(0.05)  # a steep schedule, to see closed gates soon

path = os.path.join(tempfile.gettempdir(), "npcaffe_example_trace.csv")
trace = trace_dns(solver, path)  # the same as `npcaffe train --dns_trace trace.csv`
for _ in range(40):
    solver.step(1)
    u = solver.net.layer_dict["ip1"].last_update
    print(f"iteration {u.iter:2d}  r = {u.r:.4f}  sigma(iter) = {u.p:.4f}  "
          f"{'update' if u.mask_update else 'closed'}  pruned {u.pruned:5d}  spliced {u.spliced:3d}")
trace.close()
print(len(trace.rows), "rows written to", path)
