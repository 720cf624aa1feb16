"""Checkpoints: a faithful round trip, atomic writes, and clear refusals (alexnet_np/train/checkpoint.py)."""
import json
import os

import numpy as np
import pytest

from alexnet_np.train import checkpoint
from alexnet_np.train.checkpoint import CheckpointError
from alexnet_np.nn.model import AlexNet
from alexnet_np.nn.optim import SGD

from test_train_helpers import TINY


def trained(config=TINY, steps=2):
    """A model and optimiser after ``steps`` SGD steps on random data (momentum and dropout used)."""
    model = AlexNet(config)
    opt = SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    rng = np.random.default_rng(5)
    for _ in range(steps):
        x = rng.standard_normal((4, 3, config.input_size, config.input_size)).astype(np.float32) * 50
        y = rng.integers(0, config.num_classes, 4)
        model.forward_loss(x, y, train=True)
        model.backward()
        opt.step()
    return model, opt


def save_one(folder, name="ck.npz", config=TINY):
    model, opt = trained(config)
    path = os.path.join(folder, name)
    checkpoint.save(path, model, opt, {"position": {"epoch": 1, "batch": 3, "step": 7}, "extra": [1, 2]})
    return path, model, opt


def test_round_trip_restores_weights_and_momentum(tmp_path):
    path, model, opt = save_one(tmp_path)
    ck = checkpoint.load(path, TINY)
    assert ck.position == (1, 3, 7) and ck.meta["extra"] == [1, 2] and ck.config == TINY
    fresh = AlexNet(TINY)
    fresh_opt = SGD(fresh.parameters(), lr=0.5)
    checkpoint.restore(ck, fresh, fresh_opt)
    for (name, w, _, _), (_, w2, _, _) in zip(model.parameters(), fresh.parameters()):
        assert np.array_equal(w, w2), name
        assert np.array_equal(opt.velocity[name], fresh_opt.velocity[name]), name
    assert fresh_opt.lr == opt.lr
    assert np.abs(fresh_opt.velocity["fc8.W"]).sum() > 0      # the momentum is not trivially zero
    assert "generators" not in ck.meta                         # masks come from (seed, step): nothing to store


def test_a_checkpoint_with_dropout_generator_states_still_loads(tmp_path):
    """Checkpoints written before the masks came from (seed, step) held generator states."""
    model, opt = trained(TINY)
    path = os.path.join(tmp_path, "old.npz")
    old_state = np.random.default_rng(0).bit_generator.state
    checkpoint.save(path, model, opt, {"position": {"epoch": 0, "batch": 2, "step": 2},
                                       "generators": {"tower0.drop6": old_state, "tower1.drop7": None}})
    ck = checkpoint.load(path, TINY)
    fresh = AlexNet(TINY)
    fresh_opt = SGD(fresh.parameters(), lr=0.5)
    checkpoint.restore(ck, fresh, fresh_opt)
    assert np.array_equal(fresh.state_dict()["fc8.W"], model.state_dict()["fc8.W"])


def test_written_atomically_and_old_file_kept_on_failure(tmp_path, monkeypatch):
    path, model, opt = save_one(tmp_path)
    before = open(path, "rb").read()
    assert [f for f in os.listdir(tmp_path) if f != "ck.npz"] == []   # no temporary left

    def broken_savez(f, **arrays):
        f.write(b"half a checkpoint")
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError):
        checkpoint.save(path, model, opt, {"position": {"epoch": 2, "batch": 0, "step": 9}})
    assert open(path, "rb").read() == before
    assert [f for f in os.listdir(tmp_path) if f != "ck.npz"] == []


def assert_one_line(error, *words):
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_other_configuration_is_refused_naming_the_fields(tmp_path):
    path, _, _ = save_one(tmp_path)
    other = TINY.replace(conv_channels=(8, 8, 8, 8, 8), lrn_alpha_over_n=True)
    with pytest.raises(CheckpointError) as error:
        checkpoint.load(path, other)
    assert_one_line(error, path, "another configuration", "conv_channels: 16,32,32,32,32 in the checkpoint, 8,8,8,8,8 here",
                    "lrn_alpha_over_n: False in the checkpoint, True here")
    # Fields that do not change the weights (learning, data) are not refused.
    checkpoint.load(path, TINY.replace(lr=0.5, epochs=99, batch_size=3))


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupt_files_are_refused(tmp_path, damage):
    path, _, _ = save_one(tmp_path)
    data = bytearray(open(path, "rb").read())
    if damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF     # inside an array: the zip CRC catches it
    elif damage == "garbage":
        data = bytearray(b"this is not a checkpoint at all" * 10)
    else:
        data = bytearray()
    open(path, "wb").write(bytes(data))
    with pytest.raises(CheckpointError) as error:
        checkpoint.load(path)
    if damage in ("garbage", "empty"):   # no archive at all: never handed to a reader that unpickles
        assert_one_line(error, path, "not an alexnet_np checkpoint (not an .npz archive)")
    else:
        assert_one_line(error, path, "corrupt or truncated")
    assert "pickle" not in str(error.value)


def test_foreign_npz_and_missing_file_are_refused(tmp_path):
    path = os.path.join(tmp_path, "foreign.npz")
    np.savez(path, weights=np.zeros(3))
    with pytest.raises(CheckpointError) as error:
        checkpoint.load(path)
    assert_one_line(error, "not an alexnet_np checkpoint")
    meta = np.frombuffer(json.dumps({"format": "something else"}).encode(), dtype=np.uint8)
    np.savez(path, meta=meta)
    with pytest.raises(CheckpointError) as error:
        checkpoint.load(path)
    assert_one_line(error, "format")
    with pytest.raises(CheckpointError) as error:
        checkpoint.load(os.path.join(tmp_path, "nothing.npz"))
    assert_one_line(error, "no such file")
