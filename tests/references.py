"""The loop references the layers are checked against (conventions 6): each quantity written out
entry by entry in float64, as the paper states it, with no array trick that a layer uses.

The plain layers (alexnet_np/nn/layers.py) are compared with these in tests/test_layers.py;
the fast forms (alexnet_np/nn/fast.py) with the plain ones in tests/test_fast.py.
"""
import itertools
import math

import numpy as np


def conv_reference(x, W, b, stride, pad):
    """Direct convolution by loops. x (C, N, H, W) -> (F, N, OH, OW)."""
    C, N, H, Wd = x.shape
    F, _, KH, KW = W.shape
    xp = np.zeros((C, N, H + 2 * pad, Wd + 2 * pad))
    xp[:, :, pad:pad + H, pad:pad + Wd] = x
    OH, OW = (H + 2 * pad - KH) // stride + 1, (Wd + 2 * pad - KW) // stride + 1
    y = np.zeros((F, N, OH, OW))
    for f, n, oh, ow in itertools.product(range(F), range(N), range(OH), range(OW)):
        total = b[f]
        for c, i, j in itertools.product(range(C), range(KH), range(KW)):
            total += W[f, c, i, j] * xp[c, n, oh * stride + i, ow * stride + j]
        y[f, n, oh, ow] = total
    return y


def lrn_reference(a, n, k, coef, beta):
    """§3.3 written out: b[i] = a[i] / (k + coef * sum_{j=max(0,i-n/2)}^{min(C-1,i+n/2)} a[j]^2)^beta."""
    C = a.shape[0]
    b = np.zeros_like(a)
    for i in range(C):
        for pos in np.ndindex(a.shape[1:]):
            s = sum(a[(j,) + pos] ** 2 for j in range(max(0, i - n // 2), min(C - 1, i + n // 2) + 1))
            b[(i,) + pos] = a[(i,) + pos] / (k + coef * s) ** beta
    return b


def maxpool_reference(x, size, stride):
    C, N, H, W = x.shape
    OH, OW = (H - size) // stride + 1, (W - size) // stride + 1
    y = np.zeros((C, N, OH, OW))
    for c, n, oh, ow in itertools.product(range(C), range(N), range(OH), range(OW)):
        y[c, n, oh, ow] = max(x[c, n, oh * stride + i, ow * stride + j]
                              for i in range(size) for j in range(size))
    return y


def cross_entropy_reference(z, labels):
    total = 0.0
    for n in range(z.shape[0]):
        m = max(z[n])
        log_sum = m + math.log(sum(math.exp(v - m) for v in z[n]))
        total += log_sum - z[n, labels[n]]
    return total / z.shape[0]


def im2col_reference(x, KH, KW, stride, OH, OW):
    """col[c, i, j, n, oh, ow] = x[c, n, i + s*oh, j + s*ow], by loops over every entry."""
    C, N = x.shape[:2]
    col = np.zeros((C, KH, KW, N, OH, OW))
    for c, i, j, n, oh, ow in itertools.product(*map(range, col.shape)):
        col[c, i, j, n, oh, ow] = x[c, n, i + stride * oh, j + stride * ow]
    return col


def col2im_reference(dcol, stride, H, W):
    """dx[c, n, i + s*oh, j + s*ow] += dcol[c, i, j, n, oh, ow], by loops over every entry."""
    C, _, _, N = dcol.shape[:4]
    dx = np.zeros((C, N, H, W))
    for c, i, j, n, oh, ow in itertools.product(*map(range, dcol.shape)):
        dx[c, n, i + stride * oh, j + stride * ow] += dcol[c, i, j, n, oh, ow]
    return dx
