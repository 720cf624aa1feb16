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


def test_resume_after_max_steps_goes_on_to_the_last_epoch(cache, tmp_path, capsys):
    """The hint printed at --max-steps ("continue with --resume RUN"), followed as printed, runs
    to the run's last epoch, not one step more (the limit that stopped the run is not kept)."""
    whole = str(tmp_path / "whole")
    assert train_run(cache, whole, "--no-figures") == 0
    parts = str(tmp_path / "parts")
    assert train_run(cache, parts, "--no-figures", "--max-steps", "4") == 0
    assert f"continue with --resume {parts}" in capsys.readouterr().out
    assert train.main(["--resume", parts]) == 0
    printed = capsys.readouterr().out
    assert "step 4, lr 0.01; training to the end of epoch 3" in printed and "stopped at" not in printed
    assert load(os.path.join(parts, "last.npz")).position == (3, 0, 3 * STEPS_PER_EPOCH)
    a, b = os.path.join(whole, "last.npz"), os.path.join(parts, "last.npz")
    assert_bitwise_equal(arrays_of(a), arrays_of(b))
    assert comparable(load(a).meta) == comparable(load(b).meta)


def test_resume_keeps_a_limit_not_reached_and_refuses_one_passed(cache, tmp_path, capsys):
    parts = str(tmp_path / "parts")
    assert train_run(cache, parts, "--no-figures", "--max-steps", "4") == 0
    assert train.main(["--resume", parts, "--max-steps", "4"]) == 2   # 4 steps are taken already
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --max-steps 4: more than the 4 steps the run has taken (or 0: no limit)"]
    assert train.main(["--resume", parts, "--max-steps", "5"]) == 0
    # A run stopped before its own limit (Ctrl-C, a crash) keeps that limit when resumed.
    assert train.resumed_limit(train.Options(max_steps=9), None, 5).max_steps == 9
    assert train.resumed_limit(train.Options(max_steps=9), None, 9).max_steps == 0
    assert load(os.path.join(parts, "last.npz")).position == (0, 5, 5)


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
