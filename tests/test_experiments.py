"""experiments.py (issue 9): the runner on a tiny configuration with two seeds, the
measurements it reports, Figure 1's net, and the CIFAR-10 binary reader."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from alexnet_np.paper import experiments
from alexnet_np.data.cifar10 import cifar10_cache, read_batch
from alexnet_np.config import Config
from alexnet_np.nn.backend import gpu_available
from alexnet_np.data.loader import Cache, DataError
from alexnet_np.paper.figure1_net import Figure1Net, figure1_sizes
from alexnet_np.data.prepare import prepare
from gradcheck import directional_derivative

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = Config(num_classes=3, input_size=67, image_size=70, conv_channels=(4, 8, 8, 8, 8), fc_units=(8, 8),
              init_std=0.05, lrn_alpha_over_n=True, batch_size=8, epochs=1, lr=0.01)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """3 classes, 24 training and 9 validation images of 70x70 (class = brightness)."""
    src = tmp_path_factory.mktemp("exp_src")
    rng = np.random.default_rng(0)
    for split, count in [("train", 24), ("val", 9)]:
        for i in range(count):
            label = i % 3
            (src / split / f"c{label}").mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 80, (70, 70, 3)) + 80 * label
            Image.fromarray(pixels.astype(np.uint8)).save(src / split / f"c{label}" / f"{i:03d}.png")
    dst = tmp_path_factory.mktemp("exp_cache") / "cache"
    return prepare(str(src), str(dst), image_size=70, workers=1, progress=False, print_fn=lambda *a: None)


def test_runner_two_seeds_on_and_off(tiny_cache, tmp_path):
    lines = []
    results = experiments.run_experiment("lrn", seeds=2, data=tiny_cache, out=str(tmp_path / "lrn"),
                                         base=TINY, say=lines.append)
    runs = results["runs"]
    assert list(runs) == ["on (paper)", "off (--no-lrn)"]
    for label, lrn in (("on (paper)", True), ("off (--no-lrn)", False)):
        assert [r["config"]["seed"] for r in runs[label]] == [0, 1]
        assert all(r["config"]["lrn"] is lrn and len(r["history"]) == 1 for r in runs[label])
    # The only difference between the arms is the switch.
    on, off = runs["on (paper)"][0]["config"], runs["off (--no-lrn)"][0]["config"]
    assert {k for k in on if on[k] != off[k]} == {"lrn"}
    # The effect is (off - on) per seed, in points, with its mean and standard deviation.
    diffs = [100 * (b["history"][-1]["val_top1"] - a["history"][-1]["val_top1"])
             for a, b in zip(runs["on (paper)"], runs["off (--no-lrn)"])]
    mean, std, listed = results["summary"]["effect"]["val_top1"]
    assert listed == pytest.approx(diffs) and mean == pytest.approx(np.mean(diffs))
    assert std == pytest.approx(np.std(diffs, ddof=1))
    saved = json.load(open(tmp_path / "lrn" / "results.json"))
    assert len(saved["runs"]["off (--no-lrn)"]) == 2 and saved["experiment"]["top1"] == 1.4
    assert Image.open(tmp_path / "lrn" / "curves.png").size == (760, 480)
    report = "\n".join(lines)
    assert "LRN: top-1 -1.4%, top-5 -1.2% (§3.3)" in report and "±" in report
    assert ("does NOT reproduce" in report) == (mean < 0)
    assert ("no effect measured" in report) == (mean == 0)
    overview = experiments.format_overview([results])
    assert "| lrn (§3.3) | LRN: top-1 -1.4%, top-5 -1.2% |" in overview and results["summary"]["verdict"] in overview


def test_each_experiment_switches_off_one_trick():
    base = Config()
    expected = {"lrn": {"lrn": False}, "pooling": {"pool_size": 2, "pool_stride": 2},
                "towers": {"towers": 1, "conv_channels": (48, 128, 192, 192, 256)},
                "crops": {"random_crop": False}, "flips": {"flip": False}, "lighting": {"lighting_std": 0.0},
                "dropout": {"dropout": 0.0}, "figure1": {"activation": "tanh"}}
    assert set(expected) == set(experiments.ORDER) == set(experiments.EXPERIMENTS)
    for name, change in expected.items():
        off = experiments.EXPERIMENTS[name].off(base)
        assert off == base.replace(**change), name
        differing = {k for k, v in off.to_dict().items() if v != base.to_dict()[k]}
        assert differing and differing <= set(change), name


def test_epochs_to_reach_a_training_error():
    history = [{"epoch": 1, "train_top1": 0.6}, {"epoch": 2, "train_top1": 0.3}, {"epoch": 3, "train_top1": 0.2}]
    assert experiments.epochs_to_reach(history, 25.0) == pytest.approx(2.5)    # 30% -> 20% in epoch 3
    assert experiments.epochs_to_reach(history, 60.0) == pytest.approx(1.0)
    assert experiments.epochs_to_reach(history, 10.0) is None


def test_figure1_runs_both_activations(tiny_cache, tmp_path):
    base = experiments.FIGURE1.replace(batch_size=8, epochs=1, input_size=16)   # 16 -> 7 -> 3 -> 1
    results = experiments.run_experiment("figure1", seeds=2, data=tiny_cache, out=str(tmp_path / "f1"),
                                         base=base, say=lambda line: None, target=95.0)
    runs = results["runs"]
    assert [r["config"]["activation"] for r in runs["ReLU"] + runs["tanh"]] == ["relu"] * 2 + ["tanh"] * 2
    assert [r["config"]["lr"] for r in runs["ReLU"] + runs["tanh"]] == [0.002] * 2 + [0.01] * 2
    for label, arm in results["summary"]["arms"].items():
        assert arm["epochs_to_target"] == [experiments.epochs_to_reach(r["history"], 95.0) for r in runs[label]]
    assert os.path.isfile(tmp_path / "f1" / "curves.png")


def test_figure1_net_shapes_and_gradients():
    config = experiments.FIGURE1.replace(num_classes=10, dtype="float64", init_std=0.1)
    assert figure1_sizes(config) == {"pool1": 15, "pool2": 7, "pool3": 3}
    net = Figure1Net(config)
    shapes = {name: p.shape for name, p, _, _ in net.parameters()}
    assert shapes == {"conv1.W": (32, 3, 5, 5), "conv1.b": (32,), "conv2.W": (32, 32, 5, 5), "conv2.b": (32,),
                      "conv3.W": (64, 32, 5, 5), "conv3.b": (64,), "fc.W": (10, 576), "fc.b": (10,)}
    rng = np.random.default_rng(0)
    images, labels = rng.standard_normal((2, 3, 16, 16)), np.array([1, 7])     # 16 -> 7 -> 3 -> 1: faster
    for activation in ("relu", "tanh"):
        net = Figure1Net(config.replace(activation=activation, input_size=16))

        def loss():
            return float(net.forward_loss(images, labels))

        loss()
        net.backward()
        for name, w, dw, _ in net.parameters():
            direction = rng.standard_normal(w.shape)
            numeric = directional_derivative(loss, w, direction, eps=1e-6)
            assert float(np.sum(dw * direction)) == pytest.approx(numeric, rel=1e-4, abs=1e-9), (activation, name)


def write_cifar_batch(path, labels, rng):
    """A CIFAR-10 binary batch: per record the label byte, then R, G, B planes of 32x32."""
    images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)   # (M, 32, 32, 3)
    planes = images.transpose(0, 3, 1, 2).reshape(len(labels), -1)            # (M, 3072): R, G, B
    np.concatenate([np.asarray(labels, np.uint8)[:, None], planes], axis=1).tofile(path)
    return images


def test_cifar10_binary_reader(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    src = tmp_path / "cifar-10-batches-bin"
    src.mkdir()
    written = [write_cifar_batch(src / f"data_batch_{i}.bin", [i % 10, (i + 3) % 10, 9], rng) for i in range(1, 6)]
    test_images = write_cifar_batch(src / "test_batch.bin", [0, 5], rng)
    images, labels = read_batch(str(src / "data_batch_2.bin"))
    np.testing.assert_array_equal(images, written[1])            # red plane first, rows top to bottom
    assert labels.tolist() == [2, 5, 9]
    cache = Cache(cifar10_cache(str(src), str(tmp_path / "cache")))
    assert cache.image_size == 32 and len(cache.classes) == 10 and cache.splits == ["train", "val"]
    np.testing.assert_array_equal(cache.split("train").images, np.concatenate(written))
    np.testing.assert_array_equal(cache.split("val").images, test_images)
    np.testing.assert_allclose(cache.mean_image, np.concatenate(written).mean(axis=0), rtol=1e-6)
    pixels = np.concatenate(written).reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(cache.pca_cov, np.cov(pixels, rowvar=False), rtol=1e-9)
    (src / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="not a CIFAR-10 binary batch"):
        read_batch(str(src / "test_batch.bin"))
    with pytest.raises(DataError, match="missing"):
        cifar10_cache(str(tmp_path / "nowhere"), str(tmp_path / "cache2"))


def test_cifar10_cache_of_another_copy_is_not_reused(tmp_path):
    """Two folders of CIFAR-10 files with other bytes: the second gets a cache of its own."""
    rng = np.random.default_rng(2)
    copies = []
    for name in ("a", "b"):
        src = tmp_path / name / "cifar-10-batches-bin"
        src.mkdir(parents=True)
        for i in range(1, 6):
            write_cifar_batch(src / f"data_batch_{i}.bin", [i % 10, 9], rng)
        copies.append((src, write_cifar_batch(src / "test_batch.bin", [0, 5], rng)))
    default, lines = str(tmp_path / "cifar-10-32"), []
    first = cifar10_cache(str(copies[0][0]), default, print_fn=lines.append)
    second = cifar10_cache(str(copies[1][0]), default, print_fn=lines.append)
    assert first == default and second != default and any(second in line for line in lines)   # said where
    for path, (_, val_images) in zip((first, second), copies):
        np.testing.assert_array_equal(Cache(path).split("val").images, val_images)
    assert cifar10_cache(str(copies[1][0]), default, print_fn=lines.append) == second    # found again
    assert cifar10_cache(str(copies[0][0]), default) == default


def test_command_line_errors_are_one_line():
    for args, fragment in [(["lrn", "--cifar10", ROOT], "figure1"), (["figure1", "--cifar10", "/no/where"], "/no/where"), (["lrn", "--data", "/no/such"], "/no/such"),
                           (["lrn", "--seeds", "0"], "--seeds")]:
        done = subprocess.run([sys.executable, "experiments.py"] + args, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr, args


@pytest.mark.skipif(gpu_available(), reason="this machine has a usable GPU")
def test_device_gpu_without_gpu_makes_nothing(tmp_path):
    """Refused before the demo data is made and before the experiment's folder is."""
    done = subprocess.run([sys.executable, os.path.join(ROOT, "experiments.py"), "lrn", "--device", "gpu"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr.startswith("error: --device gpu") and len(done.stderr.splitlines()) == 1
    assert os.listdir(tmp_path) == []


def test_figure1_verdict_when_tanh_does_not_always_reach_the_target():
    def run(errors):
        return {"history": [{"epoch": e + 1, "train_top1": v / 100, "val_top1": 0.5, "val_top5": 0.1}
                            for e, v in enumerate(errors)], "seconds": 1.0}
    runs = {"ReLU": [run([50, 20, 10]), run([60, 24, 10])],       # reach 25% at 1.83 and 1.97
            "tanh": [run([90, 80, 20]), run([90, 85, 80])]}       # 2.91, then never within 3
    summary = experiments.summarise(experiments.EXPERIMENTS["figure1"], runs, 25.0)
    relu = [1 + 25 / 30, 1 + 35 / 36]
    assert summary["arms"]["ReLU"]["epochs_to_target"] == pytest.approx(relu)
    assert summary["ratio"] == pytest.approx(np.mean([2 + 55 / 60, 3]) / np.mean(relu))
    assert "1 of 2 seeds" in summary["verdict"] and "at least" in summary["verdict"]
    # tanh ends at (20 + 80) / 2 = 50%; ReLU got there at epochs 1 and 1 + 10/36: 3 / 1.139 = 2.6x sooner.
    assert "tanh ends at 50.0%" in summary["verdict"] and "2.6x sooner" in summary["verdict"]


def test_report_prints_the_tables_again(tiny_cache, tmp_path):
    experiments.run_experiment("dropout", seeds=2, data=tiny_cache, out=str(tmp_path / "d"), base=TINY,
                               say=lambda line: None)
    done = subprocess.run([sys.executable, "experiments.py", "--report", str(tmp_path / "d")], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "| dropout (§4.2) |" in done.stdout and "±" in done.stdout
    with pytest.raises(experiments.ExperimentError, match="already holds"):
        experiments.run_experiment("dropout", seeds=2, data=tiny_cache, out=str(tmp_path / "d"), base=TINY)


def test_all_reuses_the_runs_experiments_share(tiny_cache, tmp_path):
    """Every experiment's 'on' arm is the same configuration and seeds: trained once in 'all'."""
    done, lines = {}, []
    first = experiments.run_experiment("flips", seeds=2, data=tiny_cache, out=str(tmp_path / "f"), base=TINY,
                                       say=lines.append, done=done)
    second = experiments.run_experiment("lighting", seeds=2, data=tiny_cache, out=str(tmp_path / "l"), base=TINY,
                                        say=lines.append, done=done)
    assert second["runs"]["on (paper)"] == first["runs"]["on (paper)"]
    assert sorted(os.listdir(tmp_path / "l")) == ["curves.png", "off-seed0", "off-seed1", "results.json"]
    assert sum("reused" in line for line in lines) == 2 and len(done) == 6
    # A fresh run of the same configuration gives the same numbers (what makes reuse sound).
    again = experiments.run_experiment("flips", seeds=1, data=tiny_cache, out=str(tmp_path / "g"), base=TINY,
                                       say=lambda line: None)
    assert again["runs"]["on (paper)"][0]["history"][-1]["val_loss"] == first["runs"]["on (paper)"][0]["history"][-1]["val_loss"]


def test_overfitting_claims_are_judged_by_the_train_validation_gap():
    def run(val, train):
        return {"history": [{"epoch": 1, "val_top1": val, "val_top5": 0.1, "train_top1": train}], "seconds": 1.0}
    crops = experiments.EXPERIMENTS["crops"]
    overfits = {"on": [run(0.30, 0.28), run(0.32, 0.30)], "off": [run(0.40, 0.10), run(0.42, 0.12)]}
    summary = experiments.summarise(crops, overfits, 25.0)
    assert summary["reproduced"] and summary["verdict"].startswith("overfits more without the trick (val - train +30.0")
    early = {"on": [run(0.70, 0.71), run(0.68, 0.69)], "off": [run(0.60, 0.60), run(0.62, 0.61)]}
    summary = experiments.summarise(crops, early, 25.0)
    assert not summary["reproduced"] and summary["verdict"].startswith("not testable here")


def test_a_zero_effect_has_no_sign_and_one_seed_says_its_noise_is_unknown():
    def run(val):
        return {"history": [{"epoch": 1, "val_top1": val, "val_top5": 0.1, "train_top1": val}], "seconds": 1.0}
    lrn = experiments.EXPERIMENTS["lrn"]
    tie = experiments.summarise(lrn, {"on": [run(0.5), run(0.6)], "off": [run(0.5), run(0.6)]}, 25.0)
    assert tie["verdict"] == "no effect measured: both arms end at the same error" and not tie["reproduced"]
    one = experiments.summarise(lrn, {"on": [run(0.5)], "off": [run(0.6)]}, 25.0)
    assert one["verdict"] == "same sign as the paper, but within noise (one seed: its noise is unknown)"
    assert not one["reproduced"]
