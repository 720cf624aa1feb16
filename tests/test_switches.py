"""The paper's tricks as switches (issue 9): each changes what it should and nothing else.

activation relu|tanh (§3.1), towers 1 with §3.2's comparison net, lrn on/off (§3.3),
pool_size/pool_stride (§3.4), random_crop (§4.1; flip, lighting_std and dropout existed).
"""
import argparse
import itertools

import numpy as np
import pytest

from alexnet_np.data import augment
from alexnet_np.nn.backend import Device
from alexnet_np.config import Config, add_config_arguments, config_from_arguments, one_tower_comparison
from alexnet_np.nn.layers import LocalResponseNorm, MaxPool, ReLU, Tanh
from alexnet_np.nn.model import AlexNet, layer_sizes
from alexnet_np.paper.summary import format_summary
from gradcheck import assert_close, check_parameter_directions, numerical_gradient

CPU = Device()
SMALL = Config(num_classes=5, input_size=67, conv_channels=(4, 8, 8, 8, 6), fc_units=(8, 6),
               lrn_alpha=0.3, init_std=0.1, dtype="float64", seed=3)


def batch(config, n=3, seed=0):
    r = np.random.default_rng(seed)
    images = r.standard_normal((n, 3, config.input_size, config.input_size))   # (N, 3, S, S)
    return images, r.integers(0, config.num_classes, n)                        # (N,)


def layer_gradients(layer, x, seed=1):
    """dx of ``layer`` against float64 centred differences, random upstream gradient."""
    dout = np.random.default_rng(seed).standard_normal(layer.forward(x).shape)
    layer.forward(x)
    dx = layer.backward(dout).copy()
    numeric = numerical_gradient(lambda: float(np.sum(layer.forward(x) * dout)), x)
    assert_close(dx, numeric, rtol=1e-6, atol=1e-8, what="dx", scale_atol=True)


# --------------------------------------------------------------------------- layers

def test_tanh_forward_and_gradient():
    x = np.random.default_rng(2).standard_normal((3, 2, 4, 5)) * 2      # into the saturating range
    tanh = Tanh(CPU)
    assert_close(tanh.forward(x), np.tanh(x), rtol=1e-15, what="tanh")
    assert tanh.forward(np.array([30.0, -30.0])).tolist() == [1.0, -1.0]
    layer_gradients(tanh, x)


def pool_loops(x, size, stride):
    """Max pooling by loops over every output pixel (floor: windows inside the map only)."""
    C, N, H, W = x.shape
    OH, OW = (H - size) // stride + 1, (W - size) // stride + 1
    y = np.zeros((C, N, OH, OW))
    for c, n, i, j in itertools.product(range(C), range(N), range(OH), range(OW)):
        y[c, n, i, j] = x[c, n, i * stride:i * stride + size, j * stride:j * stride + size].max()
    return y


@pytest.mark.parametrize("shape", [(2, 2, 7, 9), (1, 1, 55, 55), (2, 1, 13, 6)])
def test_non_overlapping_pooling_against_loops_and_gradients(shape):
    """§3.4's comparison, 2x2 windows at stride 2, on odd maps: the last row / column is
    left out (floor) and gets no gradient."""
    x = np.random.default_rng(4).permutation(np.prod(shape)).reshape(shape).astype(np.float64) / 7
    pool = MaxPool(CPU, 2, 2)
    y = pool.forward(x)
    assert_close(y, pool_loops(x, 2, 2), rtol=0, atol=0, what="pool 2/2")
    if shape[2] == 55:
        assert y.shape[2:] == (27, 27)
        return                                 # too large for entry-wise differences
    layer_gradients(pool, x)
    dx = pool.backward(np.ones(y.shape))
    assert np.all(dx[:, :, 2 * y.shape[2]:, :] == 0) and np.all(dx[:, :, :, 2 * y.shape[3]:] == 0)
    assert dx.sum() == y.size                  # each window sends its gradient to one pixel


def test_both_poolings_give_the_papers_map_sizes():
    overlapping = layer_sizes(Config())
    plain = layer_sizes(Config(pool_size=2, pool_stride=2))
    for sizes in (overlapping, plain):
        assert (sizes["pool1"], sizes["pool2"], sizes["pool5"]) == (27, 13, 6)
    assert layer_sizes(SMALL.replace(pool_size=2))["pool5"] == layer_sizes(SMALL)["pool5"] == 1
    # Overlapping windows must cover the maps exactly (conventions 15): 223 gives conv1 54, which 3x3
    # windows at stride 2 do not fit; 2x2 windows at stride 2 tile it (27, 13, 6).
    with pytest.raises(ValueError, match="pool1 .* overlapping"):
        layer_sizes(Config(input_size=223))
    assert layer_sizes(Config(input_size=223, pool_size=2))["pool5"] == 6


# --------------------------------------------------------------------------- the model

def kinds(net):
    return [type(layer).__name__.removeprefix("Fast") for tower in net.towers for stage in tower.stages for layer in stage]


def test_activation_lrn_and_pooling_change_the_layers_not_the_weights():
    base = AlexNet(SMALL)
    shapes = {name: p.shape for name, p, _, _ in base.parameters()}
    for change, expect in [({"activation": "tanh"}, lambda k: k.count("Tanh") == 14 and "ReLU" not in k),
                           ({"lrn": False}, lambda k: "LocalResponseNorm" not in k and k.count("ReLU") == 14),
                           ({"pool_size": 2}, lambda k: k.count("MaxPool") == 6)]:
        net = AlexNet(SMALL.replace(**change))
        assert expect(kinds(net)), change
        assert {name: p.shape for name, p, _, _ in net.parameters()} == shapes, change
        # The same seed draws the same weights: the switch changes nothing else.
        for (name, w, _, _), (_, w0, _, _) in zip(net.parameters(), base.parameters()):
            assert np.array_equal(w, w0), (change, name)
    assert kinds(base).count("LocalResponseNorm") == 4 and kinds(base).count("ReLU") == 14
    pools = [layer for layer in kinds(AlexNet(SMALL.replace(pool_size=2))) if layer == "MaxPool"]
    assert len(pools) == 6
    tower = AlexNet(SMALL.replace(pool_size=2)).towers[0]
    assert (tower.pool1.size, tower.pool1.stride, tower.pool5.size) == (2, 2, 2)


def test_the_switches_change_the_output():
    images, labels = batch(SMALL)
    base = float(AlexNet(SMALL).forward_loss(images, labels, train=False))
    for change in ({"activation": "tanh"}, {"lrn": False}, {"pool_size": 2}):
        assert float(AlexNet(SMALL.replace(**change)).forward_loss(images, labels, train=False)) != base


def counted_parameters(config):
    """Parameters from the layer shapes of Figure 2, written out here, independently of the model."""
    G = config.towers
    C1, C2, C3, C4, C5 = config.conv_channels
    F6, F7 = config.fc_units
    P5 = layer_sizes(config)["pool5"]
    convs = [(C1, 3, 11), (C2, C1 // G, 5), (C3, C2, 3), (C4, C3 // G, 3), (C5, C4 // G, 3)]
    total = sum(f * c * k * k + f for f, c, k in convs)
    return total + (C5 * P5 * P5 + 1) * F6 + (F6 + 1) * F7 + (F7 + 1) * config.num_classes


def test_one_tower_comparison_net_of_section_3_2():
    paper = Config(dtype="float32")
    one = one_tower_comparison(paper)
    # Footnote 2 of the paper: conv5 and the fully connected layers are not halved.
    assert one.towers == 1 and one.conv_channels == (48, 128, 192, 192, 256) and one.fc_units == paper.fc_units
    net = AlexNet(one)
    assert len(net.towers) == 1
    assert net.num_parameters() == counted_parameters(one) == 59_798_312
    assert counted_parameters(paper) == 60_965_224
    shapes = {name: p.shape for name, p, _, _ in net.parameters()}
    assert shapes["tower0.conv2.W"] == (128, 48, 5, 5)       # one tower: every kernel sees all of conv1
    assert shapes["tower0.conv4.W"] == (192, 192, 3, 3)
    assert shapes["tower0.conv5.W"] == (256, 192, 3, 3)
    assert shapes["tower0.fc6.W"] == (4096, 9216)


def test_one_tower_net_runs_with_no_crossings_and_correct_gradients():
    config = one_tower_comparison(SMALL)
    net = AlexNet(config)
    assert net.num_parameters() == counted_parameters(config)
    images, labels = batch(config)

    def loss():
        return float(net.forward_loss(images, labels, train=False))

    loss()
    net.backward()
    assert net.crossings() == {"conv3": 0, "fc6": 0, "fc7": 0, "fc8": 0}
    check_parameter_directions(net, loss)


@pytest.mark.parametrize("change,rel", [({"activation": "tanh"}, 1e-3), ({"pool_size": 2, "pool_stride": 2}, 1e-5),
                                        ({"lrn": False}, 1e-5)], ids=["tanh", "pool-2-2", "no-lrn"])
def test_whole_network_gradients_with_a_switch(change, rel):
    """Every parameter along a random direction. tanh: saturated units (near +-1) make near
    ties inside pooling windows, so a step of 1e-6 can change a window's winner (measured:
    0.03% off on conv2.W, converging as the step shrinks); 0.1% still fails a wrong
    derivative by far (1 - |y| instead of 1 - y^2 is 40-97% off in every layer below fc8)."""
    net = AlexNet(SMALL.replace(**change))
    images, labels = batch(SMALL)

    def loss():
        return float(net.forward_loss(images, labels, train=False))

    loss()
    net.backward()
    check_parameter_directions(net, loss, rel)


# --------------------------------------------------------------------------- data

def test_no_random_crop_gives_centre_crops_and_the_same_flips_and_lighting():
    rng_seed = 5
    on = augment.draw_augmentation(np.random.default_rng(rng_seed), 64, 76, 67)
    off = augment.draw_augmentation(np.random.default_rng(rng_seed), 64, 76, 67, random_crop=False)
    assert len(set(on[0].tolist())) > 3                         # random offsets when on
    assert np.all(off[0] == 4) and np.all(off[1] == 4)          # (76 - 67) // 2, as the test-time crop
    np.testing.assert_array_equal(on[2], off[2])                # flips unchanged
    np.testing.assert_array_equal(on[3], off[3])                # lighting unchanged
    images = np.random.default_rng(0).integers(0, 256, (2, 76, 76, 3), dtype=np.uint8)
    crops = augment.crop_flip(images, np.arange(2), off[0][:2], off[1][:2], np.zeros(2, bool), 67)
    np.testing.assert_array_equal(crops, augment.center_crop(images, 67))


# --------------------------------------------------------------------------- configuration

def test_switches_are_options_architecture_fields_and_printed():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--activation", "tanh", "--no-lrn", "--pool-size", "2", "--pool-stride", "2",
                              "--towers", "1", "--no-random-crop", "--no-flip", "--lighting-std", "0",
                              "--dropout", "0"])
    config = config_from_arguments(args)
    assert (config.activation, config.lrn, config.pool_size, config.pool_stride, config.towers,
            config.random_crop, config.flip, config.lighting_std, config.dropout) == (
        "tanh", False, 2, 2, 1, False, False, 0.0, 0.0)
    assert {"activation", "lrn", "pool_size", "pool_stride", "towers"} <= set(Config.ARCHITECTURE)
    assert not {"random_crop", "flip", "lighting_std"} & set(Config.ARCHITECTURE)
    differing = {field for field, _, _ in Config().architecture_differences(config)}
    assert differing == {"activation", "lrn", "pool_size", "towers", "dropout"}
    assert Config.from_dict(config.to_dict()) == config
    text = format_summary(config)
    assert "activation tanh" in text and "LRN off" in text and "pooling 2/2, non-overlapping" in text
    assert "random crops off" in text and "max 2x2, stride 2" in text and "1 tower," in text
    with pytest.raises(ValueError, match="activation"):
        Config(activation="sigmoid")
    with pytest.raises(ValueError, match="stride"):
        Config(pool_size=2, pool_stride=3)


def test_relu_and_lrn_layers_of_the_paper_by_default():
    tower = AlexNet(SMALL).towers[0]
    assert isinstance(tower.relu1, ReLU) and isinstance(tower.lrn2, LocalResponseNorm)
    assert tower.layer_name(tower.lrn2) == "lrn2" and tower.layer_name(tower.conv1_to_pool2[0]) == "conv1"
