"""Caffe's LRN over both towers' maps (``Config.lrn_across_towers``, used by converted BVLC models):
whole-network gradients against float64 finite differences, placement on two GPUs of the CuPy stand-in,
and the forward pass against one LRN over all channels computed directly.

Dimensions: N batch, C channels, S input side.
"""
import numpy as np

from alexnet_np.nn.layers import LocalResponseNorm
from alexnet_np.nn.backend import Device
from alexnet_np.nn.model import AlexNet
from gradcheck import check_parameter_directions
from standin_gpus import standin_gpus
from test_model import SMALL, batch

ACROSS = SMALL.replace(lrn_across_towers=True)


def test_whole_network_gradients_with_lrn_across_towers():
    net = AlexNet(ACROSS)
    images, labels = batch(ACROSS)

    def loss():
        return float(net.forward_loss(images, labels, train=True))

    loss()
    net.backward()
    check_parameter_directions(net, loss)


def test_lrn1_is_one_lrn_over_all_maps_and_differs_from_per_tower():
    """After LRN1, tower g's maps equal the slice g of one LRN over all conv1 maps."""
    net = AlexNet(ACROSS)
    images, _ = batch(ACROSS)
    x = [t.take_images(images) for t in net.towers]
    x = net.towers_forward("conv1_relu", x, False)
    relu1 = np.concatenate(x, axis=0)                                        # (C1, N, H, W) both towers
    whole = LocalResponseNorm(Device(), ACROSS.lrn_size, ACROSS.lrn_k, ACROSS.lrn_alpha,
                              ACROSS.lrn_beta, ACROSS.lrn_alpha_over_n).forward(relu1.copy())
    exchanged = net.exchange_lrn1.forward(x)
    C = relu1.shape[0] // 2
    for g, tower in enumerate(net.towers):
        mine = tower.lrn1_to_relu2[1].forward(tower.lrn1_to_relu2[0].forward(exchanged[g]))
        np.testing.assert_allclose(mine, whole[g * C:(g + 1) * C], rtol=1e-12)
    per_tower = LocalResponseNorm(Device(), ACROSS.lrn_size, ACROSS.lrn_k, ACROSS.lrn_alpha,
                                  ACROSS.lrn_beta, ACROSS.lrn_alpha_over_n).forward(relu1[:C].copy())
    assert np.abs(per_tower[-1] - whole[C - 1]).max() > 1e-3    # the edge map sees the other tower


def test_placement_with_lrn_across_towers():
    d0, d1 = standin_gpus(2)
    net = AlexNet(ACROSS, [d0, d1])
    loss = net.forward_loss(*batch(ACROSS), train=True)
    net.backward()
    assert np.isfinite(float(d0.to_host(loss)))
    for name, w, dw, device in net.parameters():
        owner = d0 if name.startswith(("tower0", "fc8")) else d1
        assert device is owner and owner.holds(w) and owner.holds(dw), name
    assert not d0.xp._rules.broken
    assert net.exchange_lrn1.crossings == 4 and net.exchange_lrn2.crossings == 4
