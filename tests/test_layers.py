"""Every plain layer (alexnet_np/nn/layers.py): forward against a loop-based float64 reference
(tests/references.py), backward against centred finite differences with a random upstream
gradient (conventions 6-8). The fast forms are checked against these in tests/test_fast.py."""
import numpy as np
import pytest

from alexnet_np.nn import fast
from alexnet_np.nn.backend import Device
from alexnet_np.nn.layers import (Conv2D, Dropout, Flatten, Linear, LocalResponseNorm, MaxPool, ReLU,
                                  SoftmaxCrossEntropy, col2im, im2col)
from gradcheck import assert_close, check_layer_gradients, numerical_gradient
from references import (col2im_reference, conv_reference, cross_entropy_reference, im2col_reference,
                        lrn_reference, maxpool_reference)

CPU = Device()


def rng(seed=0):
    return np.random.default_rng(seed)


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
    # the plain form, by im2col (the fast forms against it: tests/test_fast.py)
    r = rng(2)
    x = r.standard_normal((C, N, H, W))
    weight, bias = r.standard_normal((F, C, KH, KW)), r.standard_normal(F)
    conv = Conv2D(CPU, weight, bias, stride=stride, pad=pad)
    assert_close(conv.forward(x), conv_reference(x, weight, bias, stride, pad), rtol=1e-10, what="conv")


@pytest.mark.parametrize("C,N,H,W,F,KH,KW,stride,pad", CONV_CASES)
def test_conv_gradients(C, N, H, W, F, KH, KW, stride, pad):
    r = rng(3)
    conv = Conv2D(CPU, r.standard_normal((F, C, KH, KW)) * 0.3, r.standard_normal(F), stride=stride, pad=pad)
    check_layer_gradients(conv, r.standard_normal((C, N, H, W)))


def test_conv_without_input_gradient_returns_none_but_fills_weights():
    r = rng(4)
    conv = Conv2D(CPU, r.standard_normal((2, 3, 3, 3)), np.zeros(2), input_grad=False)
    x = r.standard_normal((3, 2, 5, 5))
    conv.forward(x)
    assert conv.backward(r.standard_normal((2, 2, 3, 3))) is None
    assert np.abs(conv.grads["W"]).sum() > 0


@pytest.mark.parametrize("KH,KW,stride", [(3, 2, 2), (3, 3, 1), (4, 4, 4)])
def test_im2col_and_col2im_match_loops(KH, KW, stride):
    r = rng(5)
    x = r.standard_normal((3, 2, 9, 8))[:, :, 1:, :-1]            # a strided view, (3, 2, 8, 7)
    OH, OW = (8 - KH) // stride + 1, (7 - KW) // stride + 1
    cols = im2col(np, x, KH, KW, stride)
    assert cols.shape == (3 * KH * KW, 2 * OH * OW)
    col = cols.reshape(3, KH, KW, 2, OH, OW)
    assert_close(col, im2col_reference(x, KH, KW, stride, OH, OW), rtol=0, atol=0, what="im2col")
    dcol = r.standard_normal(col.shape)
    back = col2im(np, dcol, stride, 8, 7)
    assert_close(back, col2im_reference(dcol, stride, 8, 7), rtol=1e-12, what="col2im")
    # and the adjoint: <im2col(x), c> == <x, col2im(c)>
    assert np.isclose(np.sum(col * dcol), np.sum(x * back), rtol=1e-12)
    # the fast forms' versions, into given memory
    assert np.array_equal(fast.im2col_into(np, x, KH, KW, stride, np.empty(col.shape)), cols)
    assert np.array_equal(fast.col2im_into(dcol, stride, np.zeros((3, 2, 8, 7))), back)


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


@pytest.mark.parametrize("form", ["plain", "fast"])
def test_layers_keep_float32(form):
    r = rng(15)
    x = r.standard_normal((3, 2, 7, 7)).astype(np.float32)
    made = {"plain": (Conv2D, ReLU, LocalResponseNorm, MaxPool),
            "fast": (fast.FastConv2D, fast.FastReLU, fast.FastLocalResponseNorm, fast.FastMaxPool)}[form]
    conv = made[0](CPU, r.standard_normal((4, 3, 3, 3)).astype(np.float32), np.zeros(4, np.float32), pad=1)
    layers = [conv, made[1](CPU), made[2](CPU), made[3](CPU, 3, 2), Flatten(CPU)]
    for layer in layers:
        x = layer.forward(x, True)
        assert x.dtype == np.float32, type(layer).__name__
    dy = np.ones_like(x)
    for layer in reversed(layers):
        dy = layer.backward(dy)
        assert dy.dtype == np.float32, type(layer).__name__
    assert conv.grads["W"].dtype == np.float32


def test_plain_layers_return_fresh_arrays():
    # A learner who keeps an activation sees its own numbers: nothing a plain layer returns
    # is overwritten by a later call (the fast forms reuse their memory).
    r = rng(19)
    x1, x2 = r.standard_normal((3, 2, 7, 9)), r.standard_normal((3, 2, 7, 9))
    conv = Conv2D(CPU, r.standard_normal((3, 3, 3, 3)), r.standard_normal(3), pad=1)
    for layer in (conv, ReLU(CPU), LocalResponseNorm(CPU, alpha=0.5), MaxPool(CPU, 3, 2)):
        y1 = layer.forward(x1)
        kept = y1.copy()
        y2 = layer.forward(x2)
        assert y1 is not y2 and np.array_equal(y1, kept), type(layer).__name__
        dx1 = layer.backward(np.ones_like(y2))
        kept = dx1.copy()
        layer.backward(2 * np.ones_like(y2))
        assert np.array_equal(dx1, kept), type(layer).__name__
