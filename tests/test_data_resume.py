"""Interrupted preprocessing (killed mid-way) resumes to the same cache, byte for byte.

Dimensions: M images, R stored side, C channels.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from alexnet_np.data.loader import Cache, DataError, is_cache
from alexnet_np.data.prepare import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
R = 64


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """2 classes x 70 textured 640x480 JPEGs in train (one empty file among them), 2 x 12 in val."""
    src = tmp_path_factory.mktemp("resume_src")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    for split, count in [("train", 70), ("val", 12)]:
        for label in ("ants", "bees"):
            (src / split / label).mkdir(parents=True)
            for i in range(count):
                fx, fy, phase = rng.uniform(0.01, 0.2, 2).tolist() + [rng.uniform(0, 6)]
                wave = np.sin(fx * xx + phase) * np.cos(fy * yy)                       # (H, W)
                pixels = (128 + 100 * wave[:, :, None] * rng.uniform(-1, 1, 3)).astype(np.uint8)  # (H, W, C)
                Image.fromarray(pixels).save(src / split / label / f"{i:03d}.JPEG", quality=92)
    (src / "train" / "bees" / "050.JPEG").write_bytes(b"")
    return str(src)


@pytest.fixture(scope="module")
def uninterrupted(source, tmp_path_factory):
    dst = str(tmp_path_factory.mktemp("resume_full") / "cache")
    prepare(source, dst, image_size=R, workers=1, progress=False, print_fn=lambda *a: None)
    return dst


def _files(folder):
    out = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            out[name] = f.read()
    return out


def kill_prepare_midway(source, dst, state_name, image_size=R):
    """Run prepare in a process of its own, kill it (SIGKILL) once ``state_name`` shows progress
    (16 files done); returns ``dst``. Also used by test_ilsvrc.py (a tar as the source)."""
    command = [sys.executable, "-m", "alexnet_np.data.prepare", source, dst, "--image-size", str(image_size),
               "--workers", "1", "--checkpoint-seconds", "0", "--no-progress"]
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = os.path.join(dst, state_name)
    deadline = time.time() + 60
    try:
        while time.time() < deadline and process.poll() is None:
            if os.path.exists(state):
                try:
                    with np.load(state) as saved:
                        if int(saved["next"]) >= 16:
                            break
                except (OSError, ValueError, KeyError):
                    pass
            time.sleep(0.002)
        assert process.poll() is None, "prepare finished before it could be interrupted"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the run and its worker processes
        process.wait()
    return dst


@pytest.mark.parametrize("split", ["train", "val"])
def test_killed_then_rerun_gives_the_same_cache(source, uninterrupted, tmp_path, split):
    dst = kill_prepare_midway(source, str(tmp_path / "cache"), f".{split}.state.npz")
    assert not is_cache(dst), "an interrupted run must not look complete"
    with pytest.raises(DataError, match="not a finished data cache"):
        Cache(dst)
    lines = []
    prepare(source, dst, image_size=R, workers=2, progress=False, print_fn=lines.append)
    assert any(line.startswith(f"{split}: resuming at file ") for line in lines), lines
    if split == "val":
        assert "train: already written, skipping" in lines
    ours, reference = _files(dst), _files(uninterrupted)
    assert sorted(ours) == sorted(reference)
    for name in reference:
        assert ours[name] == reference[name], f"{name} differs after the resume"
    cache = Cache(dst)
    assert len(cache.split("train")) == 139 and cache.skipped == [("train", "train/bees/050.JPEG", "empty file (0 bytes)")]


def test_a_finished_cache_is_skipped_and_another_source_refused(source, uninterrupted, tmp_path):
    before = {n: os.stat(os.path.join(uninterrupted, n)).st_mtime_ns for n in os.listdir(uninterrupted)}
    lines = []
    prepare(source, uninterrupted, image_size=R, workers=1, progress=False, print_fn=lines.append)
    assert lines == [f"{uninterrupted}: the cache is complete; nothing to do"]
    after = {n: os.stat(os.path.join(uninterrupted, n)).st_mtime_ns for n in os.listdir(uninterrupted)}
    assert before == after
    with pytest.raises(DataError, match="holds a cache of other files"):
        prepare(source, uninterrupted, image_size=R + 8, workers=1, progress=False)
    # without its source the cache is still usable
    assert prepare(str(tmp_path / "gone"), uninterrupted) == uninterrupted


def test_workers_of_a_killed_prepare_end_quietly(source, tmp_path):
    """SIGKILL of prepare alone (not its process group): its orphaned workers end without a
    BrokenPipeError traceback, and soon (their stderr, shared with it, closes)."""
    dst = str(tmp_path / "cache")
    command = [sys.executable, "-m", "alexnet_np.data.prepare", source, dst, "--image-size", str(R),
               "--workers", "2", "--checkpoint-seconds", "0", "--no-progress"]
    with open(tmp_path / "stderr", "wb") as err:
        process = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=err)
    state, deadline = os.path.join(dst, ".train.state.npz"), time.time() + 60
    while time.time() < deadline and process.poll() is None and not os.path.exists(state):
        time.sleep(0.002)
    assert process.poll() is None, "prepare finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.killpg(process.pid, 0)          # a worker of the group is still there
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("the workers outlived their parent by 30 s")
    said = (tmp_path / "stderr").read_text()
    assert "Traceback" not in said and "BrokenPipeError" not in said, said


def _photos(folder, shade):
    """A tiny ImageFolder: two classes of one PNG each, of one ``shade``."""
    for label in ("ants", "bees"):
        (folder / "train" / label).mkdir(parents=True)
        Image.fromarray(np.full((70, 90, 3), shade + (label == "bees") * 40, np.uint8)).save(folder / "train" / label / "0.png")
    return str(folder)


def test_a_cache_of_another_source_of_the_same_names_is_not_reused(tmp_path, monkeypatch):
    """The same folder and file names, other files: refused in one line naming both sources, or,
    in the default folder (``runs.open_data``), prepared beside it."""
    from alexnet_np.train.runs import open_data
    first, second = _photos(tmp_path / "a" / "photos", 10), _photos(tmp_path / "b" / "photos", 200)
    dst = str(tmp_path / "cache")
    prepare(first, dst, image_size=R, workers=1, progress=False, print_fn=lambda *a: None)
    with pytest.raises(DataError, match="other sizes or times") as refused:
        prepare(second, dst, image_size=R, workers=1, progress=False, print_fn=lambda *a: None)
    assert first in str(refused.value) and second in str(refused.value)
    monkeypatch.chdir(tmp_path)
    caches = [open_data(src, R, workers=1, progress=False, print_fn=lambda *a: None)[0] for src in (first, second)]
    assert caches[0].path == os.path.join("data_cache", f"photos-{R}") and caches[1].path.startswith(caches[0].path + "-")
    assert caches[0].split("train").images.max() < 100 < caches[1].split("train").images.min()
    assert open_data(second, R, workers=1, progress=False, print_fn=lambda *a: None)[0].path == caches[1].path
