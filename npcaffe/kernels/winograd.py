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
    if out is None:
        out = np.empty((16, outputs, channels), np.float32)
    _filter_transform(weight, G, out)
    return out


@njit(cache=True, nogil=True)
def _filter_transform(weight, g_matrix, u):
    """u[4 a + b, o, c] = (G g Gᵀ)[a, b] for g = weight[o, c], in float64: first G g, then (G g) Gᵀ, each
    entry a sum over k = 0, 1, 2 in order (NumPy's batched matmul of 3 x 3 blocks took 63 ms for 512 x 512
    filters; this takes a few)."""
    outputs, channels = weight.shape[0], weight.shape[1]
    left = np.empty((4, 3), np.float64)
    for o in range(outputs):
        for c in range(channels):
            for a in range(4):
                for col in range(3):
                    left[a, col] = (g_matrix[a, 0] * np.float64(weight[o, c, 0, col])
                                    + g_matrix[a, 1] * np.float64(weight[o, c, 1, col])
                                    + g_matrix[a, 2] * np.float64(weight[o, c, 2, col]))
            for a in range(4):
                for b in range(4):
                    u[4 * a + b, o, c] = np.float32(left[a, 0] * g_matrix[b, 0] + left[a, 1] * g_matrix[b, 1]
                                                    + left[a, 2] * g_matrix[b, 2])


@njit(cache=True, nogil=True)
def input_transform(x, pad_h, pad_w, tiles_h, tiles_w, v):
    """V (16, C, N tiles_h tiles_w) = Bᵀ d B of every 4x4 input tile d of x (N, C, H, W).

    Each channel is copied into a zero-padded plane; then for each row of tiles Bᵀ d is taken over
    whole rows of the plane at once (t_i = two rows added or subtracted, for every column), and
    t B per tile from t's columns 2 tx .. 2 tx + 3.  The operations and their order are those of
    the per-tile form (first t = Bᵀ d, then t B), so the bits are too; the loops run over whole
    rows and need no bounds tests."""
    num, channels, height, width = x.shape
    per_image = tiles_h * tiles_w
    rows, cols = 2 * tiles_h + 2, 2 * tiles_w + 2
    plane = np.zeros((rows, cols), np.float32)  # the padding stays 0: only the image's place is written
    # the image's rows and columns inside the plane (an image larger than the tiles' reach is cut)
    y_lo, y_hi = max(0, -pad_h), min(height, rows - pad_h)
    x_lo, x_hi = max(0, -pad_w), min(width, cols - pad_w)
    t = np.empty((4, cols), np.float32)
    for n in range(num):
        for c in range(channels):
            image = x[n, c]
            for iy in range(y_lo, y_hi):
                plane[iy + pad_h, x_lo + pad_w:x_hi + pad_w] = image[iy, x_lo:x_hi]
            for ty in range(tiles_h):
                r0, r1, r2, r3 = plane[2 * ty], plane[2 * ty + 1], plane[2 * ty + 2], plane[2 * ty + 3]
                t0, t1, t2, t3 = t[0], t[1], t[2], t[3]
                for j in range(cols):
                    t0[j] = r0[j] - r2[j]
                    t1[j] = r1[j] + r2[j]
                    t2[j] = r2[j] - r1[j]
                    t3[j] = r1[j] - r3[j]
                first = n * per_image + ty * tiles_w
                for i in range(4):
                    ti = t[i]
                    v0 = v[4 * i + 0, c, first:first + tiles_w]
                    v1 = v[4 * i + 1, c, first:first + tiles_w]
                    v2 = v[4 * i + 2, c, first:first + tiles_w]
                    v3 = v[4 * i + 3, c, first:first + tiles_w]
                    for tx in range(tiles_w):
                        a, b, e, f = ti[2 * tx], ti[2 * tx + 1], ti[2 * tx + 2], ti[2 * tx + 3]
                        v0[tx] = a - e
                        v1[tx] = b + e
                        v2[tx] = e - b
                        v3[tx] = b - f


@njit(cache=True, nogil=True)
def output_transform(m, bias, has_bias, tiles_h, tiles_w, top):
    """top (N, O, OH, OW) = Aᵀ M A of every tile of M (16, O, N tiles_h tiles_w) (+ bias (O,)).

    A row of tiles at a time: s = Aᵀ M for all its tiles (contiguous in M), then the two output rows;
    the same operations in the same order as per tile, so the same bits."""
    num, outputs, out_h, out_w = top.shape
    per_image = tiles_h * tiles_w
    s = np.empty((2, 4, tiles_w), np.float32)
    full_w = out_w // 2  # tiles whose two output columns both exist
    for n in range(num):
        for o in range(outputs):
            b = bias[o] if has_bias else np.float32(0)
            for ty in range(tiles_h):
                first = n * per_image + ty * tiles_w
                for j in range(4):
                    m0 = m[j, o, first:first + tiles_w]
                    m1 = m[4 + j, o, first:first + tiles_w]
                    m2 = m[8 + j, o, first:first + tiles_w]
                    m3 = m[12 + j, o, first:first + tiles_w]
                    s0, s1 = s[0, j], s[1, j]
                    for tx in range(tiles_w):
                        s0[tx] = m0[tx] + m1[tx] + m2[tx]
                        s1[tx] = m1[tx] - m2[tx] - m3[tx]
                for i in range(2):
                    y = 2 * ty + i
                    if y >= out_h:
                        break
                    row = top[n, o, y]
                    a, c1, c2, c3 = s[i, 0], s[i, 1], s[i, 2], s[i, 3]
                    for tx in range(full_w):
                        row[2 * tx] = a[tx] + c1[tx] + c2[tx] + b
                        row[2 * tx + 1] = c1[tx] - c2[tx] - c3[tx] + b
                    if full_w < tiles_w:  # an odd width: the last tile's first column only
                        row[2 * full_w] = a[full_w] + c1[full_w] + c2[full_w] + b


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
