"""End to end on a tiny configuration and generated data: train.py, evaluate.py, figures.py.

Train a few epochs through the command-line entry points, check that the loss falls and
the logs, checkpoints and figures are there; evaluate centre-crop and ten-crop (the
default checkpoint and data found from the run); draw every figure.
"""
import csv
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

import evaluate
import figures as figures_script
import train
from alexnet_np.train.checkpoint import load

from test_train_helpers import TINY_ARGS, make_tiny_cache

EPOCHS = 5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny run in ``<tmp>/runs/tiny`` (module-scoped: the other tests read it)."""
    root = tmp_path_factory.mktemp("e2e")
    cache = make_tiny_cache(str(root))
    out = os.path.join(root, "runs", "tiny")
    argv = ["--data", cache, "--out", out, *TINY_ARGS, "--epochs", str(EPOCHS), "--log-every", "2"]
    code = train.main(argv)
    assert code == 0
    return {"root": str(root), "cache": cache, "out": out}


def read_log(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def assert_png(path):
    assert os.path.isfile(path), path
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
        assert len(np.unique(np.asarray(image.convert("L")))) > 2   # something drawn, not a blank page


def test_training_learns_and_logs(run):
    log = read_log(run["out"])
    epochs = [r for r in log if r["kind"] == "epoch"]
    steps = [r for r in log if r["kind"] == "step"]
    assert [r["epoch"] for r in epochs] == list(range(1, EPOCHS + 1))
    keys = {"train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5", "lr",
            "images_per_s", "elapsed_s", "time"}
    assert keys <= set(epochs[0])
    assert {"loss", "train_top1", "train_top5", "lr", "images_per_s", "step", "time"} <= set(steps[0])
    assert len(steps) >= EPOCHS * 6 // 2                     # every 2 steps (6 steps per epoch)
    chance = math.log(4)
    # The loss falls: well below its first epoch and below ln K; validation beats chance (75%).
    assert epochs[-1]["train_loss"] < 0.6 * epochs[0]["train_loss"]
    assert epochs[-1]["train_loss"] < 0.7 * chance
    assert min(r["val_top1"] for r in epochs) < 0.5
    with open(os.path.join(run["out"], "config.json")) as f:
        assert json.load(f)["conv_channels"] == [16, 32, 32, 32, 32]
    for name in ("last.npz", "best.npz"):
        ck = load(os.path.join(run["out"], name))
        assert ck.meta["history"][0]["epoch"] == 1
    assert load(os.path.join(run["out"], "last.npz")).position == (EPOCHS, 0, EPOCHS * 6)


def test_training_draws_every_figure(run):
    for name in ("curves.png", "conv1_kernels.png", "figure4_predictions.png", "figure4_neighbours.png"):
        assert_png(os.path.join(run["out"], name))


def test_evaluate_centre_and_ten_crop(run, monkeypatch, capsys):
    monkeypatch.chdir(run["root"])             # the default checkpoint: runs/<newest>/best.npz
    capsys.readouterr()
    assert evaluate.main(["--device", "cpu", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "[val, centre-crop] top-1 error" in text and "[val, centre-crop] top-5 error" in text
    best = os.path.join(run["out"], "best.npz")
    with open(os.path.join(run["out"], "eval-best-val-centre-crop.json")) as f:
        centre = json.load(f)
    assert centre["procedure"] == "centre-crop" and centre["views_per_image"] == 1
    assert centre["split"] == "val" and centre["images"] == 20
    # The same model and procedure as the validation of the best epoch during training.
    ck = load(best)
    trained = [h for h in ck.meta["history"] if h["epoch"] == ck.meta["best"]["epoch"]][0]
    assert centre["top1_error"] == pytest.approx(trained["val_top1"])
    assert centre["top1_wrong"] == round(20 * centre["top1_error"])

    predictions = os.path.join(run["root"], "top5.csv")
    assert evaluate.main(["--checkpoint", best, "--ten-crop", "--device", "cpu", "--no-progress",
                          "--predictions", predictions, "--figures"]) == 0
    text = capsys.readouterr().out
    assert "[val, ten-crop] top-1 error" in text and "centre-crop]" not in text
    with open(os.path.join(run["out"], "eval-best-val-ten-crop.json")) as f:
        ten = json.load(f)
    assert ten["procedure"] == "ten-crop" and ten["views_per_image"] == 10
    assert ten["top1_error"] < 0.75                          # better than chance (4 classes)
    with open(predictions) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and rows[0]["procedure"] == "ten-crop"
    probs = np.array([[float(r[f"prob{k}"]) for k in range(1, 5)] for r in rows])
    assert np.all(np.diff(probs, axis=1) <= 0) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    wrong = sum(r["top1_correct"] == "0" for r in rows)
    assert wrong == ten["top1_wrong"]
    for name in ("conv1_kernels.png", "figure4_predictions.png", "figure4_neighbours.png"):
        assert_png(os.path.join(run["out"], "figures-best", name))


def test_figures_command(run, capsys):
    out = os.path.join(run["root"], "figs")
    assert figures_script.main(["--checkpoint", os.path.join(run["out"], "last.npz"), "--out", out,
                                "--device", "cpu", "--no-progress", "--neighbour-pool", "25"]) == 0
    for name in ("curves.png", "conv1_kernels.png", "figure4_predictions.png", "figure4_neighbours.png"):
        assert_png(os.path.join(out, name))


def test_nearest_neighbours_streamed_match_brute_force():
    from alexnet_np.train.figures import nearest_neighbours
    rng = np.random.default_rng(0)
    train_features = rng.standard_normal((53, 7))
    queries = rng.standard_normal((4, 7))
    batches = [train_features[i:i + 10] for i in range(0, 53, 10)]   # the last batch partial
    index, distance = nearest_neighbours(lambda f: f, queries, batches, k=6)
    d = np.sqrt(((queries[:, None, :] - train_features[None, :, :]) ** 2).sum(axis=2))   # (Q, M)
    expected = np.argsort(d, axis=1, kind="stable")[:, :6]
    assert index.tolist() == expected.tolist()
    np.testing.assert_allclose(distance, np.take_along_axis(d, expected, axis=1), rtol=1e-9)
