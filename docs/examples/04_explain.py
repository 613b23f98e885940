"""Algorithm 1 with the numbers plugged in, for one layer at one iteration (as `npcaffe explain`)."""
from npcaffe.explain import explain_run, format_explanation

step = explain_run("docs/examples/lenet300100_dns_solver.prototxt", "ip3", 20,
                   weights="../shared/upstream-dns/caffe_lenet300100_original.caffemodel")
print(format_explanation(step))
