"""Every layer: forward against a loop-based float64 reference, backward against centred
finite differences with a random upstream gradient (conventions 6-8)."""
import itertools
import math

import numpy as np
import pytest

from alexnet_np.nn.backend import GPU, Device
from alexnet_np.nn.layers import (Conv2D, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool, ReLU,
                               SoftmaxCrossEntropy, col2im, im2col)
from gradcheck import assert_close, numerical_gradient

CPU = Device()


def rng(seed=0):
    return np.random.default_rng(seed)


def check_layer_gradients(layer, x, seed=1, train=False, **forward_kw):
    """Compare dx and every parameter gradient with finite differences."""
    dout = rng(seed).standard_normal(layer.forward(x, train, **forward_kw).shape)

    def loss():
        return float(np.sum(layer.forward(x, train, **forward_kw) * dout))

    layer.forward(x, train, **forward_kw)
    for g in layer.grads.values():
        g[...] = np.nan   # backward writes the gradients: what was there must not matter
    dx = layer.backward(dout)
    if dx is not None:
        dx = dx.copy()   # it may live in an output buffer that the forwards below reuse
        assert_close(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8, what="dx", scale_atol=True)
    for name, p in layer.params.items():
        assert_close(layer.grads[name], numerical_gradient(loss, p), rtol=1e-6, atol=1e-8, what=name,
                     scale_atol=True)
    return dx


# --------------------------------------------------------------------------- references

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


# --------------------------------------------------------------------------- convolution

CONV_CASES = [
    # (C, N, H, W, F, KH, KW, stride, pad)
    (3, 2, 19, 23, 4, 11, 11, 4, 0),   # conv1-like: 11x11 at stride 4, non-square input
    (3, 2, 7, 8, 5, 3, 2, 2, 1),       # strided and padded, non-square kernel and input
    (4, 1, 5, 7, 3, 5, 5, 1, 2),       # conv2-like: 5x5, pad 2, odd sizes
    (6, 2, 3, 3, 2, 3, 3, 1, 1),       # conv3-like: 3x3, pad 1
]


@pytest.mark.parametrize("C,N,H,W,F,KH,KW,stride,pad", CONV_CASES)
def test_conv_forward_matches_loops(C, N, H, W, F, KH, KW, stride, pad):
    # by im2col; the 3 x 3 case by Winograd on the CPU as well: tests/test_winograd.py
    r = rng(2)
    x = r.standard_normal((C, N, H, W))
    weight, bias = r.standard_normal((F, C, KH, KW)), r.standard_normal(F)
    conv = Conv2D(CPU, weight, bias, stride=stride, pad=pad)
    conv.winograd = False
    assert_close(conv.forward(x), conv_reference(x, weight, bias, stride, pad), rtol=1e-10, what="conv")


@pytest.mark.parametrize("C,N,H,W,F,KH,KW,stride,pad", CONV_CASES)
def test_conv_gradients(C, N, H, W, F, KH, KW, stride, pad):
    r = rng(3)
    conv = Conv2D(CPU, r.standard_normal((F, C, KH, KW)) * 0.3, r.standard_normal(F), stride=stride, pad=pad)
    conv.winograd = False
    check_layer_gradients(conv, r.standard_normal((C, N, H, W)))


def test_conv_without_input_gradient_returns_none_but_fills_weights():
    r = rng(4)
    conv = Conv2D(CPU, r.standard_normal((2, 3, 3, 3)), np.zeros(2), input_grad=False)
    x = r.standard_normal((3, 2, 5, 5))
    conv.forward(x)
    assert conv.backward(r.standard_normal((2, 2, 3, 3))) is None
    assert np.abs(conv.grads["W"]).sum() > 0


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


@pytest.mark.parametrize("KH,KW,stride", [(3, 2, 2), (3, 3, 1), (4, 4, 4)])
def test_im2col_and_col2im_match_loops(KH, KW, stride):
    r = rng(5)
    x = r.standard_normal((3, 2, 9, 8))[:, :, 1:, :-1]            # a strided view, (3, 2, 8, 7)
    OH, OW = (8 - KH) // stride + 1, (7 - KW) // stride + 1
    col = np.empty((3, KH, KW, 2, OH, OW))
    cols = im2col(np, x, KH, KW, stride, col)
    assert cols.shape == (3 * KH * KW, 2 * OH * OW)
    assert_close(col, im2col_reference(x, KH, KW, stride, OH, OW), rtol=0, atol=0, what="im2col")
    dcol = r.standard_normal(col.shape)
    back = col2im(dcol, stride, np.zeros((3, 2, 8, 7)))
    assert_close(back, col2im_reference(dcol, stride, 8, 7), rtol=1e-12, what="col2im")
    # and the adjoint: <im2col(x), c> == <x, col2im(c)>
    assert np.isclose(np.sum(col * dcol), np.sum(x * back), rtol=1e-12)


@pytest.mark.parametrize("C,N,H,W,F,KH,KW,stride,pad", [c for c in CONV_CASES if c[7] == 1])
@pytest.mark.parametrize("by_convolution", [False, True])
def test_both_input_gradients_at_stride_1(C, N, H, W, F, KH, KW, stride, pad, by_convolution):
    # dx by col2im and dx as a convolution of dy with the turned kernels, whichever the layer picks
    r = rng(3)
    conv = Conv2D(CPU, r.standard_normal((F, C, KH, KW)) * 0.3, r.standard_normal(F), stride=stride, pad=pad)
    conv.input_grad_by_convolution, conv.winograd = by_convolution, False   # im2col (test_winograd.py: the other)
    check_layer_gradients(conv, r.standard_normal((C, N, H, W)))


def test_input_gradient_as_a_convolution_where_it_pays():
    def picks(C, F, stride=1, pad=1, K=3):
        return Conv2D(CPU, np.zeros((F, C, K, K)), np.zeros(F), stride=stride, pad=pad).input_grad_by_convolution
    assert picks(256, 192) and picks(192, 192) and picks(192, 128)   # conv3, conv4, conv5
    assert not picks(48, 128, pad=2, K=5)                            # conv2: F > C
    assert not picks(3, 2, stride=2)                                 # strided: col2im
    assert not picks(4, 2, pad=3)                                    # pad >= K: dy would need cropping


def test_conv_rejects_sizes_that_do_not_fit():
    conv = Conv2D(CPU, np.zeros((2, 3, 3, 3)), np.zeros(2), stride=2)
    with pytest.raises(ValueError, match="does not fit"):
        conv.forward(np.zeros((3, 1, 6, 6)))


def test_conv_rejects_wrong_channel_count():
    conv = Conv2D(CPU, np.zeros((2, 3, 3, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="3 input channels"):
        conv.forward(np.zeros((4, 1, 5, 5)))


# --------------------------------------------------------------------------- ReLU, dropout

def test_relu_forward_and_gradient():
    r = rng(6)
    x = r.standard_normal((3, 2, 4, 5))
    x[np.abs(x) < 0.1] += 0.3  # away from the kink at 0
    relu = ReLU(CPU)
    assert_close(relu.forward(x), np.where(x > 0, x, 0), what="relu")
    check_layer_gradients(relu, x)


@pytest.mark.parametrize("inverted", [False, True])
def test_dropout_with_a_given_mask(inverted):
    r = rng(7)
    x = r.standard_normal((6, 10))
    mask = r.random((6, 10)) >= 0.5
    drop = Dropout(CPU, 0.5, (0, 1), inverted=inverted)
    scale = 2.0 if inverted else 1.0
    assert_close(drop.forward(x, True, mask=mask), x * mask * scale, what="train")
    check_layer_gradients(drop, x, train=True, mask=mask)
    test_scale = 1.0 if inverted else 0.5   # §4.2: "multiply their outputs by 0.5"
    assert_close(drop.forward(x, False), x * test_scale, what="test")
    check_layer_gradients(drop, x, train=False)


@pytest.mark.parametrize("inverted", [False, True])
def test_dropout_keeps_the_expected_activation(inverted):
    x = np.ones((400, 500))
    drop = Dropout(CPU, 0.5, (8, 1), inverted=inverted)
    kept = drop.forward(x, True) != 0
    assert abs(kept.mean() - 0.5) < 0.005                      # p = 0.5 of units dropped
    # The expected training output equals the test output, in both conventions.
    assert abs(drop.forward(x, True).mean() - drop.forward(x, False).mean()) < 0.01
    assert np.array_equal(kept, drop.forward(x, True) != 0)    # the same step: the same mask
    drop.position = (1, 0, None)
    assert not np.array_equal(kept, drop.forward(x, True) != 0)  # the next step: a fresh mask


def test_dropout_masks_of_a_global_batch_split_in_rows():
    """Ranks computing rows of one global batch get exactly one process's mask rows."""
    x = np.ones((12, 30))
    whole = Dropout(CPU, 0.5, (3, 6, 1))
    whole.position = (7, 0, None)
    full = whole.forward(x, True) != 0                          # (12, 30)
    parts = []
    for first in (0, 4, 8):                                     # three ranks, 4 rows each
        part = Dropout(CPU, 0.5, (3, 6, 1))
        part.position = (7, first, 12)
        parts.append(part.forward(x[first:first + 4], True) != 0)
    assert np.array_equal(np.concatenate(parts), full)
    other_tower = Dropout(CPU, 0.5, (3, 6, 0))
    other_tower.position = (7, 0, None)
    assert not np.array_equal(other_tower.forward(x, True) != 0, full)


def correlation(a, b):
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("p", [0.5, 0.1])
def test_dropout_masks_look_independent(p):
    """The counter-based masks: the keep rate within 3 sigma over a large mask, and no
    correlation (beyond 4 sigma of independent bits) between neighbouring rows, columns,
    steps, towers and layers."""
    N, D = 1024, 2048

    def mask(step=5, layer=6, tower=0):
        drop = Dropout(CPU, p, (0, 0xD0, layer, tower))
        drop.position = (step, 0, None)
        return drop.draw_mask((N, D))                               # (N, D) bool

    m = mask()
    n = m.size
    assert abs(m.mean() - (1 - p)) < 3 * np.sqrt(p * (1 - p) / n)
    bound = 4 / np.sqrt(n)
    pairs = {"rows": (m[1:], m[:-1]), "columns": (m[:, 1:], m[:, :-1]),
             "steps": (m, mask(step=6)), "towers": (m, mask(tower=1)), "layers": (m, mask(layer=7))}
    for what, (a, b) in pairs.items():
        assert abs(correlation(a, b)) < bound, what


def test_dropout_masks_are_a_function_of_the_position_only():
    """Row r, column c of a step's mask is the same bit whoever computes it (other rows in
    the batch, another batch size)."""
    drop = Dropout(CPU, 0.5, (1, 2, 3, 4))
    drop.position = (9, 0, None)
    whole = drop.draw_mask((40, 64))
    drop.position = (9, 13, 40)
    assert np.array_equal(drop.draw_mask((5, 64)), whole[13:18])


# --------------------------------------------------------------------------- LRN

@pytest.mark.parametrize("alpha_over_n", [False, True])
@pytest.mark.parametrize("C", [3, 7])
def test_lrn_forward_matches_formula(alpha_over_n, C):
    r = rng(9)
    a = np.abs(r.standard_normal((C, 2, 3, 4))) * 2
    lrn = LocalResponseNorm(CPU, size=5, k=2.0, alpha=0.5, beta=0.75, alpha_over_n=alpha_over_n)
    coef = 0.5 / 5 if alpha_over_n else 0.5
    assert_close(lrn.forward(a), lrn_reference(a, 5, 2.0, coef, 0.75), rtol=1e-12, what="lrn")


def test_lrn_paper_coefficients():
    # The printed formula puts alpha = 1e-4 on the sum; cuda-convnet/Caffe/PyTorch put 1e-4 / 5.
    assert LocalResponseNorm(CPU).coef == 1e-4
    assert LocalResponseNorm(CPU, alpha_over_n=True).coef == pytest.approx(2e-5)


@pytest.mark.parametrize("C,size", [(7, 5), (3, 5), (6, 3)])
@pytest.mark.parametrize("beta", [0.75, 0.6, 0.0])   # the paper's (1/s by a cube root), any other, none
def test_lrn_gradients_with_large_alpha_at_the_edges(C, size, beta):
    # A large alpha makes the window term dominate, so a wrong edge (channels 0, 1, C-2,
    # C-1) or a wrong window width shows; signed inputs as after any layer.
    r = rng(10)
    lrn = LocalResponseNorm(CPU, size=size, k=1.0, alpha=2.0, beta=beta)
    check_layer_gradients(lrn, r.standard_normal((C, 2, 3, 2)))


# --------------------------------------------------------------------------- max pooling

@pytest.mark.parametrize("shape,size,stride", [
    ((2, 2, 7, 9), 3, 2),    # overlapping, non-square
    ((3, 1, 13, 13), 3, 2),  # conv5 -> pool5 sized
    ((2, 2, 6, 8), 2, 2),    # non-overlapping
    ((1, 2, 5, 6), 3, 1),    # stride 1
    ((1, 2, 8, 6), 3, 2),    # even sizes: the last row and column are in no window
    ((1, 1, 7, 8), 2, 3),    # gaps between the windows
])
def test_maxpool_forward_and_gradients(shape, size, stride):
    x = rng(11).permutation(np.arange(np.prod(shape), dtype=np.float64)).reshape(shape) / 10  # distinct
    pool = MaxPool(CPU, size, stride)
    assert_close(pool.forward(x), maxpool_reference(x, size, stride), what="pool")
    check_layer_gradients(pool, x)


def test_maxpool_tie_goes_to_the_first_offset_once():
    # All equal: every window's gradient goes to its top-left pixel, never split or doubled.
    pool = MaxPool(CPU, 3, 2)
    x = np.zeros((1, 1, 5, 5))
    pool.forward(x)
    dx = pool.backward(np.ones((1, 1, 2, 2)))
    expected = np.zeros((5, 5))
    expected[0, 0] = expected[0, 2] = expected[2, 0] = expected[2, 2] = 1
    assert_close(dx[0, 0], expected, what="ties")


@pytest.mark.parametrize("row", [(1, 3, 3), (3, 1, 3), (2, 2, 1), (1, 2, 3)])
def test_maxpool_gradient_goes_to_the_first_maximum_of_a_window(row):
    # one 3 x 3 window whose rows are all ``row``: the first column holding the maximum wins,
    # in the first row (row-major order, as PyTorch and Caffe)
    pool = MaxPool(CPU, 3, 2)
    x = np.tile(np.array(row, dtype=float), (1, 1, 3, 1))      # (1, 1, 3, 3)
    pool.forward(x)
    dx = pool.backward(np.ones((1, 1, 1, 1)))
    expected = np.zeros((3, 3))
    expected[0, row.index(max(row))] = 1
    assert_close(dx[0, 0], expected, what=f"window rows {row}")


# --------------------------------------------------------------------------- fc, flatten, loss

def test_linear_gradients():
    r = rng(12)
    lin = Linear(CPU, r.standard_normal((4, 6)), r.standard_normal(4))
    x = r.standard_normal((3, 6))
    assert_close(lin.forward(x), x @ lin.params["W"].T + lin.params["b"], what="linear")
    check_layer_gradients(lin, x)


def test_flatten_orders_features_like_nchw():
    x = rng(13).standard_normal((3, 2, 4, 5))      # (C, N, H, W)
    flat = Flatten(CPU)
    expected = x.transpose(1, 0, 2, 3).reshape(2, -1)  # each example's (C, H, W), C-major
    assert_close(flat.forward(x), expected, what="flatten")
    check_layer_gradients(flat, x)


def test_softmax_cross_entropy_matches_reference_and_gradient():
    r = rng(14)
    z = r.standard_normal((5, 7)) * 3
    labels = r.integers(0, 7, 5)
    loss = SoftmaxCrossEntropy(CPU)
    assert loss.forward(z, labels) == pytest.approx(cross_entropy_reference(z, labels), rel=1e-12)
    loss.forward(z, labels)
    analytic = loss.backward()
    numeric = numerical_gradient(lambda: float(loss.forward(z, labels)), z)
    assert_close(analytic, numeric, rtol=1e-6, atol=1e-9, what="dz")


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    z = np.array([[1000.0, 0.0, -1000.0], [-5e4, 5e4, 0.0]])
    loss = SoftmaxCrossEntropy(CPU)
    value = loss.forward(z, np.array([0, 0]))
    assert np.isfinite(value) and value == pytest.approx(1e5 / 2)
    assert np.all(np.isfinite(loss.backward()))


def test_layers_keep_float32():
    r = rng(15)
    x = r.standard_normal((3, 2, 7, 7)).astype(np.float32)
    conv = Conv2D(CPU, r.standard_normal((4, 3, 3, 3)).astype(np.float32), np.zeros(4, np.float32), pad=1)
    layers = [conv, ReLU(CPU), LocalResponseNorm(CPU), MaxPool(CPU, 3, 2), Flatten(CPU)]
    for layer in layers:
        x = layer.forward(x, True)
        assert x.dtype == np.float32, type(layer).__name__
    dy = np.ones_like(x)
    for layer in reversed(layers):
        dy = layer.backward(dy)
        assert dy.dtype == np.float32, type(layer).__name__
    assert conv.grads["W"].dtype == np.float32


def test_conv_in_batch_chunks_matches_loops_and_gradients():
    # A small col budget forces the unfold to go a few images at a time.
    r = rng(16)
    x = r.standard_normal((3, 5, 9, 8))
    weight, bias = r.standard_normal((4, 3, 3, 2)), r.standard_normal(4)
    device = Device()
    device.few_filters_col_elements = 3 * 3 * 2 * 9 * 9 * 2   # two images per chunk: 3 chunks
    conv = Conv2D(device, weight, bias, stride=1, pad=1)         # 4 filters: "few"
    assert len(conv._chunks(x)) == 3
    assert_close(conv.forward(x), conv_reference(x, weight, bias, 1, 1), rtol=1e-10, what="chunked conv")
    for by_convolution in (False, True):
        conv.input_grad_by_convolution = by_convolution
        check_layer_gradients(conv, x)


def test_conv_chunks_follow_the_device_and_the_number_of_filters():
    # conv1 (48 filters, 1.1M unfolded entries an image) goes an image at a time on the CPU,
    # conv2 (128 filters, 875K an image) in chunks of 64 MiB, and on a GPU both take the batch.
    x1, x2 = np.empty((3, 32, 227, 227), np.float32), np.empty((48, 32, 27, 27), np.float32)
    def chunks(device, filters, x, kernel, stride, pad):
        weight = np.zeros((filters, x.shape[0], kernel, kernel), np.float32)
        return Conv2D(device, weight, np.zeros(filters, np.float32), stride, pad)._chunks(x)
    assert chunks(Device(), 48, x1, 11, 4, 0) == [(n, n + 1) for n in range(32)]
    assert chunks(Device(), 128, x2, 5, 1, 2) == [(0, 16), (16, 32)]

    class LargeChunks(Device):   # the GPU's chunk sizes, without a GPU
        col_elements = few_filters_col_elements = GPU.col_elements
    assert chunks(LargeChunks(), 48, x1, 11, 4, 0) == [(0, 32)]
    assert GPU.few_filters_col_elements == GPU.col_elements


@pytest.mark.parametrize("make,shape", [
    (lambda r: Conv2D(CPU, r.standard_normal((4, 3, 3, 3)), r.standard_normal(4), pad=1), (3, 2, 7, 6)),
    (lambda r: LocalResponseNorm(CPU, alpha=0.5), (7, 2, 3, 4)),
    (lambda r: MaxPool(CPU, 3, 2), (3, 2, 7, 9)),
    (lambda r: Linear(CPU, r.standard_normal((4, 6)), r.standard_normal(4)), (3, 6)),
], ids=["conv", "lrn", "pool", "linear"])
def test_infer_gives_the_test_time_output_and_keeps_nothing_for_backward(make, shape):
    r = rng(18)
    layer, x = make(r), r.standard_normal(shape)
    expected = layer.forward(x).copy()
    assert np.array_equal(layer.infer(x), expected)
    kept = [name for name in ("x", "column_winner", "row_winner") if getattr(layer, name, None) is not None]
    assert kept == [], f"{type(layer).__name__}.infer kept {kept}"
    with pytest.raises(RuntimeError, match="infer keeps nothing for backward"):
        layer.backward(np.ones_like(expected))
