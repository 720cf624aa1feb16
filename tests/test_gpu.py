"""The same layers and model on the GPU(s) with CuPy, against NumPy (conventions 10).

Skipped where CuPy or a usable GPU is absent (the CI machine, a laptop). On a machine with
two GPUs the towers go to GPU 0 and 1 and the crossings are counted; with one, both towers
share it. CuPy's warning about a kernel reading another GPU's memory (a forgotten explicit
copy: peer access enabled behind our back) is turned into an error.
"""
import warnings

import numpy as np
import pytest

from alexnet_np.nn import backend
from alexnet_np.parallel import distributed
from alexnet_np.nn.backend import Device
from alexnet_np.parallel.buckets import GradientBuckets
from alexnet_np.config import Config
from alexnet_np.nn.layers import Conv2D, Dropout, LocalResponseNorm, MaxPool, Tanh
from alexnet_np.nn.model import AlexNet
from alexnet_np.nn.optim import SGD
from gradcheck import assert_close

pytestmark = pytest.mark.skipif(not backend.gpu_available(), reason="no usable GPU (CuPy)")

SMALL = Config(num_classes=5, input_size=67, conv_channels=(4, 8, 8, 8, 6), fc_units=(8, 6),
               lrn_alpha=0.3, init_std=0.1, dtype="float64", seed=3)


@pytest.fixture(autouse=True)
def peer_reads_are_errors():
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*peer.*")
        yield


def batch(n=3, seed=0):
    r = np.random.default_rng(seed)
    return (r.standard_normal((n, 3, SMALL.input_size, SMALL.input_size)),
            r.integers(0, SMALL.num_classes, n))


def one_step(devices, steps=1):
    """Loss, logits and every gradient (on the host) after ``steps`` SGD steps; no dropout."""
    net = AlexNet(SMALL, devices)
    images, labels = batch()
    opt = SGD(net.parameters(), lr=0.01)
    for _ in range(steps):
        loss = float(net.forward_loss(images, labels, train=False))
        net.backward()
        opt.step()
    host = devices[0].to_host
    grads = {name: np.asarray(device.to_host(dw)) for name, _, dw, device in net.parameters()}
    return loss, np.asarray(host(net.logits)), grads, net


def test_model_on_the_gpus_matches_numpy():
    gpus = backend.tower_devices("gpu", SMALL.towers)
    loss_gpu, logits_gpu, grads_gpu, net = one_step(gpus, steps=2)
    loss_cpu, logits_cpu, grads_cpu, _ = one_step([Device(), Device()], steps=2)
    assert loss_gpu == pytest.approx(loss_cpu, rel=1e-10)
    assert_close(logits_gpu, logits_cpu, rtol=1e-9, atol=1e-12, what="logits")
    for name in grads_cpu:
        assert_close(grads_gpu[name], grads_cpu[name], rtol=1e-8, atol=1e-12, what=name, scale_atol=True)
    if gpus[0] is not gpus[1]:   # two GPUs: data crossed exactly where Figure 2 says, both ways
        assert net.crossings() == {"conv3": 8, "fc6": 8, "fc7": 8, "fc8": 4}   # two steps
    else:
        assert net.crossings() == {"conv3": 0, "fc6": 0, "fc7": 0, "fc8": 0}


def test_a_training_step_with_dropout_on_the_gpus_equals_the_cpus():
    """Dropout masks are a function of (seed, step, layer, tower, row, column), the same bits
    on every device: a training step in float32 agrees with NumPy's to float32 rounding."""
    config = SMALL.replace(dtype="float32")
    images, labels = batch(n=4)
    results = []
    for devices in (backend.tower_devices("gpu", SMALL.towers), [Device(), Device()]):
        net = AlexNet(config, devices)
        loss = net.forward_loss(images, labels, train=True, step=3)
        net.backward()
        SGD(net.parameters()).step()
        results.append((float(devices[0].to_host(loss)), net.state_dict()))
    (loss_gpu, weights_gpu), (loss_cpu, weights_cpu) = results
    assert loss_gpu == pytest.approx(loss_cpu, rel=1e-5)
    for name in weights_cpu:
        assert_close(weights_gpu[name], weights_cpu[name], rtol=1e-4, atol=1e-6, what=name, scale_atol=True)


def test_dropout_masks_on_a_gpu_are_numpys_bitwise():
    gpu = backend.tower_devices("gpu", 1)[0]
    masks = []
    for device in (gpu, Device()):
        drop = Dropout(device, 0.5, (0, 0xD0, 6, 1))
        drop.position = (11, 32, 128)
        with device:
            masks.append(np.asarray(device.to_host(drop.draw_mask((64, 2048)))))
    assert np.array_equal(masks[0], masks[1])


@pytest.mark.parametrize("make", [
    lambda d, r: Conv2D(d, r.standard_normal((5, 3, 3, 3)), r.standard_normal(5), stride=2, pad=1),
    lambda d, r: LocalResponseNorm(d, size=5, k=1.0, alpha=2.0, beta=0.75),
    lambda d, r: MaxPool(d, 3, 2),
    lambda d, r: MaxPool(d, 2, 2),     # §3.4's non-overlapping comparison, on an odd map
    lambda d, r: Tanh(d),              # §3.1's comparison
], ids=["conv", "lrn", "maxpool", "maxpool-2-2", "tanh"])
def test_layers_on_a_gpu_match_numpy(make):
    gpu = backend.tower_devices("gpu", 1)[0]
    x = np.random.default_rng(1).standard_normal((3, 2, 9, 9))   # (C, N, H, W)
    results = []
    for device in (gpu, Device()):
        layer = make(device, np.random.default_rng(2))
        with device:
            y = layer.forward(device.receive(x), True)
            dy = device.receive(np.random.default_rng(3).standard_normal(tuple(y.shape)))
            dx = layer.backward(dy)
            results.append([np.asarray(device.to_host(a)).copy() for a in (y, dx)]
                           + [np.asarray(device.to_host(g)).copy() for g in layer.grads.values()])
    for gpu_array, cpu_array in zip(*results):
        assert_close(gpu_array, cpu_array, rtol=1e-10, atol=1e-12, what="gpu vs numpy")


# --------------------------------------------------------------------------- ranks (never run: written without a GPU)

class OneRank(distributed.World):
    """One rank whose GPU gradients go through a GPU reducer: a communicator of one adds
    nothing, so the sums must leave every gradient as it was, through the real calls."""

    def __init__(self, reducer):
        self.make_reducer = reducer

    def reducer(self, device):
        return self.make_reducer(self, device)

    def wait(self, requests):
        for request in requests:
            if request is not None:
                request.wait()


@pytest.mark.parametrize("reducer", ["nccl", "host copies"])
def test_gradient_buckets_on_the_gpus(reducer):
    if reducer == "nccl" and distributed.nccl_missing():
        pytest.skip(distributed.nccl_missing())
    make = distributed.NcclReducer if reducer == "nccl" else distributed.HostReducer
    gpus = backend.tower_devices("gpu", SMALL.towers)
    images, labels = batch()
    plain = AlexNet(SMALL, gpus)
    plain.forward_loss(images, labels, train=True)
    plain.backward()
    net = AlexNet(SMALL, gpus)
    buckets = GradientBuckets(net, OneRank(make))
    net.forward_loss(images, labels, train=True)
    net.backward(finished=buckets.finished)
    buckets.wait()
    for (name, _, grad, device), (_, _, expected, _) in zip(net.parameters(), plain.parameters()):
        assert device.holds(grad), name
        assert np.array_equal(device.to_host(grad), device.to_host(expected)), name


def test_dropout_masks_of_a_global_batch_split_in_rows_on_a_gpu():
    gpu = backend.tower_devices("gpu", 1)[0]
    with gpu:
        x = gpu.receive(np.ones((12, 30)))
        whole = Dropout(gpu, 0.5, (3, 6, 1))
        whole.position = (7, 0, None)
        full = gpu.to_host(whole.forward(x, True) != 0)                      # (12, 30)
        again = gpu.to_host(whole.forward(x, True) != 0)                     # the same step: the same mask
        parts = []
        for first in (0, 4, 8):
            part = Dropout(gpu, 0.5, (3, 6, 1))
            part.position = (7, first, 12)
            parts.append(gpu.to_host(part.forward(x[first:first + 4], True) != 0))
    assert np.array_equal(full, again) and np.array_equal(np.concatenate(parts), full)
    assert 0.3 < full.mean() < 0.7
