"""Exact resume: a run stopped (by --max-steps or by Ctrl-C) and resumed ends with bitwise the
same weights, momentum, schedule and history as a run that was never stopped (CPU)."""
import json
import os
import signal
import subprocess
import sys

import pytest

import train
from alexnet_np.train.checkpoint import load

from test_train_helpers import TINY_ARGS, arrays_of, assert_bitwise_equal, make_tiny_cache, wait_for_logged_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS_PER_EPOCH = 6   # 60 training images, batch 10


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_tiny_cache(str(tmp_path_factory.mktemp("resume")))


def train_run(cache, out, *extra):
    # --lr-steps 1: the rate drops after epoch 1, so the resumed runs must restore it.
    return train.main(["--data", cache, "--out", out, *TINY_ARGS, "--epochs", "3", "--lr-steps", "1",
                       "--log-every", "1", *extra])


def comparable(meta):
    """The parts of a checkpoint's metadata that must match exactly (not times)."""
    history = [{k: v for k, v in h.items() if k not in ("elapsed_s", "images_per_s", "epoch_train_s")}
               for h in meta["history"]]
    return {"position": meta["position"], "schedule": meta["schedule"], "history": history,
            "counter": meta["counter"], "optimizer": meta["optimizer"],
            "best": meta["best"]}


def test_stopped_and_resumed_equals_uninterrupted(cache, tmp_path):
    whole = str(tmp_path / "whole")
    assert train_run(cache, whole, "--no-figures") == 0
    parts = str(tmp_path / "parts")
    # Stop mid-epoch (step 4), exactly at an epoch's last batch before its validation (step 12),
    # and mid-epoch again (step 14), then run to the end.
    assert train_run(cache, parts, "--no-figures", "--max-steps", "4") == 0
    assert load(os.path.join(parts, "last.npz")).position == (0, 4, 4)
    assert train.main(["--resume", parts, "--max-steps", "12"]) == 0
    assert load(os.path.join(parts, "last.npz")).position == (1, 6, 12)
    assert train.main(["--resume", os.path.join(parts, "last.npz"), "--max-steps", "14"]) == 0
    assert train.main(["--resume", parts, "--max-steps", "0"]) == 0
    a, b = os.path.join(whole, "last.npz"), os.path.join(parts, "last.npz")
    assert_bitwise_equal(arrays_of(a), arrays_of(b))
    assert comparable(load(a).meta) == comparable(load(b).meta)
    assert load(a).meta["schedule"]["drops"] == 1         # the schedule did act in this run
    assert_bitwise_equal(arrays_of(os.path.join(whole, "best.npz")), arrays_of(os.path.join(parts, "best.npz")))
    # A finished run resumed has nothing to do and changes nothing.
    before = open(b, "rb").read()
    assert train.main(["--resume", parts]) == 0
    assert open(b, "rb").read() == before


def test_ctrl_c_saves_and_resume_is_exact(cache, tmp_path):
    """SIGINT to a real train.py process: exit 130 with a checkpoint; resuming it is exact."""
    out = str(tmp_path / "interrupted")
    command = [sys.executable, os.path.join(ROOT, "train.py"), "--data", cache, "--out", out, *TINY_ARGS,
               "--epochs", "1000", "--log-every", "1", "--no-figures"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_logged_steps(process, out)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr
    assert "interrupted at step" in stdout
    epoch, batch, step = load(os.path.join(out, "last.npz")).position
    assert step >= 3 and step < 1000 * 6
    records = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    assert records[-1]["kind"] == "interrupted" and records[-1]["step"] == step

    target = str(step + 3)
    assert train.main(["--resume", out, "--max-steps", target]) == 0
    whole = str(tmp_path / "whole")
    assert train.main(["--data", cache, "--out", whole, *TINY_ARGS, "--epochs", "1000", "--log-every", "1",
                       "--no-figures", "--max-steps", target]) == 0
    assert_bitwise_equal(arrays_of(os.path.join(whole, "last.npz")), arrays_of(os.path.join(out, "last.npz")))
