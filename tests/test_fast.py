"""The fast forms (alexnet_np/nn/fast.py) against their plain forms (alexnet_np/nn/layers.py):
forward and backward equal, float64 to 1e-12 and float32 to the tests' tolerance, on odd sizes;
the packed SGD against the plain one; a few float64 training steps of the whole net in each
form; and what the fast forms add (chunks, the turned convolution, ``infer``)."""
import numpy as np
import pytest

from alexnet_np.config import DEMO
from alexnet_np.nn import fast, layers
from alexnet_np.nn.backend import GPU, Device
from alexnet_np.nn.model import FAST, PLAIN, AlexNet
from alexnet_np.nn.optim import SGD
from gradcheck import assert_close, check_layer_gradients
from references import conv_reference

CPU = Device()


def rng(seed=0):
    return np.random.default_rng(seed)


def run(layer, x, dy, **forward_kw):
    """(y, dx, {name: grad}) of one forward and backward, copied out of any reused memory."""
    y = layer.forward(x, True, **forward_kw).copy()
    dx = layer.backward(dy)
    return y, None if dx is None else dx.copy(), {k: g.copy() for k, g in layer.grads.items()}


def assert_forms_equal(make_plain, make_fast, x, dtype=np.float64, seed=1, device=CPU, **forward_kw):
    """The plain and the fast layer give the same output, input gradient and parameter
    gradients for x and a random upstream gradient: float64 to 1e-12, float32 to 1e-5."""
    x = x.astype(dtype)
    plain, quick = make_plain(CPU), make_fast(device)
    y_plain = plain.forward(x, True, **forward_kw)
    dy = rng(seed).standard_normal(y_plain.shape).astype(dtype)
    rtol, atol = (1e-12, 1e-13) if dtype == np.float64 else (1e-5, 1e-6)
    expected, got = run(plain, x, dy, **forward_kw), run(quick, x, dy, **forward_kw)
    assert got[0].dtype == dtype
    for what, a, b in (("y", got[0], expected[0]), ("dx", got[1], expected[1])):
        if b is None:
            assert a is None
        else:
            assert_close(a, b, rtol=rtol, atol=atol, what=what, scale_atol=True)
    for name in expected[2]:
        assert_close(got[2][name], expected[2][name], rtol=rtol, atol=atol, what=name, scale_atol=True)


DTYPES = [np.float64, np.float32]

CONV_CASES = [
    # (C, N, H, W, F, KH, KW, stride, pad)
    (3, 2, 19, 23, 4, 11, 11, 4, 0),   # conv1-like: 11x11 at stride 4, non-square input
    (3, 2, 7, 8, 5, 3, 2, 2, 1),       # strided and padded, non-square kernel and input
    (4, 3, 5, 7, 3, 5, 5, 1, 2),       # conv2-like: 5x5, pad 2, F <= C: the turned convolution
    (3, 1, 5, 7, 6, 5, 5, 1, 2),       # 5x5, pad 2, F > C: col2im
    (6, 2, 5, 7, 5, 3, 3, 1, 1),       # conv3-like: Winograd on the CPU, odd sizes
    (5, 3, 7, 5, 4, 3, 3, 1, 0),       # Winograd without padding
    (4, 2, 3, 5, 3, 3, 3, 1, 2),       # Winograd with pad 2
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("C,N,H,W,F,KH,KW,stride,pad", CONV_CASES)
def test_fast_conv_equals_plain(C, N, H, W, F, KH, KW, stride, pad, dtype):
    r = rng(2)
    weight, bias, x = r.standard_normal((F, C, KH, KW)), r.standard_normal(F), r.standard_normal((C, N, H, W))
    assert_forms_equal(lambda d: layers.Conv2D(d, weight.astype(dtype), bias.astype(dtype), stride, pad),
                       lambda d: fast.FastConv2D(d, weight.astype(dtype), bias.astype(dtype), stride, pad),
                       x, dtype)


@pytest.mark.parametrize("winograd", [False, True])
def test_fast_conv_in_chunks_without_input_gradient_equals_plain(winograd):
    r = rng(16)
    weight, bias, x = r.standard_normal((4, 3, 3, 3)), r.standard_normal(4), r.standard_normal((3, 5, 9, 7))
    device = Device()
    device.winograd = winograd
    device.few_filters_col_elements = 3 * 3 * 3 * 9 * 7 * 2   # two images per chunk: 3 chunks
    conv = fast.FastConv2D(device, weight, bias, pad=1, input_grad=False)
    assert len(conv._chunks(x)) >= 3 and conv.winograd == winograd
    assert_forms_equal(lambda d: layers.Conv2D(d, weight, bias, pad=1, input_grad=False),
                       lambda d: fast.FastConv2D(d, weight, bias, pad=1, input_grad=False), x, device=device)


@pytest.mark.parametrize("by_convolution", [False, True])
def test_fast_conv_input_gradients_in_chunks_against_finite_differences(by_convolution):
    # the two input gradients of a stride-1 layer, the batch a few images at a time
    r = rng(16)
    x = r.standard_normal((3, 5, 9, 8))
    weight, bias = r.standard_normal((4, 3, 3, 2)), r.standard_normal(4)
    device = Device()
    device.few_filters_col_elements = 3 * 3 * 2 * 9 * 9 * 2   # two images per chunk: 3 chunks
    conv = fast.FastConv2D(device, weight, bias, stride=1, pad=1)
    assert len(conv._chunks(x)) == 3 and not conv.winograd
    assert_close(conv.forward(x), conv_reference(x, weight, bias, 1, 1), rtol=1e-10, what="chunked conv")
    conv.input_grad_by_convolution = by_convolution
    check_layer_gradients(conv, x)


def test_input_gradient_as_a_convolution_where_it_pays():
    def picks(C, F, stride=1, pad=1, K=3):
        return fast.FastConv2D(CPU, np.zeros((F, C, K, K)), np.zeros(F), stride=stride, pad=pad).input_grad_by_convolution
    assert picks(256, 192) and picks(192, 192) and picks(192, 128)   # conv3, conv4, conv5
    assert not picks(48, 128, pad=2, K=5)                            # conv2: F > C
    assert not picks(3, 2, stride=2)                                 # strided: col2im
    assert not picks(4, 2, pad=3)                                    # pad >= K: dy would need cropping


def test_conv_chunks_follow_the_device_and_the_number_of_filters():
    # conv1 (48 filters, 1.1M unfolded entries an image) goes an image at a time on the CPU,
    # conv2 (128 filters, 875K an image) in chunks of 64 MiB, and on a GPU both take the batch.
    x1, x2 = np.empty((3, 32, 227, 227), np.float32), np.empty((48, 32, 27, 27), np.float32)

    def chunks(device, filters, x, kernel, stride, pad):
        weight = np.zeros((filters, x.shape[0], kernel, kernel), np.float32)
        return fast.FastConv2D(device, weight, np.zeros(filters, np.float32), stride, pad)._chunks(x)
    assert chunks(Device(), 48, x1, 11, 4, 0) == [(n, n + 1) for n in range(32)]
    assert chunks(Device(), 128, x2, 5, 1, 2) == [(0, 16), (16, 32)]

    class LargeChunks(Device):   # the GPU's chunk sizes, without a GPU
        col_elements = few_filters_col_elements = GPU.col_elements
    assert chunks(LargeChunks(), 48, x1, 11, 4, 0) == [(0, 32)]
    assert GPU.few_filters_col_elements == GPU.col_elements


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("C,size,beta", [(7, 5, 0.75), (3, 5, 0.6), (6, 3, 0.0), (9, 7, 0.75)])
def test_fast_lrn_equals_plain(C, size, beta, dtype):
    # a large alpha, so that the window and its edges matter
    x = rng(10).standard_normal((C, 3, 5, 7))
    assert_forms_equal(lambda d: layers.LocalResponseNorm(d, size, 1.0, 2.0, beta),
                       lambda d: fast.FastLocalResponseNorm(d, size, 1.0, 2.0, beta), x, dtype)


POOL_CASES = [((2, 2, 7, 9), 3, 2), ((3, 1, 13, 13), 3, 2), ((2, 2, 6, 8), 2, 2), ((1, 2, 5, 6), 3, 1),
              ((1, 2, 8, 6), 3, 2), ((1, 1, 7, 8), 2, 3)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("shape,size,stride", POOL_CASES)
def test_fast_maxpool_equals_plain(shape, size, stride, dtype):
    x = rng(11).permutation(np.arange(np.prod(shape), dtype=np.float64)).reshape(shape) / 10  # distinct
    assert_forms_equal(lambda d: layers.MaxPool(d, size, stride), lambda d: fast.FastMaxPool(d, size, stride), x, dtype)


def test_fast_maxpool_equals_plain_with_ties():
    # values from a few levels: many windows with several maxima; the same winner in both forms
    x = rng(12).integers(0, 3, (2, 3, 9, 11)).astype(np.float64)
    assert_forms_equal(lambda d: layers.MaxPool(d, 3, 2), lambda d: fast.FastMaxPool(d, 3, 2), x)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_fast_elementwise_fc_and_slice_equal_plain(dtype):
    r = rng(13)
    x = r.standard_normal((5, 3, 7, 9))
    x[np.abs(x) < 0.1] += 0.3   # away from ReLU's kink
    assert_forms_equal(layers.ReLU, fast.FastReLU, x, dtype)
    assert_forms_equal(layers.Tanh, fast.FastTanh, x, dtype)
    assert_forms_equal(lambda d: layers.ChannelSlice(d, 1, 4), lambda d: fast.FastChannelSlice(d, 1, 4), x, dtype)
    weight, bias = r.standard_normal((7, 11)), r.standard_normal(7)
    assert_forms_equal(lambda d: layers.Linear(d, weight.astype(dtype), bias.astype(dtype)),
                       lambda d: fast.FastLinear(d, weight.astype(dtype), bias.astype(dtype)),
                       r.standard_normal((5, 11)), dtype)


def test_the_forms_pair_up():
    # every fast class is the subclass of the plain form it names
    for plain, quick in zip(PLAIN, FAST):
        assert issubclass(quick, plain) and quick is not plain
        assert quick.__doc__.startswith(f"plain form: ``layers.{plain.__name__}``")


@pytest.mark.parametrize("make,shape", [
    (lambda r: fast.FastConv2D(CPU, r.standard_normal((4, 3, 3, 3)), r.standard_normal(4), pad=1), (3, 2, 7, 6)),
    (lambda r: fast.FastLocalResponseNorm(CPU, alpha=0.5), (7, 2, 3, 4)),
    (lambda r: fast.FastMaxPool(CPU, 3, 2), (3, 2, 7, 9)),
    (lambda r: fast.FastLinear(CPU, r.standard_normal((4, 6)), r.standard_normal(4)), (3, 6)),
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


# --------------------------------------------------------------------------- SGD and the whole net

@pytest.mark.parametrize("decay_biases", [False, True])
def test_packed_sgd_equals_plain(decay_biases):
    config = DEMO.replace(dtype="float64", decay_biases=decay_biases)
    nets = {form: AlexNet(config.replace(layer_form=form), [Device(), Device()]) for form in ("plain", "fast")}
    opts = {form: net.optimizer(config) for form, net in nets.items()}
    assert type(opts["plain"]) is SGD and type(opts["fast"]) is fast.PackedSGD and opts["fast"].flat
    r = rng(20)
    for _ in range(3):
        for name, w, dw, _ in nets["plain"].parameters():
            dw[...] = r.standard_normal(dw.shape)
        grads = {name: dw for name, _, dw, _ in nets["plain"].parameters()}
        for name, _, dw, _ in nets["fast"].parameters():
            dw[...] = grads[name]
        for opt in opts.values():
            opt.step()
    fast_state = nets["fast"].state_dict()
    for name, w in nets["plain"].state_dict().items():
        assert_close(fast_state[name], w, rtol=1e-12, atol=1e-15, what=name)


def test_a_few_training_steps_are_the_same_in_both_forms():
    """Four float64 steps of the demo net (dropout on, towers side by side), plain against
    fast: the losses and every weight equal to rounding; then each form loads the other's
    weights and gives the same logits."""
    config = DEMO.replace(dtype="float64", seed=3)
    r = rng(21)
    images = r.standard_normal((6, 3, config.input_size, config.input_size)) * 50
    labels = r.integers(0, config.num_classes, 6)
    nets, losses = {}, {}
    for form in ("plain", "fast"):
        net = nets[form] = AlexNet(config.replace(layer_form=form), [Device(), Device()])
        assert net.forms is (PLAIN if form == "plain" else FAST)
        opt = net.optimizer(config)
        losses[form] = []
        for step in range(4):
            losses[form].append(float(net.forward_loss(images, labels, train=True, step=step)))
            net.backward()
            opt.step()
    assert losses["plain"][-1] < losses["plain"][0]
    assert_close(np.array(losses["fast"]), np.array(losses["plain"]), rtol=1e-12, what="losses")
    plain_state, fast_state = nets["plain"].state_dict(), nets["fast"].state_dict()
    for name, w in plain_state.items():
        assert_close(fast_state[name], w, rtol=1e-9, atol=1e-12, what=name, scale_atol=True)
    nets["plain"].load_state_dict(fast_state)
    nets["fast"].load_state_dict(plain_state)
    assert_close(nets["plain"].infer(images), nets["fast"].forward(images, train=False).copy(), rtol=1e-9,
                 atol=1e-12, what="logits after swapping the weights", scale_atol=True)


def test_the_form_is_chosen_once_when_the_net_is_built():
    plain = AlexNet(DEMO.replace(layer_form="plain"))
    assert not plain.flat and all(type(layer) in PLAIN for _, layer in plain.named_layers())
    assert type(plain.towers[0].pool1) is layers.MaxPool
    auto = AlexNet(DEMO)   # on the CPU: the fast forms
    assert auto.forms is FAST and auto.flat and type(auto.towers[0].lrn1) is fast.FastLocalResponseNorm
