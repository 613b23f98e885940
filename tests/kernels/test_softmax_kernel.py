"""The softmax kernel's sum of exponentials in the DNS fork's order: its OpenBLAS sgemv adds ten
classes four at a time, (((e0 + e1) + e2) + e3) + (((e4 + e5) + e6) + e7) + e8 + e9."""
import ctypes
import ctypes.util

import numpy as np

from npcaffe.kernels.softmax import softmax_forward

# sgemv(CblasTrans, 10, 1, 1, e, ones, 0) of the fork's libopenblas (Debian 0.3.21,
# OPENBLAS_CORETYPE=Haswell) for the 64 rows of exponentials below, as float32 bits.
SUM_BITS = [1070647917, 1073788278, 1069665239, 1067374614, 1076498121, 1074092777, 1066168658, 1066136017,
            1075609103, 1068463706, 1073902424, 1073135618, 1073689701, 1067396331, 1069293198, 1066193007,
            1072842299, 1076476090, 1071524459, 1065841327, 1073891442, 1067833908, 1072123490, 1067948205,
            1065575396, 1069069157, 1080724410, 1075300332, 1073543138, 1067785800, 1073757368, 1065403498,
            1069545490, 1069873473, 1065559947, 1066710060, 1071573534, 1074266525, 1066127935, 1074807776,
            1070097724, 1071257170, 1065497615, 1072073954, 1066388080, 1067197394, 1068053790, 1072899475,
            1067402103, 1072631886, 1077186287, 1066773716, 1065613512, 1071178142, 1074372038, 1068104131,
            1075440661, 1074148371, 1077607569, 1066110185, 1067310739, 1076679710, 1066716945, 1068881805]


def test_sum_over_ten_classes_is_the_forks():
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    expf = libm.expf
    expf.restype, expf.argtypes = ctypes.c_float, [ctypes.c_float]
    x = (np.random.default_rng(2016).standard_normal((64, 10)) * 3).astype(np.float32)
    e = np.array([[expf(float(v - row.max())) for v in row] for row in x], np.float32)
    fork_sum = np.array(SUM_BITS, np.uint32).view(np.float32)
    out = np.empty_like(x)
    softmax_forward(x.reshape(64, 10, 1), out.reshape(64, 10, 1))
    np.testing.assert_array_equal(out, e / fork_sum[:, None])
    index_order = np.array([np.cumsum(row, dtype=np.float32)[-1] for row in e])
    assert np.count_nonzero(index_order != fork_sum) == 15  # what the test would miss without the blocks
