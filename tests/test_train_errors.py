"""Bad input gives one line ``error: ...`` on stderr and exit status 2, and overwrites nothing.

Missing data folder, a checkpoint of another configuration, a corrupt checkpoint, --device
gpu without a GPU, an existing run without --resume, a loss that becomes infinite; and the
report of a loss stuck at ln K.
"""
import hashlib
import json
import os

import numpy as np
import pytest

import evaluate
import train
from alexnet_np.nn.backend import gpu_available

from test_train_helpers import TINY_ARGS, make_tiny_cache, make_tiny_images


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("errors"))
    cache = make_tiny_cache(root)
    out = os.path.join(root, "run")
    assert train.main(["--data", cache, "--out", out, *TINY_ARGS, "--max-steps", "2", "--no-figures"]) == 0
    return {"root": root, "cache": cache, "out": out}


def snapshot(folder):
    """{file: sha256} of everything under ``folder``."""
    result = {}
    for base, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                result[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return result


def one_error_line(capsys, *words):
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_missing_data_folder(setup, tmp_path, capsys):
    out = str(tmp_path / "new-run")
    assert train.main(["--data", str(tmp_path / "nowhere"), "--out", out, "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""   # the error alone: no device line before it
    assert captured.err.splitlines() == [f"error: --data {tmp_path / 'nowhere'}: no such folder"]
    assert not os.path.exists(out)
    checkpoint = os.path.join(setup["out"], "last.npz")
    assert evaluate.main(["--checkpoint", checkpoint, "--data", str(tmp_path / "nowhere"), "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines() == [f"error: --data {tmp_path / 'nowhere'}: no such folder"]
    with pytest.raises(SystemExit) as stopped:   # refused by the parser, before anything runs
        evaluate.main(["--checkpoint", str(tmp_path / "none.npz"), "--device", "cpu"])
    assert stopped.value.code == 2
    one_error_line(capsys, "--checkpoint", "none.npz", "no such file")


def test_not_an_image_folder(tmp_path, capsys):
    os.makedirs(tmp_path / "photos" / "cats")
    out = str(tmp_path / "new-run")
    assert train.main(["--data", str(tmp_path / "photos"), "--out", out, "--device", "cpu"]) == 2
    one_error_line(capsys, "no train/ folder")
    assert not os.path.exists(out)


def test_too_few_images_or_other_classes_refused_before_preparing(setup, tmp_path, capsys):
    """Checks on the listing of a folder of images, before any image is read or written."""
    images = make_tiny_images(str(tmp_path / "images"))   # 4 classes, 60 training images
    cache, out = str(tmp_path / "cache"), str(tmp_path / "new-run")
    assert train.main(["--data", images, "--cache", cache, "--out", out, *TINY_ARGS, "--batch-size", "64"]) == 2
    one_error_line(capsys, "--batch-size 64", "the 60 training images of " + images)
    assert train.main(["--data", images, "--cache", cache, "--out", out, *TINY_ARGS, "--num-classes", "3"]) == 2
    one_error_line(capsys, "4 classes", "asks for 3")
    assert not os.path.exists(cache) and not os.path.exists(out)


@pytest.mark.skipif(gpu_available(), reason="this machine has a usable GPU")
def test_device_gpu_without_gpu(setup, tmp_path, capsys):
    out = str(tmp_path / "gpu-run")
    assert train.main(["--data", setup["cache"], "--out", out, *TINY_ARGS, "--device", "gpu"]) == 2
    one_error_line(capsys, "--device gpu")
    assert not os.path.exists(out)
    before = snapshot(setup["out"])
    assert train.main(["--resume", setup["out"], "--device", "gpu"]) == 2
    one_error_line(capsys, "--device gpu")
    assert evaluate.main(["--checkpoint", os.path.join(setup["out"], "last.npz"), "--device", "gpu"]) == 2
    one_error_line(capsys, "--device gpu")
    assert snapshot(setup["out"]) == before


def test_checkpoint_of_another_configuration(setup, tmp_path, capsys):
    before = snapshot(setup["out"])
    assert train.main(["--resume", setup["out"], "--conv-channels", "8,16,16,16,16", "--lrn-alpha-over-n"]) == 2
    one_error_line(capsys, "another configuration", "conv_channels: 16,32,32,32,32 in the checkpoint, "
                   "8,16,16,16,16 here", "lrn_alpha_over_n")
    # Data with other classes than the checkpoint's: refused by both scripts (evaluate.py matches
    # classes by name: three of the four colours are evaluated, test_classify.py).
    other = make_tiny_images(str(tmp_path / "three"), per_class=(10, 2))
    import shutil
    for split in ("train", "val"):
        shutil.rmtree(os.path.join(other, split, "yellow"))
        os.rename(os.path.join(other, split, "blue"), os.path.join(other, split, "purple"))
    assert evaluate.main(["--checkpoint", os.path.join(setup["out"], "last.npz"), "--data", other,
                          "--cache", str(tmp_path / "three-cache"), "--device", "cpu", "--no-progress"]) == 2
    one_error_line(capsys, "does not know: ['purple']", "its 4 classes are blue, green, red, yellow")
    assert train.main(["--resume", setup["out"], "--data", other, "--cache", str(tmp_path / "other-cache"),
                       "--no-progress"]) == 2
    one_error_line(capsys, "3 classes", "asks for 4")
    # As many classes, but not the same: refused before the data is prepared.
    for split in ("train", "val"):
        shutil.copytree(os.path.join(other, split, "red"), os.path.join(other, split, "yellow"))
    assert train.main(["--resume", setup["out"], "--data", other, "--cache", str(tmp_path / "other-cache"),
                       "--no-progress"]) == 2
    one_error_line(capsys, "not those of checkpoint", "(class 0: green here, blue there)")
    assert not os.path.exists(tmp_path / "other-cache")
    assert snapshot(setup["out"]) == before


def test_data_of_other_classes_and_size_is_refused_for_its_classes_first(setup, tmp_path, capsys):
    """The obstacle that no preparing removes is named first; the size's hint is a command."""
    from alexnet_np.data.prepare import prepare
    images = make_tiny_images(str(tmp_path / "images"), per_class=(2, 2))
    same = prepare(images, str(tmp_path / "same-96"), image_size=96, workers=1, progress=False, print_fn=print)
    for split in ("train", "val"):
        os.rename(os.path.join(images, split, "blue"), os.path.join(images, split, "ants"))
    other = prepare(images, str(tmp_path / "other-96"), image_size=96, workers=1, progress=False, print_fn=print)
    checkpoint = os.path.join(setup["out"], "last.npz")
    capsys.readouterr()
    assert evaluate.main(["--checkpoint", checkpoint, "--data", other, "--device", "cpu", "--no-progress"]) == 2
    line = one_error_line(capsys, "does not know: ['ants']")
    assert "image-size" not in line
    assert evaluate.main(["--checkpoint", checkpoint, "--data", same, "--device", "cpu", "--no-progress"]) == 2
    one_error_line(capsys, "76x76 mean image", "96x96 images", "python -m alexnet_np.data.prepare SRC DST --image-size 76")


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_corrupt_checkpoint(setup, tmp_path, capsys, cut):
    data = open(os.path.join(setup["out"], "last.npz"), "rb").read()
    run = tmp_path / "broken-run"
    os.makedirs(run)
    for name in ("last.npz", "log.jsonl"):
        with open(run / name, "wb") as f:
            f.write(data[:int(len(data) * cut)] if name == "last.npz" else b"")
    before = snapshot(str(run))
    assert train.main(["--resume", str(run)]) == 2
    one_error_line(capsys, "last.npz", "corrupt or truncated")
    assert evaluate.main(["--checkpoint", str(run / "last.npz"), "--device", "cpu"]) == 2
    one_error_line(capsys, "corrupt or truncated")
    assert snapshot(str(run)) == before


@pytest.mark.parametrize("content, why", [(b"", "not an .npz archive"), (bytes(range(256)) * 4, "not an .npz archive"),
                                          ("objects", "it holds Python objects")])
def test_a_file_that_is_not_a_checkpoint_is_never_unpickled(tmp_path, capsys, content, why):
    """Said to be no checkpoint, nothing more: not NumPy's advice to load it with allow_pickle."""
    path = str(tmp_path / "not-a-checkpoint.npz")
    if content == "objects":
        np.savez(path, meta=np.array([{"format": 1}], dtype=object))
    else:
        with open(path, "wb") as f:
            f.write(content)
    assert evaluate.main(["--checkpoint", path, "--device", "cpu"]) == 2
    line = one_error_line(capsys, path, "not an alexnet_np checkpoint", why)
    assert "pickle" not in line


def test_existing_run_is_not_overwritten(setup, capsys):
    before = snapshot(setup["out"])
    assert train.main(["--data", setup["cache"], "--out", setup["out"], *TINY_ARGS]) == 2
    one_error_line(capsys, "already holds a run", "--resume")
    assert snapshot(setup["out"]) == before


def test_loss_not_finite_stops_and_keeps_the_last_good_checkpoint(setup, tmp_path, capsys):
    out = str(tmp_path / "diverge")
    code = train.main(["--data", setup["cache"], "--out", out, *TINY_ARGS, "--lr", "1e6",
                       "--checkpoint-every", "1", "--no-figures"])
    assert code == 2
    line = one_error_line(capsys, "at step", "training stopped", "last good checkpoint")
    assert "the loss is" in line or "the weights are not finite" in line
    records = [json.loads(r) for r in open(os.path.join(out, "log.jsonl"))]
    bad = [r for r in records if r["kind"] == "not finite"][0]
    assert f"step {bad['step']}" in line
    from alexnet_np.train.checkpoint import load
    import numpy as np
    saved = load(os.path.join(out, "last.npz"))
    assert saved.position[2] == bad["step"] - 1          # the step before the bad one, checkpointed
    assert all(np.isfinite(v).all() for v in saved.params.values())


def test_stall_at_chance_is_reported(setup, tmp_path, capsys):
    # The paper's N(0, 0.01) on such narrow layers: the loss sits at ln 4 and is reported.
    out = str(tmp_path / "stall")
    assert train.main(["--data", setup["cache"], "--out", out, *TINY_ARGS, "--init-std", "0.01",
                       "--stall-steps", "6", "--no-figures"]) == 0
    text = capsys.readouterr().out
    assert "warning: the loss has stayed at ln(4) = 1.386" in text and "docs/training.md" in text
    records = [json.loads(r) for r in open(os.path.join(out, "log.jsonl"))]
    assert [r["kind"] for r in records].count("stall") == 1
