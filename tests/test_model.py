"""The two-tower model: size, whole-network gradients, placement and crossings, optimiser."""
import numpy as np
import pytest

from alexnet_np.nn import backend
from alexnet_np.nn.backend import Device, DeviceError
from alexnet_np.config import Config
from alexnet_np.nn.model import AlexNet, layer_sizes
from alexnet_np.nn.fast import PackedSGD
from alexnet_np.nn.optim import SGD
from gradcheck import assert_close, check_parameter_directions, numerical_gradient
from standin_gpus import standin_gpus

# Small, with every structural feature of the paper's net: two towers, the four crossings,
# LRN with an alpha large enough to matter, 5 classes. Init std 0.1 keeps activations O(1).
SMALL = Config(num_classes=5, input_size=67, conv_channels=(4, 8, 8, 8, 6), fc_units=(8, 6),
               lrn_alpha=0.3, init_std=0.1, dtype="float64", seed=3)


def batch(config, n=3, seed=0):
    r = np.random.default_rng(seed)
    images = r.standard_normal((n, 3, config.input_size, config.input_size))   # (N, 3, S, S)
    labels = r.integers(0, config.num_classes, n)                              # (N,)
    return images, labels


def test_paper_configuration_has_60965224_parameters():
    net = AlexNet(Config(dtype="float32"))
    assert net.num_parameters() == 60_965_224
    assert layer_sizes(Config()) == {"input": 227, "conv1": 55, "pool1": 27, "conv2": 27,
                                     "pool2": 13, "conv3": 13, "pool5": 6}
    shapes = {name: p.shape for name, p, _, _ in net.parameters()}
    assert shapes["tower0.conv1.W"] == (48, 3, 11, 11)
    assert shapes["tower1.conv2.W"] == (128, 48, 5, 5)      # own tower only
    assert shapes["tower0.conv3.W"] == (192, 256, 3, 3)     # both towers
    assert shapes["tower1.conv4.W"] == (192, 192, 3, 3)
    assert shapes["tower0.fc6.W"] == (2048, 9216)           # all of pool5
    assert shapes["tower1.fc7.W"] == (2048, 4096)           # all of fc6
    assert shapes["fc8.W"] == (1000, 4096)


def test_paper_initialisation():
    net = AlexNet(Config(conv_channels=(96, 256, 384, 384, 256), fc_units=(512, 512), num_classes=100))
    params = {name: p for name, p, _, _ in net.parameters()}
    for layer, bias in [("conv1", 0), ("conv2", 1), ("conv3", 0), ("conv4", 1), ("conv5", 1),
                        ("fc6", 1), ("fc7", 1)]:
        for g in (0, 1):
            assert np.all(params[f"tower{g}.{layer}.b"] == bias), layer
    assert np.all(params["fc8.b"] == 0)
    w = params["tower0.conv2.W"]
    assert w.dtype == np.float32
    assert abs(w.std() - 0.01) < 0.0005 and abs(w.mean()) < 0.0005
    # From the seed: the same seed gives the same net, another seed another net.
    again = AlexNet(Config(conv_channels=(96, 256, 384, 384, 256), fc_units=(512, 512), num_classes=100))
    assert np.array_equal(again.state_dict()["tower1.conv5.W"], params["tower1.conv5.W"])


def test_input_sizes_that_do_not_fit_are_refused_clearly():
    with pytest.raises(ValueError, match="conv1"):
        AlexNet(Config(input_size=224))
    with pytest.raises(ValueError, match="must be"):
        AlexNet(SMALL).forward(np.zeros((1, 3, 66, 66)))


@pytest.mark.parametrize("train", [False, True])
def test_whole_network_gradients(train):
    """Every parameter of both towers and fc8, checked along a random direction, plus
    single entries of the first and last layers, against float64 finite differences."""
    net = AlexNet(SMALL)
    images, labels = batch(SMALL)

    def loss():
        return float(net.forward_loss(images, labels, train=train))

    loss()
    net.backward()
    check_parameter_directions(net, loss)
    for name in ("tower1.conv1.b", "fc8.b", "tower0.conv3.b"):
        layer_name, key = name.rsplit(".", 1)
        layer = dict(net.named_layers())[layer_name]
        assert_close(layer.grads[key], numerical_gradient(loss, layer.params[key], eps=1e-6),
                     rtol=1e-5, atol=1e-9, what=name, scale_atol=True)


def test_gradients_are_not_trivial():
    net = AlexNet(SMALL)
    net.forward_loss(*batch(SMALL), train=True)
    net.backward()
    for name, _, dw, _ in net.parameters():
        assert np.abs(dw).max() > 0, name


def test_backward_writes_the_gradients_whatever_they_held():
    # Nothing zeroes the gradients between steps: every backward writes each of them
    # (conv1 in chunks: the first chunk writes, the others add). A second step's gradients
    # are its own, not the sum of the two.
    images, labels = batch(SMALL)
    fresh, reused = AlexNet(SMALL), AlexNet(SMALL)
    for device in reused.devices:
        device.few_filters_col_elements = device.col_elements = 1   # an image per chunk
    for _, _, dw, _ in reused.parameters():
        dw[...] = np.nan
    for net in (fresh, reused, reused):
        net.forward_loss(images, labels, train=True, step=0)
        net.backward()
    for (name, _, dw, _), (_, _, expected, _) in zip(reused.parameters(), fresh.parameters()):
        assert np.allclose(dw, expected, rtol=1e-5, atol=1e-7), name


def test_placement_and_crossings_on_two_gpus():
    """Every array stays on its tower's GPU (the CuPy stand-in refuses any operation on another
    GPU's array); data crosses only at conv3, fc6, fc7, fc8."""
    d0, d1 = standin_gpus(2)
    net = AlexNet(SMALL, [d0, d1])
    images, labels = batch(SMALL)
    loss = net.forward_loss(images, labels, train=True)
    net.backward()
    assert np.isfinite(float(d0.to_host(loss)))
    for name, w, dw, device in net.parameters():
        owner = d0 if name.startswith(("tower0", "fc8")) else d1
        assert device is owner and owner.holds(w) and owner.holds(dw), name
    # Forward: each tower receives the other's output at conv3, fc6 and fc7 (2 each) and
    # tower 0 receives tower 1's fc7 for fc8 (1). Backward: the same, reversed.
    assert net.crossings() == {"conv3": 4, "fc6": 4, "fc7": 4, "fc8": 2}
    cupy = d0.xp
    assert cupy._rules.peer_copies == 14   # nothing else crossed
    SGD(net.parameters()).step()            # the update stays on each device too
    assert cupy._rules.peer_copies == 14 and not cupy._rules.broken


@pytest.mark.parametrize("train", [False, True])
def test_one_device_and_two_devices_give_the_same_result(train):
    images, labels = batch(SMALL, n=4, seed=5)
    results = []
    for devices in ([Device()] * 2, standin_gpus(2)):
        net = AlexNet(SMALL, devices)
        loss = float(net.forward_loss(images, labels, train=train))
        net.backward()
        grads = {name: devices[0].to_host(dw) for name, _, dw, _ in net.parameters()}
        results.append((loss, devices[0].to_host(net.logits), grads))
    (loss1, logits1, grads1), (loss2, logits2, grads2) = results
    assert loss1 == pytest.approx(loss2, rel=1e-13)
    assert_close(logits2, logits1, rtol=1e-12, what="logits")
    for name in grads1:
        assert_close(grads2[name], grads1[name], rtol=1e-10, atol=1e-14, what=name)


def test_float32_forward_backward_stays_float32():
    cfg = SMALL.replace(dtype="float32")
    net = AlexNet(cfg)
    images, labels = batch(cfg)
    loss = net.forward_loss(images, labels, train=True)   # float64 images are cast on arrival
    net.backward()
    assert loss.dtype == np.float32 and net.logits.dtype == np.float32
    assert all(dw.dtype == np.float32 for _, _, dw, _ in net.parameters())


def test_state_dict_round_trip():
    net, other = AlexNet(SMALL), AlexNet(SMALL.replace(seed=9))
    other.load_state_dict(net.state_dict())
    images, _ = batch(SMALL)
    assert np.array_equal(net.forward(images), other.forward(images))
    state = net.state_dict()
    state["fc8.W"] = state["fc8.W"][:, :-1]
    with pytest.raises(ValueError, match="fc8.W"):
        other.load_state_dict(state)


# --------------------------------------------------------------------------- optimiser

def fake_parameters(update_elements=Device.update_elements):
    r = np.random.default_rng(0)
    cpu = Device()
    cpu.update_elements = update_elements
    w, b = r.standard_normal((3, 4)), r.standard_normal(3)
    return [("layer.W", w, np.zeros_like(w), cpu), ("layer.b", b, np.zeros_like(b), cpu)]


@pytest.mark.parametrize("update_elements", [None, 5], ids=["whole", "in-pieces-of-5"])
@pytest.mark.parametrize("decay_biases", [False, True])
def test_sgd_follows_section_5(decay_biases, update_elements):
    params = fake_parameters(update_elements)   # 12 weights: pieces of 5, 5 and 2
    opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=0.05, decay_biases=decay_biases)
    r = np.random.default_rng(1)
    expected = {name: (w.copy(), np.zeros_like(w)) for name, w, _, _ in params}
    for step, lr in enumerate([0.1, 0.1, 0.01]):   # includes a learning-rate change
        opt.lr = lr
        for name, w, dw, _ in params:
            dw[...] = r.standard_normal(w.shape)
            ew, ev = expected[name]
            decay = 0.05 if (name.endswith(".W") or decay_biases) else 0.0
            ev[...] = 0.9 * ev - decay * lr * ew - lr * dw       # v <- 0.9 v - 0.0005 e w - e dL/dw
            ew += ev                                            # w <- w + v
        opt.step()
        for name, w, _, _ in params:
            assert_close(w, expected[name][0], rtol=1e-12, what=f"{name} step {step}")


@pytest.mark.parametrize("decay_biases", [False, True])
def test_sgd_over_packed_parameters_is_the_update_array_by_array(decay_biases):
    """The update over each device's flat arrays (model.flat) against the same update one
    parameter array at a time, in pieces of 1000 entries: bitwise equal, weights and momentum."""
    config = Config(input_size=67, image_size=67, batch_size=2, num_classes=10, dtype="float64")
    packed, plain = AlexNet(config), AlexNet(config)
    for net in (packed, plain):
        for device in net.devices:
            device.update_elements = 1000
    opts = [PackedSGD(net.parameters(), 0.01, 0.9, 0.0005, decay_biases, flat=flat)
            for net, flat in ((packed, packed.flat), (plain, ()))]
    assert len(opts[0].flat) == 2 and not opts[1].flat
    r = np.random.default_rng(5)
    for _ in range(3):
        grads = {name: r.standard_normal(w.shape) for name, w, _, _ in packed.parameters()}
        for net, opt in zip((packed, plain), opts):
            for name, _, dw, _ in net.parameters():
                dw[...] = grads[name]
            opt.step()
    for (name, w, _, _), (_, w_plain, _, _) in zip(packed.parameters(), plain.parameters()):
        assert np.array_equal(w, w_plain), name
        assert np.array_equal(opts[0].velocity[name], opts[1].velocity[name]), name


def test_packed_parameters_are_the_layers_arrays_until_someone_replaces_them():
    config = Config(input_size=67, image_size=67, batch_size=2, num_classes=10)
    net = AlexNet(config)
    (first, second) = net.flat
    assert first.holds() and second.holds()
    conv1 = net.towers[0].conv1
    assert np.shares_memory(conv1.params["W"], first.weights) and np.shares_memory(conv1.grads["b"], first.grads)
    assert first.bias_start < first.weights.size       # weights first, then the biases
    conv1.grads["W"] = np.ones_like(conv1.grads["W"])  # as the ranks' gradient buckets do
    assert not first.holds()
    opt = PackedSGD(net.parameters(), flat=net.flat)
    assert list(opt.flat) == [id(second.device)]      # the update, too, only where it still holds


def test_sgd_state_restores_exactly():
    params = fake_parameters()
    opt = SGD(params, lr=0.1)
    for _, w, dw, _ in params:
        dw[...] = 1.5
    opt.step()
    saved_w = [w.copy() for _, w, _, _ in params]
    state = opt.state_dict()
    opt.step()
    after = [w.copy() for _, w, _, _ in params]
    # Restore weights and momentum, step again: bitwise the same.
    for (_, w, _, _), s in zip(params, saved_w):
        w[...] = s
    fresh = SGD(params, lr=0.5)
    fresh.load_state_dict(state)
    fresh.step()
    for (_, w, _, _), a in zip(params, after):
        assert np.array_equal(w, a)


# --------------------------------------------------------------------------- devices

def test_cpu_towers_get_a_device_each_and_run_side_by_side():
    d = backend.tower_devices("cpu")
    assert len(d) == 2 and d[0] is not d[1] and d[0].xp is np
    x = np.ones(3)
    assert backend.move(x, d[1]) is x          # the same memory: crossing is free
    assert backend.SideBySide(d).parallel
    assert not backend.SideBySide([d[0], d[0]]).parallel
    net = AlexNet(SMALL, d)
    images, labels = batch(SMALL)
    net.forward_loss(images, labels)
    assert net.crossings() == {"conv3": 0, "fc6": 0, "fc7": 0, "fc8": 0}


def test_asking_for_a_gpu_without_one_is_a_one_line_error():
    if backend.gpu_available():
        pytest.skip("a GPU is available here")
    with pytest.raises(DeviceError) as info:
        backend.tower_devices("gpu")
    message = str(info.value)
    assert "\n" not in message and "gpu" in message.lower()
    assert backend.tower_devices("auto")[0].name == "cpu"


def test_config_round_trip_and_architecture_check():
    cfg = SMALL.replace(conv_channels=[4, 8, 8, 8, 6])   # lists, as JSON gives them back
    assert Config.from_dict(cfg.to_dict()) == cfg == SMALL
    assert SMALL.architecture_differences(SMALL.replace(lr=0.5)) == []
    assert SMALL.architecture_differences(SMALL.replace(num_classes=6)) == [("num_classes", 5, 6)]
    with pytest.raises(ValueError, match="divide"):
        Config(conv_channels=(95, 256, 384, 384, 256))


def test_inference_gives_the_test_time_logits_without_backward_arrays():
    images, _ = batch(SMALL, n=2)
    trained = AlexNet(SMALL)
    expected = trained.forward(images, train=False).copy()
    fresh = AlexNet(SMALL)
    assert np.array_equal(fresh.infer(images), expected)
    assert np.array_equal(trained.infer(images), expected)   # after a forward that kept them, too
    buffers = [name for _, layer in fresh.named_layers() for name in vars(layer).get("_buffers", {})]
    buffers += [name for tower in fresh.towers for layer in (tower.pool1, tower.pool2, tower.pool5)
                for name in vars(layer).get("_buffers", {})]
    assert not [name for name in buffers if "winner" in name], buffers
    with pytest.raises(ValueError, match="cannot train"):
        fresh.forward(images, train=True, infer=True)
    with pytest.raises(RuntimeError, match="infer keeps nothing"):
        trained.forward_loss(images, np.zeros(2, int))   # the loss alone works,
        trained.infer(images)
        trained.backward()                               # but not backward after infer


def test_a_network_for_inference_frees_its_gradients_and_gives_the_same_logits():
    images, labels = batch(SMALL)
    plain, light = AlexNet(SMALL), AlexNet(SMALL).for_inference()
    assert all(dw is None for _, _, dw, _ in light.parameters())
    assert all(layer.grads == {} for _, layer in light.named_layers())
    np.testing.assert_array_equal(light.infer(images), plain.infer(images))
    light.forward_loss(images, labels, train=False)
    with pytest.raises(RuntimeError, match="opened for inference"):
        light.backward()
