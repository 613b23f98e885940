"""Winograd's minimal filtering F(2x2, 3x3) for 3x3 convolutions at stride 1 (Lavin & Gray, CVPR 2016).

A 2x2 block of outputs of a 3x3 correlation needs 36 multiplies directly and 16 in
Winograd's form: with a 4x4 input tile d and the 3x3 filter g,

    Y (2x2) = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

        Bᵀ = [[1, 0, -1,  0],     G = [[1,    0,   0  ],     Aᵀ = [[1, 1,  1,  0],
              [0, 1,  1,  0],          [1/2,  1/2, 1/2],           [0, 1, -1, -1]]
              [0, -1, 1,  0],          [1/2, -1/2, 1/2],
              [0, 1,  0, -1]]          [0,    0,   1  ]]

Over channels the elementwise product becomes 16 matrix products: with
U[ξν] = (G g Gᵀ)[ξν] as an (O, C) matrix per position ξν of the 4x4 tile, and
V[ξν] = (Bᵀ d B)[ξν] as (C, tiles), M[ξν] = U[ξν] V[ξν] (O, tiles), and each
output tile is Aᵀ M A.  That is 16 O C tiles multiply-adds where the im2col GEMM
spends 36: 2.25x fewer; the transforms are additions (and halvings in G).

Rounding: the input transform adds and subtracts four values, the output
transform six; G's halves are exact in binary.  Measured against float64 on
ResNet-like layers (64 and 256 channels, 14x14 and 56x56, unit-scale data), the
largest error relative to the largest output is 2.8e-7 to 7.2e-7, the exact
column path's 4.7e-7 to 5.5e-7 (tests/kernels/test_winograd.py).  It is not
Caffe's sum, so results are not upstream's to the bit: the exact CAFFE path stays
the default and this one is asked for by `convolution_param { engine: WINOGRAD }`
(npcaffe's engine value, see caffe.proto).

Each kernel has a NumPy reference beside it (`*_reference`, float64 inside).
Tiles: the output is cut into ceil(OH / 2) x ceil(OW / 2) tiles; the input tile of
output tile (ty, tx) starts at (2 ty - pad_h, 2 tx - pad_w), zeros outside the image;
outputs past OH / OW of the last tiles are computed and dropped.
"""
import numpy as np
from numba import njit

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)


def tiles(out_h, out_w):
    """(tiles down, tiles across) for an output of out_h x out_w."""
    return (out_h + 1) // 2, (out_w + 1) // 2


def filter_transform(weight, out=None):
    """U (16, O, C) = G g Gᵀ of every 3x3 filter g of weight (O, C, 3, 3), computed in float64, stored float32."""
    outputs, channels = weight.shape[:2]
    g = weight.reshape(outputs * channels, 3, 3).astype(np.float64)
    u = np.matmul(np.matmul(G, g), G.T)                      # (O C, 4, 4)
    u = u.reshape(outputs, channels, 16).transpose(2, 0, 1)  # (16, O, C)
    if out is None:
        return np.ascontiguousarray(u, dtype=np.float32)
    out[...] = u
    return out


@njit(cache=True)
def input_transform(x, pad_h, pad_w, tiles_h, tiles_w, v):
    """V (16, C, N tiles_h tiles_w) = Bᵀ d B of every 4x4 input tile d of x (N, C, H, W)."""
    num, channels, height, width = x.shape
    per_image = tiles_h * tiles_w
    d = np.zeros((4, 4), np.float32)
    t = np.zeros((4, 4), np.float32)
    for n in range(num):
        for c in range(channels):
            for ty in range(tiles_h):
                y0 = 2 * ty - pad_h
                for tx in range(tiles_w):
                    x0 = 2 * tx - pad_w
                    for i in range(4):
                        iy = y0 + i
                        for j in range(4):
                            ix = x0 + j
                            if 0 <= iy < height and 0 <= ix < width:
                                d[i, j] = x[n, c, iy, ix]
                            else:
                                d[i, j] = 0
                    # t = Bᵀ d (rows), then t Bᵀᵀ = t B (columns)
                    for j in range(4):
                        t[0, j] = d[0, j] - d[2, j]
                        t[1, j] = d[1, j] + d[2, j]
                        t[2, j] = d[2, j] - d[1, j]
                        t[3, j] = d[1, j] - d[3, j]
                    p = n * per_image + ty * tiles_w + tx
                    for i in range(4):
                        v[4 * i + 0, c, p] = t[i, 0] - t[i, 2]
                        v[4 * i + 1, c, p] = t[i, 1] + t[i, 2]
                        v[4 * i + 2, c, p] = t[i, 2] - t[i, 1]
                        v[4 * i + 3, c, p] = t[i, 1] - t[i, 3]


@njit(cache=True)
def output_transform(m, bias, has_bias, tiles_h, tiles_w, top):
    """top (N, O, OH, OW) = Aᵀ M A of every tile of M (16, O, N tiles_h tiles_w) (+ bias (O,))."""
    num, outputs, out_h, out_w = top.shape
    per_image = tiles_h * tiles_w
    s = np.zeros((2, 4), np.float32)
    for n in range(num):
        for o in range(outputs):
            b = bias[o] if has_bias else np.float32(0)
            for ty in range(tiles_h):
                for tx in range(tiles_w):
                    p = n * per_image + ty * tiles_w + tx
                    # s = Aᵀ M (rows), then s A (columns)
                    for j in range(4):
                        s[0, j] = m[j, o, p] + m[4 + j, o, p] + m[8 + j, o, p]
                        s[1, j] = m[4 + j, o, p] - m[8 + j, o, p] - m[12 + j, o, p]
                    y = 2 * ty
                    xx = 2 * tx
                    for i in range(2):
                        if y + i < out_h:
                            top[n, o, y + i, xx] = s[i, 0] + s[i, 1] + s[i, 2] + b
                            if xx + 1 < out_w:
                                top[n, o, y + i, xx + 1] = s[i, 1] - s[i, 2] - s[i, 3] + b


def convolution(x, u, bias, pad_h, pad_w, top, work):
    """top (N, O, OH, OW) = the 3x3 stride-1 correlation of x (N, C, H, W) with the filters whose
    transform is u (16, O, C) (+ bias), through Winograd F(2x2, 3x3).  work(key, shape) gives float32
    work arrays (conv_paths.Scratch.get)."""
    num, channels = x.shape[0], x.shape[1]
    outputs, out_h, out_w = top.shape[1], top.shape[2], top.shape[3]
    tiles_h, tiles_w = tiles(out_h, out_w)
    count = num * tiles_h * tiles_w
    v = work("winograd_v", (16, channels, count))
    input_transform(x, pad_h, pad_w, tiles_h, tiles_w, v)
    m = work("winograd_m", (16, outputs, count))
    np.matmul(u, v, out=m)  # 16 GEMMs (O, C) . (C, tiles)
    output_transform(m, np.zeros(0, np.float32) if bias is None else bias, bias is not None, tiles_h, tiles_w, top)


# -- references ----------------------------------------------------------------------------------
def convolution_reference(x, weight, bias, pad_h, pad_w):
    """The same through the transforms written as matrix products, float64 (any O, C, N)."""
    num, channels, height, width = x.shape
    outputs = weight.shape[0]
    out_h, out_w = height + 2 * pad_h - 2, width + 2 * pad_w - 2
    tiles_h, tiles_w = tiles(out_h, out_w)
    padded = np.zeros((num, channels, 2 * tiles_h + 2, 2 * tiles_w + 2))
    padded[:, :, pad_h:pad_h + height, pad_w:pad_w + width] = x  # 2 tiles + 2 >= H + 2 pad: it fits
    u = np.einsum("ai,ocij,bj->ocab", G, weight.astype(np.float64), G)
    out = np.zeros((num, outputs, 2 * tiles_h, 2 * tiles_w))
    for ty in range(tiles_h):
        for tx in range(tiles_w):
            d = padded[:, :, 2 * ty:2 * ty + 4, 2 * tx:2 * tx + 4]
            v = np.einsum("ai,ncij,bj->ncab", B_T, d, B_T)
            m = np.einsum("ocab,ncab->noab", u, v)
            out[:, :, 2 * ty:2 * ty + 2, 2 * tx:2 * tx + 2] = np.einsum("ia,noab,jb->noij", A_T, m, A_T)
    out = out[:, :, :out_h, :out_w]
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out
