"""A device's output buffers and workspace (alexnet_np.nn.memory): what the layers rely on."""
import numpy as np
import pytest

from alexnet_np.nn.backend import Device
from alexnet_np.config import Config
from alexnet_np.nn.model import AlexNet


def test_outputs_alternate_between_two_buffers():
    memory = Device().memory
    a = memory.output((3, 4), np.float32)
    b = memory.output((2, 5), np.float64)
    c = memory.output((3, 4), np.float32)
    assert not np.shares_memory(a, b)
    assert np.shares_memory(a, c)                 # the third output takes the first buffer again
    assert (a.shape, a.dtype, b.shape, b.dtype) == ((3, 4), np.float32, (2, 5), np.float64)
    assert memory.is_output(b) and memory.is_output(c) and not memory.is_output(np.zeros(3))


def test_an_output_larger_than_its_buffer_gets_a_larger_one_and_keeps_the_other():
    memory = Device().memory
    a = memory.output((4,), np.float32)
    memory.output((4,), np.float32)
    a[...] = 7
    big = memory.output((1000,), np.float32)      # the first buffer's turn, too small: replaced
    big[...] = 1
    assert big.shape == (1000,) and not np.shares_memory(a, big)
    assert memory.nbytes() == 4000 + 16


def test_work_is_given_back_when_its_workspace_ends_and_nests():
    memory = Device().memory
    for call in range(2):   # the first call makes the workspace as large as it needed
        with memory.workspace():
            a = memory.work((10,), np.float32)
            with memory.workspace():
                b = memory.work((10,), np.float32)
                assert not np.shares_memory(a, b)     # both taken: apart
            with memory.workspace():
                c = memory.work((10,), np.float32)
            assert np.shares_memory(b, c) == (call == 1)   # b was given back: c takes its place
            a[...], c[...] = 1, 2
            assert (a == 1).all()


def test_the_workspace_grows_to_what_one_call_needed_and_then_holds_it():
    memory = Device().memory
    for _ in range(2):
        with memory.workspace():
            first = memory.work((1000,), np.float64)   # the first call: the workspace is made for this
            more = memory.work((1000,), np.float64)    # past its end: an array of its own for now
            first[...], more[...] = 1, 2
            assert not np.shares_memory(first, more) and (first == 1).all()
    # the second call found a workspace of 8000 bytes, 192 to the next 256-byte boundary and
    # 8000 more: both in it
    assert memory.nbytes() == 8192 + 8000
    with memory.workspace():
        assert np.shares_memory(memory.work((1000,), np.float64), memory._arena)


def test_work_outside_a_workspace_is_refused():
    with pytest.raises(RuntimeError, match="workspace"):
        Device().memory.work((3,), np.float32)


def test_training_steps_reuse_the_same_memory_after_the_first():
    config = Config(input_size=67, image_size=67, batch_size=4, num_classes=10)
    net = AlexNet(config)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 3, 67, 67)).astype(np.float32)

    def step():
        net.forward_loss(images, rng.integers(0, 10, 4), train=True)
        net.backward()
        return [[id(b) for b in (*d.memory._outputs, d.memory._arena)] for d in net.devices]

    step()
    held = step()                 # the second step: the workspace has grown to what a step needs
    assert step() == held         # from then on the same arrays, nothing allocated afresh


def test_towers_on_one_device_keep_a_stage_output_the_other_tower_would_overwrite():
    """Inference with Caffe's LRN across towers ends a stage with a ReLU's output, still in the
    device's output buffers; on one shared device the second tower's stage would overwrite it
    before the exchange reads it, unless the tower copies it (``Tower.forward``)."""
    config = Config(input_size=67, image_size=67, batch_size=4, num_classes=10, lrn_across_towers=True,
                    dtype="float64")
    images = np.random.default_rng(1).standard_normal((4, 3, 67, 67))
    shared = Device()
    one_device = AlexNet(config, [shared, shared])
    two_devices = AlexNet(config)
    two_devices.load_state_dict(one_device.state_dict())
    expected = two_devices.forward(images, train=False).copy()   # keeps its outputs: no buffers reused
    # float64: the GEMMs' summation order (side by side, or one after the other) is all that differs
    np.testing.assert_allclose(one_device.infer(images), expected, rtol=1e-10, atol=1e-12)
