"""3 x 3 convolution at stride 1 by Winograd's minimal filtering F(2x2, 3x3), and its gradients.

Dimensions: C input channels, F filters, n images, H x W input, OH x OW output, TH x TW tiles.

Lavin and Gray (2016, "Fast Algorithms for Convolutional Neural Networks") compute each
2 x 2 tile of the output from the 4 x 4 tile of the (padded) input that covers it:

    Y = A^T [ (G g G^T) * (B^T d B) ] A                  (* elementwise)

        B^T = [1  0 -1  0]     G = [ 1    0    0 ]     A^T = [1  1  1  0]
              [0  1  1  0]         [1/2  1/2  1/2]           [0  1 -1 -1]
              [0 -1  1  0]         [1/2 -1/2  1/2]
              [0  1  0 -1]         [ 0    0    1 ]

d is an input tile (4 x 4, tile (ty, tx) starts at row 2 ty, column 2 tx), g a kernel
(3 x 3), Y the output tile (2 x 2). Summed over the input channels, the elementwise
product becomes 16 matrix products, one per position (a, b) of the 4 x 4 transformed tile:

    M[a, b] = U[a, b] (F, C) @ V[a, b] (C, TH*TW*n),   U = G g G^T,  V = B^T d B,

16 multiply-adds per output tile and channel pair where im2col's GEMM does 4 * 9 = 36:
2.25x fewer (1.94x on conv3-conv5's 13 x 13 maps, whose 7 x 7 tiles cover 14 x 14).

The gradients are the adjoints of these linear steps. The weights':
    dM[a, b] = (A dY A^T)[a, b]       dU[a, b] = dM[a, b] @ V[a, b]^T       dg = G^T dU G,
the same 16 products with the other operands (``filter_grad``). The input's is itself a
convolution of dY with the kernels turned (``layers.Conv2D``), done by ``conv3x3`` too.

The transforms are sums of strided views, separable: rows first, then columns. Inside,
arrays are laid out tile-major with the batch last, (..., TH, TW, n), and the padded input's
columns are split by parity, so that every view the transforms read has long contiguous
runs (tiles of the (C, n, H, W) layout have runs of TW entries 2 apart; docs/speed.md). The entries of B and A are 0 and +-1 and those of G are 0, +-1/2 and 1, all exact
in binary: in float64 the result agrees with the direct convolution to rounding.

On the CPU this is the faster way (``backend.Device.winograd``, ``fast.FastConv2D``; the
figures in docs/speed.md); a GPU keeps im2col: one GEMM in a few array operations, where this takes about 30.
"""

import math

from .memory import blocks

# Each transform as a table of terms: row k of B^T is the sum of sign * d[index] over
# (sign, index) in B_T[k]; the same for A^T, and for A = (A^T)^T, which the adjoint uses.
B_T = (((1, 0), (-1, 2)), ((1, 1), (1, 2)), ((-1, 1), (1, 2)), ((1, 1), (-1, 3)))
A_T = (((1, 0), (1, 1), (1, 2)), ((1, 1), (-1, 2), (-1, 3)))
A = (((1, 0),), ((1, 0), (1, 1)), ((1, 0), (-1, 1)), ((-1, 1),))
G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def tiles(OH, OW):
    """(TH, TW): the 2 x 2 output tiles that cover an OH x OW output (the last may hang over)."""
    return -(-OH // 2), -(-OW // 2)


def combine(xp, terms, view, out):
    """out = sum of sign * view(index) over ``terms`` [(sign, index)], signs +-1; returned."""
    (sign, index), rest = terms[0], terms[1:]
    if rest and rest[0][0] != sign:              # a - b, or -a + b
        first, second = (index, rest[0][1]) if sign > 0 else (rest[0][1], index)
        xp.subtract(view(first), view(second), out=out)
        rest = rest[1:]
    elif rest:                                   # a + b, or -a - b
        xp.add(view(index), view(rest[0][1]), out=out)
        if sign < 0:
            xp.negative(out, out=out)
        rest = rest[1:]
    elif sign > 0:
        out[...] = view(index)
    else:
        xp.negative(view(index), out=out)
    for sign, index in rest:
        (xp.add if sign > 0 else xp.subtract)(out, view(index), out=out)
    return out


# --------------------------------------------------------------------------- the kernels

def _kron_G(xp, dtype):
    """G (x) G as (16, 9): [4a + b, 3i + j] = G[a, i] G[b, j], so that U = G g G^T is one
    product for all the kernels at once: vec(U) = (G (x) G) vec(g)."""
    g = xp.asarray(G, dtype=dtype)                                            # (4, 3)
    return (g[:, None, :, None] * g[None, :, None, :]).reshape(16, 9)


def transform_filters(xp, W, out):
    """U = G g G^T for every kernel g.  W (F, C, 3, 3) -> out (4, 4, F, C), returned."""
    F, C = W.shape[:2]
    xp.matmul(_kron_G(xp, W.dtype), W.reshape(F * C, 9).T, out=out.reshape(16, F * C))
    return out


def turned_filters(U, out):
    """The transforms of the turned kernels, W[f, c, 2 - i, 2 - j] as (C, F, 3, 3) (the input
    gradient's convolution, ``layers.Conv2D``), from those of the kernels: reversing a
    kernel's rows reverses G's columns, which is G with its first and last rows swapped
    (G R = P G), so U'[a, b, c, f] = U[p(a), p(b), f, c] with p = (3, 1, 2, 0).
    U (4, 4, F, C) -> out (4, 4, C, F), returned."""
    order = [3, 1, 2, 0]
    out[...] = U[order][:, order].transpose(0, 1, 3, 2)
    return out


def filters_adjoint(xp, dU, out):
    """dg = G^T dU G for every kernel: the gradient of the kernels from that of U.
    dU (4, 4, F, C) -> out (F, C, 3, 3), written and returned."""
    F, C = dU.shape[2:]
    xp.matmul(dU.reshape(16, F * C).T, _kron_G(xp, dU.dtype), out=out.reshape(F * C, 9))
    return out


# --------------------------------------------------------------------------- the tiles

def pad_to_tiles(x, pad, TH, TW, out):
    """x zero-padded by ``pad`` and by whatever the last tiles hang over, batch last, the
    columns split by parity.  x (C, n, H, W) -> out (C, 2TH + 2, 2, TW + 1, n), returned:
    out[c, h, q, t, m] = x_pad[c, m, h, 2t + q]."""
    C, n, H, W = x.shape
    out.fill(0)
    for q in (0, 1):
        first = (q - pad) % 2                      # the first column of x landing on parity q
        start, count = (pad + first) // 2, len(range(first, W, 2))
        out[:, pad:pad + H, q, start:start + count] = x[:, :, :, first::2].transpose(0, 2, 3, 1)
    return out


def transform_input(xp, x_tiles, rows, out):
    """V = B^T d B for every 4 x 4 tile d.

    x_tiles (C, 2TH + 2, 2, TW + 1, n): ``pad_to_tiles``' layout.
    rows    (4, C, TH, 2, TW + 1, n): working memory, B^T applied down the columns.
    out     (4, 4, C, TH, TW, n), returned: out[a, b] = (B^T d B)[a, b] of every tile.
    Eight array operations: four for the rows of B^T, four for its columns (all a at once).
    """
    TH, TW = out.shape[3:5]

    def row(i):        # row 2 ty + i of every tile row ty: (C, TH, 2, TW + 1, n)
        return x_tiles[:, i:i + 2 * TH:2]

    def column(j):     # column 2 tx + j of every tile, all four rows a: (4, C, TH, TW, n)
        return rows[:, :, :, j % 2, j // 2:j // 2 + TW]

    for a, terms in enumerate(B_T):
        combine(xp, terms, row, rows[a])
    for b, terms in enumerate(B_T):
        combine(xp, terms, column, out[:, b])
    return out


def transform_output(xp, M, half, image):
    """Y = A^T m A for every transformed tile m.

    M     (4, 4, F, TH, TW, n): the 16 products.
    half  (2, 4, F, TH, TW, n): working memory, A^T applied along the first axis.
    image (F, TH, 2, TW, 2, n), returned: image[f, ty, i, tx, j, m] = Y[i, j] of tile
          (ty, tx) of image m, that is the output at row 2 ty + i, column 2 tx + j.
    Four array operations a stage.
    """
    for i, terms in enumerate(A_T):
        combine(xp, terms, lambda a: M[a], half[i])
    for j, terms in enumerate(A_T):
        combine(xp, terms, lambda b: half[:, b], image[:, :, :, :, j].transpose(2, 0, 1, 3, 4))
    return image


def output_adjoint(xp, image, half, out):
    """dM = A dY A^T for every 2 x 2 output tile dY: the adjoint of ``transform_output``.

    image (F, TH, 2, TW, 2, n): dY, laid out as ``transform_output`` writes Y.
    half  (2, 4, F, TH, TW, n): working memory.
    out   (4, 4, F, TH, TW, n), returned.
    """
    for b, terms in enumerate(A):
        combine(xp, terms, lambda j: image[:, :, :, :, j].transpose(2, 0, 1, 3, 4), half[:, b])
    for a, terms in enumerate(A):
        combine(xp, terms, lambda i: half[i], out[a])
    return out


def to_image(Y, OH, OW, y):
    """The output tiles as the layer's output: image (F, TH, 2, TW, 2, n) -> y (F, n, OH, OW)."""
    F, TH, _, TW, _, n = Y.shape
    y[...] = Y.reshape(F, 2 * TH, 2 * TW, n)[:, :OH, :OW].transpose(0, 3, 1, 2)
    return y


def from_image(dy, TH, TW, out):
    """dy (F, n, OH, OW) -> out (F, TH, 2, TW, 2, n), zero where the last tiles hang over."""
    F, n, OH, OW = dy.shape
    out.fill(0)
    out.reshape(F, 2 * TH, 2 * TW, n)[:, :OH, :OW] = dy.transpose(0, 2, 3, 1)
    return out


# --------------------------------------------------------------------------- the layer's uses
#
# The transforms read and write each entry a few times: a block of channels at a time, whose
# temporaries stay in the cache (``block``: at most that many entries; None, all at once),
# they take less time on the CPU (``backend.Device.block_elements``, ``memory.blocks``; docs/speed.md).

def _input_tiles(xp, x, pad, TH, TW, block, work):
    """V (4, 4, C, TH, TW, n) of x (C, n, H, W), padded by ``pad``, in ``work``."""
    C, n = x.shape[:2]
    V = work((4, 4, C, TH, TW, n), x.dtype)
    tiles_shape, rows_shape = (2 * TH + 2, 2, TW + 1, n), (TH, 2, TW + 1, n)
    ranges = blocks(C, math.prod(tiles_shape) + 4 * math.prod(rows_shape), block)
    size = ranges[0][1] - ranges[0][0]
    x_tiles = work((size,) + tiles_shape, x.dtype)                            # (c, 2TH+2, 2, TW+1, n)
    rows = work((4, size) + rows_shape, x.dtype)                              # (4, c, TH, 2, TW+1, n)
    for c0, c1 in ranges:
        k = c1 - c0
        transform_input(xp, pad_to_tiles(x[c0:c1], pad, TH, TW, x_tiles[:k]), rows[:, :k], V[:, :, c0:c1])
    return V


def _filter_blocks(F, TH, TW, n, dtype, block, work):
    """[(f0, f1, half), ...]: the filters a block at a time, each with the working memory of
    ``transform_output`` / ``output_adjoint`` for it, half (2, 4, f1 - f0, TH, TW, n)."""
    ranges = blocks(F, 8 * TH * TW * n, block)
    half = work((2, 4, ranges[0][1] - ranges[0][0], TH, TW, n), dtype)
    return [(f0, f1, half[:, :, :f1 - f0]) for f0, f1 in ranges]


def conv3x3(xp, x, U, pad, y, work, block=None):
    """y = the convolution of x with the kernels whose transforms are U, at stride 1,
    zero-padded by ``pad`` (no bias).

    x (C, n, H, W), U (4, 4, F, C) (``transform_filters``) -> y (F, n, OH, OW), written and
    returned; OH = H + 2 pad - 2. ``work(shape, dtype)``: temporaries in the caller's open
    workspace; ``block``: see above.
    """
    F, C = U.shape[2:]
    n, OH, OW = y.shape[1:]
    TH, TW = tiles(OH, OW)
    V = _input_tiles(xp, x, pad, TH, TW, block, work)                         # (4, 4, C, TH, TW, n)
    M = work((4, 4, F, TH, TW, n), x.dtype)                                   # (4, 4, F, TH, TW, n)
    xp.matmul(U.reshape(16, F, C), V.reshape(16, C, -1), out=M.reshape(16, F, -1))
    Y = work((F, TH, 2, TW, 2, n), x.dtype)                                   # the output tiles
    for f0, f1, half in _filter_blocks(F, TH, TW, n, x.dtype, block, work):
        transform_output(xp, M[:, :, f0:f1], half, Y[f0:f1])
    return to_image(Y, OH, OW, y)


def filter_grad(xp, x, dy, pad, out, work, block=None):
    """dU = dM @ V^T: the gradient of the loss with respect to U (``transform_filters``), for
    y = conv3x3(x, U, pad) and the gradient dy of y.

    x (C, n, H, W), dy (F, n, OH, OW) -> out (4, 4, F, C), written and returned;
    ``filters_adjoint`` turns it into the kernels' gradient.
    """
    F, n, OH, OW = dy.shape
    C = x.shape[0]
    TH, TW = tiles(OH, OW)
    V = _input_tiles(xp, x, pad, TH, TW, block, work)                         # (4, 4, C, TH, TW, n)
    dY = from_image(dy, TH, TW, work((F, TH, 2, TW, 2, n), dy.dtype))        # (F, TH, 2, TW, 2, n)
    dM = work((4, 4, F, TH, TW, n), dy.dtype)                                 # (4, 4, F, TH, TW, n)
    for f0, f1, half in _filter_blocks(F, TH, TW, n, dy.dtype, block, work):
        output_adjoint(xp, dY[f0:f1], half, dM[:, :, f0:f1])
    xp.matmul(dM.reshape(16, F, -1), V.reshape(16, C, -1).transpose(0, 2, 1), out=out.reshape(16, F, C))
    return out
