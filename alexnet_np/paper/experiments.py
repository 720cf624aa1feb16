"""The paper's claims as experiments: each trick on and off, several seeds, the measured effect.

Dimensions:
    K  seeds    E  epochs

``python experiments.py NAME`` (``all``: every one in turn) trains the net with the trick on
and with it off, ``--seeds`` seeds each (the seed changes the initial weights, the data order,
the augmentation and the dropout masks), through the project's own training loop
(``trainer.Trainer``), and prints the paper's claim beside the effect measured:

    name      §      switched off                               the paper's claim
    lrn       §3.3   --no-lrn                                   top-1 -1.4%, top-5 -1.2%
    pooling   §3.4   --pool-size 2 --pool-stride 2              top-1 -0.4%, top-5 -0.3%
    towers    §3.2   one tower, conv1-4 halved (footnote 2)     top-1 -1.7%, top-5 -1.2%
    crops     §4.1   --no-random-crop (centre crops)            without: "substantial overfitting"
    flips     §4.1   --no-flip                                  (with crops) against overfitting
    lighting  §4.1   --lighting-std 0                           top-1 -over 1%
    dropout   §4.2   --dropout 0                                without: "substantial overfitting"
    figure1   §3.1   --activation tanh, Figure 1's 4-layer net  25% training error 6x sooner with ReLU

The effect of a trick is, per seed, (error with it off) - (error with it on), in percentage
points of the final epoch's validation error (centre crop): positive means the trick helps,
as the paper says each does. The table gives its mean and standard deviation over seeds and
whether the sign agrees with the paper; "within noise" when the mean is smaller than twice
its standard error. ``figure1`` measures instead the epochs each activation needs to reach
a training error (25% by default, the paper's) and their ratio.

Each experiment writes, under ``runs/experiments/<name>-<date-time>/`` (or ``--out``),
``results.json`` (every run: configuration, every epoch's record, seconds), ``curves.png``
(each arm's mean over seeds and its spread) and the runs themselves (log, checkpoints).
"""
import dataclasses
import json
import math
import os
import time

import numpy as np

from ..train import figures
from ..nn.backend import tower_devices
from ..config import DEMO, Config, one_tower_comparison
from .figure1_net import Figure1Net
from ..train.runs import open_data
from ..train.trainer import Options, Trainer

ROOT = os.path.join("runs", "experiments")

# The base of every AlexNet experiment on the demo data: the DEMO net (config.py), for fewer
# epochs, so that one experiment (2 arms x 3 seeds) takes a few minutes on two cores.
DEMO_EPOCHS = 12


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    section: str
    trick: str            # what is switched off, in words
    switch: str           # the command-line options that switch it off
    claim: str            # the paper's claim, as printed in the table
    top1: float = None    # the paper's effect on top-1 error, percentage points (None: not a number)
    top5: float = None
    caveat: str = ""      # why the claim may not show on the demo data

    def off(self, config):
        """``config`` with the trick switched off."""
        return OFF[self.name](config)


OFF = {
    "lrn": lambda c: c.replace(lrn=False),
    "pooling": lambda c: c.replace(pool_size=2, pool_stride=2),
    "towers": one_tower_comparison,
    "crops": lambda c: c.replace(random_crop=False),
    "flips": lambda c: c.replace(flip=False),
    "lighting": lambda c: c.replace(lighting_std=0.0),
    "dropout": lambda c: c.replace(dropout=0.0),
    "figure1": lambda c: c.replace(activation="tanh"),
}

SMALL_DATA = ("The demo data set has 300 validation images (one image = 0.33 points), 10 easy "
              "generated classes and a net 3-6x narrower than the paper's, trained for minutes and "
              "far from converged (the demo run, 30 epochs, ends at 9-35% error by seed, median 15%): seed-to-seed "
              "noise is larger than the paper's effects, measured on ImageNet's 1000 classes after "
              "90 epochs; a trick that slows early learning (LRN, augmentation, dropout) can look "
              "harmful this early.")

EXPERIMENTS = {e.name: e for e in [
    Experiment("lrn", "§3.3", "local response normalisation", "--no-lrn",
               "LRN: top-1 -1.4%, top-5 -1.2%", 1.4, 1.2,
               "LRN's gain in the paper is small and on ImageNet; on a narrow net and easy classes "
               "it may not show. " + SMALL_DATA),
    Experiment("pooling", "§3.4", "overlapping pooling (3x3, stride 2) against 2x2, stride 2",
               "--pool-size 2 --pool-stride 2", "overlapping pooling: top-1 -0.4%, top-5 -0.3%", 0.4, 0.3,
               "0.4 points is about one demo validation image. " + SMALL_DATA),
    Experiment("towers", "§3.2", "two towers against the one-tower net with conv1-conv4 halved",
               "--towers 1 --conv-channels <conv1-4 halved>", "two GPUs: top-1 -1.7%, top-5 -1.2%", 1.7, 1.2,
               "The one-tower net's conv2, conv4 and conv5 see all of the previous layer, so it "
               "loses fewer connections than it loses kernels. " + SMALL_DATA),
    Experiment("crops", "§4.1", "random crops (centre crops instead)", "--no-random-crop",
               "without translations: 'substantial overfitting'",
               caveat="Demo images are 76x76 and crops 67x67: 10x10 offsets, not 32x32 as on "
                      "ImageNet, so the augmentation is weaker. " + SMALL_DATA),
    Experiment("flips", "§4.1", "horizontal reflections", "--no-flip",
               "(with crops) the scheme that prevents 'substantial overfitting'",
               caveat="Most demo shapes are mirror-symmetric, so a reflection adds little. " + SMALL_DATA),
    Experiment("lighting", "§4.1", "PCA lighting", "--lighting-std 0",
               "PCA lighting: top-1 -over 1%", 1.0, None,
               "The demo classes are defined by shape with random colours already. " + SMALL_DATA),
    Experiment("dropout", "§4.2", "dropout in fc6 and fc7", "--dropout 0",
               "without dropout: 'substantial overfitting'; it doubles the iterations to converge",
               caveat="The demo net's fc layers (256 units) are small and short training overfits "
                      "little; and dropout slows learning (the paper: it roughly doubles the iterations "
                      "to converge), so early in training it is expected to be behind. " + SMALL_DATA),
    Experiment("figure1", "§3.1", "ReLU (tanh instead), Figure 1's four-layer net", "--activation tanh",
               "ReLU net reaches 25% training error on CIFAR-10 six times faster than tanh",
               caveat="Run with --cifar10 for the paper's data; on the demo data the net and the "
                      "classes differ from the paper's."),
]}
ORDER = ("lrn", "pooling", "towers", "lighting", "dropout", "crops", "flips", "figure1")

# Figure 1 (§3.1): "no regularization of any kind", and learning rates "chosen independently
# [for each net] to make training as fast as possible". Measured on the demo data (32x32, batch
# 32, init 0.01): ReLU learns fastest at 0.002 (at 0.01 it stayed at 90% error, at 0.004 slower);
# tanh at 0.01 (62% after 8 epochs, against 77% at 0.002).
FIGURE1 = Config(input_size=32, image_size=32, batch_size=32, init_std=0.01, weight_decay=0.0,
                 random_crop=False, flip=False, lighting_std=0.0, dropout=0.0, lr_patience=1000,
                 mean="pixel", epochs=8)
FIGURE1_LR = {"relu": 0.002, "tanh": 0.01}


class ExperimentError(ValueError):
    """An experiment cannot run (bad option); the message is one line."""


# --------------------------------------------------------------------------- running

def train_once(config, cache, run_dir, device_kind="cpu", model_class=None, say=print):
    """One training run; returns its record: config, every epoch's record, seconds."""
    devices = tower_devices(device_kind, config.towers if model_class is None else 1)
    model = None if model_class is None else model_class(config, devices)
    options = Options(progress=False, figures=False, checkpoint_every=0, log_every=10 ** 9, threads=1)
    started = time.perf_counter()
    trainer = Trainer(config, cache, devices, run_dir, options, {"demo": False, "cache": cache.path},
                      say=lambda message: None, model=model)
    trainer.run()
    seconds = time.perf_counter() - started
    last = trainer.history[-1]
    say(f"  {os.path.basename(run_dir)}: {seconds:.0f} s, final val top-1 {100 * last['val_top1']:.1f}%, "
        f"train top-1 {100 * last['train_top1']:.1f}%")
    return {"run_dir": run_dir, "config": config.to_dict(), "history": trainer.history, "seconds": seconds}


def arm_configs(experiment, base, seeds):
    """{arm label: [config per seed]}: the trick on, then off."""
    if experiment.name == "figure1":
        arms = {"ReLU": base.replace(activation="relu", lr=FIGURE1_LR["relu"]),
                "tanh": base.replace(activation="tanh", lr=FIGURE1_LR["tanh"])}
    else:
        arms = {"on (paper)": base, f"off ({experiment.switch})": experiment.off(base)}
    return {label: [config.replace(seed=s) for s in range(seeds)] for label, config in arms.items()}


def default_seeds(name):
    """Seeds per arm by default: 3 (2 for figure1, whose 32x32 net is slower per image on a CPU)."""
    return 2 if name == "figure1" else 3


def run_experiment(name, seeds=None, epochs=None, data=None, cifar10=None, out=None, device="cpu",
                   target=25.0, say=print, base=None, done=None):
    """Run experiment ``name``; returns the results dict (also written as results.json).

    ``base``: the configuration with every trick on (default: DEMO for the demo data, the
    paper's for ``data``, FIGURE1 for figure1); tests give a tiny one. ``done``: a dict
    shared by the experiments of one ``all``, so that a run already made (every experiment's
    "on" arm is the same base configuration and seeds) is reused, not trained again: on the
    CPU a rerun gives the same numbers (measured: the on arms of separate processes agreed).
    """
    experiment = EXPERIMENTS[name]
    seeds = seeds or default_seeds(name)
    tower_devices(device, 1)   # refuse a device that cannot run before any data or folder is made
    cache, base = open_experiment_data(experiment, data, cifar10, base)
    base = base.replace(epochs=epochs or base.epochs, num_classes=len(cache.classes))
    folder = out or os.path.join(ROOT, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if os.path.exists(os.path.join(folder, "results.json")):
        raise ExperimentError(f"--out {folder} already holds an experiment: choose another folder")
    os.makedirs(folder, exist_ok=True)
    say(f"{name} ({experiment.section}): {experiment.trick} on and off, {seeds} seeds, {base.epochs} epochs, "
        f"data {cache.path}; runs in {folder}")
    started = time.perf_counter()
    model_class = Figure1Net if name == "figure1" else None
    runs = {}
    for label, configs in arm_configs(experiment, base, seeds).items():
        runs[label] = []
        for config in configs:
            key = json.dumps([name == "figure1", cache.path, device, config.to_dict()], sort_keys=True)
            if done is not None and key in done:   # the same run in an earlier experiment: reuse it
                say(f"  {slug(label)}-seed{config.seed}: the same configuration and seed as "
                    f"{done[key]['run_dir']}: reused")
                runs[label].append(done[key])
                continue
            record = train_once(config, cache, os.path.join(folder, f"{slug(label)}-seed{config.seed}"),
                                device, model_class, say)
            runs[label].append(record)
            if done is not None:
                done[key] = record
    results = {"experiment": dataclasses.asdict(experiment), "data": cache.path, "seeds": seeds,
               "epochs": base.epochs, "target": target if name == "figure1" else None,
               "seconds": time.perf_counter() - started, "runs": runs}
    results["summary"] = summarise(experiment, runs, target)
    write_json(os.path.join(folder, "results.json"), results)
    results["png"] = draw(experiment, runs, os.path.join(folder, "curves.png"), target)
    say(format_report(results))
    return results


def report(folder):
    """The tables of a finished experiment, measured again from its ``results.json``."""
    path = os.path.join(folder, "results.json")
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, ValueError) as error:
        raise ExperimentError(f"--report {folder}: cannot read {path} ({error})") from None
    experiment = EXPERIMENTS[results["experiment"]["name"]]
    results["experiment"] = dataclasses.asdict(experiment)     # today's claim and caveat texts
    results["summary"] = summarise(experiment, results["runs"], results["target"])
    return results


def open_experiment_data(experiment, data, cifar10, base=None):
    """(cache, base configuration): the demo data and DEMO, or --data and the paper's, or CIFAR-10.
    A ``base`` given replaces the default configuration."""
    cache, default = open_default_data(experiment, data, cifar10)
    return cache, base or default()


def open_default_data(experiment, data, cifar10):
    """(cache, a function giving the default base configuration for it)."""
    if cifar10 is not None:
        if experiment.name != "figure1":
            raise ExperimentError("--cifar10 is for figure1 (the paper's Figure 1 is on CIFAR-10)")
        from ..data.cifar10 import cifar10_cache
        from ..data.loader import Cache
        return Cache(cifar10_cache(cifar10, os.path.join("data_cache", "cifar-10-32"))), lambda: FIGURE1.replace(epochs=30)
    if experiment.name == "figure1":
        if data is not None:
            cache, _ = open_data(data, FIGURE1.image_size, progress=False)
            return cache, lambda: FIGURE1
        from ..data.loader import Cache
        from ..data.demo import demo_cache
        return Cache(demo_cache("data_cache", image_size=FIGURE1.image_size)), lambda: FIGURE1
    if data is None:
        cache, _ = open_data(None, DEMO.image_size, progress=False)
        return cache, lambda: DEMO.replace(epochs=DEMO_EPOCHS)
    cache, _ = open_data(data, Config().image_size, progress=False)
    return cache, lambda: Config(image_size=cache.image_size)


def slug(label):
    return "".join(ch if ch.isalnum() else "-" for ch in label.split(" (")[0] if ch != " ")


def write_json(path, value):
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        json.dump(value, f, indent=1, default=float)
    os.replace(temporary, path)


# --------------------------------------------------------------------------- measuring

def series(runs, key):
    """(epochs (E,), values (K, E) in %) of ``key`` over the runs of one arm."""
    length = max(len(r["history"]) for r in runs)
    values = np.full((len(runs), length), np.nan)
    for k, r in enumerate(runs):
        values[k, :len(r["history"])] = [100 * h[key] for h in r["history"]]
    return np.arange(1, length + 1), values


def epochs_to_reach(history, target):
    """The (fractional) epoch at which the training top-1 error first reaches ``target`` %,
    interpolated linearly between epoch ends (from 100% at epoch 0); None when it never does."""
    previous_epoch, previous = 0.0, 100.0
    for h in history:
        error = 100 * h["train_top1"]
        if error <= target:
            return previous_epoch + (previous - target) / max(previous - error, 1e-12) * (h["epoch"] - previous_epoch)
        previous_epoch, previous = h["epoch"], error
    return None


def mean_std(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarise(experiment, runs, target):
    """The measured effect and whether it agrees with the paper (a dict)."""
    (on_label, on_runs), (off_label, off_runs) = runs.items()
    arms = {label: {key: mean_std([100 * r["history"][-1][key] for r in rs])
                    for key in ("val_top1", "val_top5", "train_top1")}
            for label, rs in runs.items()}
    for label, rs in runs.items():
        arms[label]["seconds"] = mean_std([r["seconds"] for r in rs])
    if experiment.name == "figure1":
        reached = {label: [epochs_to_reach(r["history"], target) for r in rs] for label, rs in runs.items()}
        for label in runs:
            arms[label]["epochs_to_target"] = reached[label]
        epochs = len(on_runs[0]["history"])
        relu = [e for e in reached[on_label] if e is not None]
        tanh = [e for e in reached[off_label] if e is not None]
        count = len(reached[off_label])
        if not relu:
            verdict, ratio = f"ReLU did not reach {target:g}% in {epochs} epochs: no ratio", None
        else:
            # A seed that never reached the target counts as the last epoch: a lower bound.
            ratio = float(np.mean([epochs if e is None else e for e in reached[off_label]]) / np.mean(relu))
            if len(tanh) == count:
                verdict = f"tanh needs {ratio:.1f}x the epochs of ReLU (paper: 6)"
            else:
                verdict = (f"tanh reached {target:g}% in {len(tanh)} of {count} seeds within {epochs} epochs; "
                           f"counting the others as {epochs}, it needs at least {ratio:.1f}x the epochs of ReLU "
                           "(paper: 6)")
            if len(relu) < len(reached[on_label]):
                verdict += f"; ReLU reached it in {len(relu)} of {len(reached[on_label])} seeds"
            verdict += "; agrees in sign" if ratio > 1 else "; does NOT agree"
        # A second measure that needs no target both reach: the error tanh ends at, and when ReLU got there.
        level = float(np.mean([100 * r["history"][-1]["train_top1"] for r in off_runs]))
        relu_there = [epochs_to_reach(r["history"], level) for r in on_runs]
        if all(e is not None for e in relu_there):
            level_ratio = epochs / float(np.mean(relu_there))
            verdict += (f". tanh ends at {level:.1f}% training error after {epochs} epochs; ReLU was there after "
                        f"{np.mean(relu_there):.1f}: {level_ratio:.1f}x sooner")
        return {"arms": arms, "ratio": ratio, "verdict": verdict, "reproduced": ratio is not None and ratio > 1}
    effect = {}
    for key in ("val_top1", "val_top5", "train_top1"):
        diffs = [100 * (off["history"][-1][key] - on["history"][-1][key]) for on, off in zip(on_runs, off_runs)]
        effect[key] = mean_std(diffs) + (diffs,)
    mean, std, diffs = effect["val_top1"]
    noise = 2 * std / math.sqrt(len(diffs)) if len(diffs) > 1 else float("inf")
    if mean == 0:   # equal errors (e.g. one seed and few images): no sign to compare
        verdict = "no effect measured: both arms end at the same error"
    elif mean > noise:
        verdict = "reproduces: the trick lowers the error, beyond noise"
    elif mean > 0:
        verdict = "same sign as the paper, but within noise"
    elif mean >= -noise:
        verdict = "does NOT reproduce here: opposite sign, within noise"
    else:
        verdict = "does NOT reproduce here: the error is higher with the trick, beyond noise"
    if len(diffs) == 1:
        verdict += " (one seed: its noise is unknown)"
    gap = {label: arms[label]["val_top1"][0] - arms[label]["train_top1"][0] for label in runs}
    reproduced = mean > noise
    if experiment.top1 is None:   # a claim about overfitting: does the net overfit more without the trick?
        more = gap[off_label] - gap[on_label]
        if gap[off_label] < 2.0:
            verdict = (f"not testable here: without the trick the net does not overfit yet (validation - "
                       f"training error {gap[off_label]:+.1f} points); on validation error: {verdict}")
        elif more > 0:
            verdict = (f"overfits more without the trick (val - train {gap[off_label]:+.1f} against "
                       f"{gap[on_label]:+.1f} points); on validation error: {verdict}")
            reproduced = True
        else:
            verdict = f"does NOT overfit more without the trick; on validation error: {verdict}"
    return {"arms": arms, "effect": effect, "verdict": verdict, "reproduced": reproduced,
            "overfitting_gap": gap}


# --------------------------------------------------------------------------- reporting

def pm(pair, digits=1):
    mean, std = pair[:2]
    return f"{mean:+.{digits}f} ± {std:.{digits}f}"


def format_report(results):
    """The tables of one experiment (Markdown, as docs/experiments.md shows them)."""
    e, s = results["experiment"], results["summary"]
    name = e["name"]
    lines = ["", f"### {name} ({e['section']}): {e['trick']}",
             f"{results['seeds']} seeds x 2 arms, {results['epochs']} epochs each, "
             f"{results['seconds'] / 60:.1f} min in all; data {results['data']}", ""]
    if name == "figure1":
        target = results["target"]
        lines += [f"| arm | epochs to {target:g}% training error, per seed | final training top-1 error | s/run |",
                  "|---|---|---:|---:|"]
        for label, arm in s["arms"].items():
            reached = ", ".join("not reached" if v is None else f"{v:.1f}" for v in arm["epochs_to_target"])
            lines.append(f"| {label} | {reached} | {arm['train_top1'][0]:.1f} ± {arm['train_top1'][1]:.1f}% | "
                         f"{arm['seconds'][0]:.0f} |")
        lines += ["", f"Paper: {e['claim']}. Measured: {s['verdict']}."]
    else:
        lines += ["| the paper's claim | measured effect of the trick, top-1 (points) | top-5 | sign agrees | verdict |",
                  "|---|---:|---:|---|---|"]
        effect = s["effect"]
        agrees = "yes" if effect["val_top1"][0] > 0 else "no"
        lines.append(f"| {e['claim']} ({e['section']}) | {pm(effect['val_top1'])} | {pm(effect['val_top5'])} | "
                     f"{agrees} | {s['verdict']} |")
        lines += ["", "| arm | val top-1 error | val top-5 error | train top-1 error | val - train (overfitting) | s/run |",
                  "|---|---:|---:|---:|---:|---:|"]
        for label, arm in s["arms"].items():
            lines.append(f"| {label} | {arm['val_top1'][0]:.1f} ± {arm['val_top1'][1]:.1f}% | "
                         f"{arm['val_top5'][0]:.1f} ± {arm['val_top5'][1]:.1f}% | "
                         f"{arm['train_top1'][0]:.1f} ± {arm['train_top1'][1]:.1f}% | "
                         f"{s['overfitting_gap'][label]:+.1f} | {arm['seconds'][0]:.0f} |")
        lines += ["", "Effect = error with the trick off minus error with it on, per seed (final epoch, "
                      "validation, centre crop); mean ± standard deviation over seeds. Training error is "
                      "the running error of the last epoch, with augmentation and dropout."]
    if not s["reproduced"] and e["caveat"]:
        lines.append(f"Why it may not reproduce here: {e['caveat']}")
    return "\n".join(lines)


def format_overview(all_results):
    """One row per experiment run (``python experiments.py all`` prints it at the end)."""
    lines = ["", "| experiment | the paper's claim | measured | verdict | minutes |", "|---|---|---|---|---:|"]
    for results in all_results:
        e, s = results["experiment"], results["summary"]
        if e["name"] == "figure1":
            measured = "no ratio" if s["ratio"] is None else f"ratio {s['ratio']:.1f}"
        else:
            measured = (f"top-1 {pm(s['effect']['val_top1'])}, top-5 {pm(s['effect']['val_top5'])} points "
                        f"({results['seeds']} seeds)")
        lines.append(f"| {e['name']} ({e['section']}) | {e['claim']} | {measured} | {s['verdict']} | "
                     f"{results['seconds'] / 60:.1f} |")
    return "\n".join(lines)


def draw(experiment, runs, path, target):
    if experiment.name == "figure1":
        arms = [(label, i == 1) + series(rs, "train_top1") for i, (label, rs) in enumerate(runs.items())]
        return figures.arm_curves(arms, path, "Figure 1: training error rate by epoch, ReLU (solid) and tanh (dashed)",
                                  ylabel="training error (%)", target=target, ymax=100)
    arms = [(label, i == 1) + series(rs, "val_top1") for i, (label, rs) in enumerate(runs.items())]
    return figures.arm_curves(arms, path, f"{experiment.name} ({experiment.section}): validation top-1 error")
