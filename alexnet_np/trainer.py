"""The training loop of §5, its evaluation, and what train.py / evaluate.py share.

Dimensions:
    N  batch    S  input size    K  classes    V  views (10 for ten-crop)

One step (§5): a batch of N augmented crops, the mean cross-entropy, backward, and SGD
with momentum 0.9 and weight decay 0.0005. After each epoch: the validation split is
evaluated on centre crops, the schedule is told the validation top-1 error (§5: divide the
rate by 10 when it stops improving, at most three times), a checkpoint is written
(``last.npz``, and ``best.npz`` when the validation error is the lowest so far), one
machine-readable line goes to ``log.jsonl``, and the curves and conv1 kernels are redrawn.

Exact resume. The position is (epoch, batch within it, step). The data pipeline derives
every random draw from (seed, epoch, batch) (``data.TrainLoader``), the checkpoint holds
weights, momentum, the schedule, the dropout generators and the running metrics of the
epoch, so a run stopped anywhere and resumed repeats the same arithmetic: on the CPU the
weights are bitwise those of an uninterrupted run (``tests/test_train_resume.py``).

Stopping. Ctrl-C (SIGINT) sets a flag; the loop finishes the step it is in (never half an
SGD update), writes a checkpoint at that position and returns "interrupted"; a second
Ctrl-C stops at once without saving. A loss that is not finite stops training before the
update (``TrainingError`` names the step); the last checkpoint on disk is the last good one.
A loss that stays at ln K (the loss of a uniform guess) for a long time is reported once.
"""
import collections
import dataclasses
import json
import math
import os
import signal
import threading
import time

import numpy as np

from . import checkpoint, classmap, figures, ilsvrc
from .backend import move, tower_devices
from .data import Cache, DataError, TrainLoader, eval_batches, is_cache
from .metrics import TopKCounter, average_views, softmax, topk_classes
from .model import AlexNet
from .optim import SGD
from .schedule import FixedSchedule, PlateauSchedule

LAST, BEST = "last.npz", "best.npz"
LOG, CONFIG_FILE = "log.jsonl", "config.json"
RUNS = "runs"              # where runs go by default, under the current folder
DATA_ROOT = "data_cache"   # where the demo data and prepared ImageFolders go by default


class TrainingError(Exception):
    """Training cannot go on (a loss that is not finite); the message is one line."""


@dataclasses.dataclass
class Options:
    """Settings of a run that are not part of the model's configuration (script-level)."""
    log_every: int = 20          # steps between machine-readable lines (and progress updates)
    checkpoint_every: int = 1000 # steps between mid-epoch checkpoints (0: only at epoch ends)
    keep_epochs: bool = False    # also keep epoch-NNN.npz for every epoch
    lr_steps: tuple = ()         # epochs after which to divide the rate by 10; () = §5's plateau rule
    max_steps: int = 0           # stop (with a checkpoint) after this many steps in all; 0 = no limit
    stall_steps: int = 0         # steps at ln K before the stall is reported; 0 = automatic
    eval_batch_size: int = 0     # 0: the training batch size
    progress: bool = True        # tqdm bars
    figures: bool = True         # redraw curves and kernels after each epoch, Figure 4 at the end
    neighbour_pool: int = 0      # training images searched for Figure 4's neighbours (0: all)
    threads: int = 2             # data threads


# --------------------------------------------------------------------------- data

def open_data(data, image_size, cache_dir=None, workers=None, progress=True, print_fn=print):
    """The ``Cache`` for ``--data``, and a record of where it came from (saved in checkpoints).

    ``data``: None (the built-in demo set, generated and prepared under ``data_cache/``),
    a prepared cache folder, or an ImageFolder root (``train/<class>/...``, ``val/...``) or
    ILSVRC-2012's files as distributed (``ILSVRC2012_img_train.tar``, ..., see ``ilsvrc``),
    prepared once into ``cache_dir`` (default ``data_cache/<name>-<image_size>``) at
    ``image_size`` and reused afterwards. Raises ``DataError`` with one line.
    """
    if data is None:
        from .demo_data import demo_cache
        path = demo_cache(DATA_ROOT, progress=progress)
        return Cache(path), {"demo": True, "cache": os.path.abspath(path), "source": None}
    if not os.path.exists(data):
        raise DataError(f"--data {data}: no such folder")
    if is_cache(data):
        return Cache(data), {"demo": False, "cache": os.path.abspath(data), "source": None}
    if not os.path.isdir(data):
        raise DataError(f"--data {data} is neither a folder of images (train/<class>/...) nor a prepared cache")
    if not os.path.isdir(os.path.join(data, "train")) and not ilsvrc.has_split(data, "train"):
        raise DataError(f"--data {data} has no train/ folder: expected an ImageFolder root "
                        "(train/<class>/<image>, val/<class>/<image>) or a prepared cache")
    name = os.path.basename(os.path.normpath(os.path.abspath(data)))
    dst = cache_dir or os.path.join(DATA_ROOT, f"{name}-{image_size}")
    from .prepare import prepare
    path = prepare(data, dst, image_size=image_size, workers=workers, progress=progress, print_fn=print_fn)
    return Cache(path), {"demo": False, "cache": os.path.abspath(path), "source": os.path.abspath(data)}


def latest_checkpoint(runs=RUNS, name=BEST):
    """``runs/<run>/<name>`` of the run whose checkpoint is newest; DataError when none."""
    found = []
    if os.path.isdir(runs):
        for run in os.listdir(runs):
            for candidate in (name, LAST):
                path = os.path.join(runs, run, candidate)
                if os.path.isfile(path):
                    found.append((os.path.getmtime(os.path.join(runs, run, LAST))
                                  if os.path.isfile(os.path.join(runs, run, LAST)) else os.path.getmtime(path), path))
                    break
    if not found:
        raise DataError(f"no checkpoint under {runs}/: train first (python train.py) or give --checkpoint")
    return max(found)[1]


def describe_devices(kind, devices):
    """One line: which device, why (for --device auto), and each tower's."""
    name = devices[0].name.split(":")[0]
    why = ""
    if kind == "auto":
        why = " (default: a GPU is usable)" if name == "gpu" else " (default: no usable GPU found)"
    return f"device: {name}{why}; " + ", ".join(f"tower {g}: {d.name}" for g, d in enumerate(devices))


def data_of_checkpoint(ckpt):
    """The ``--data`` a checkpoint's run used: None for the demo, else its cache (or source)."""
    info = ckpt.meta.get("data", {})
    if info.get("demo"):
        return None
    if info.get("cache") and is_cache(info["cache"]):
        return info["cache"]
    if info.get("source"):
        return info["source"]
    raise DataError(f"checkpoint {ckpt.path} does not say which data it was trained on: give --data")


def open_trained_model(path, device_kind, gpus, data, cache_dir=None, workers=None, progress=True):
    """A checkpoint's model on its devices, with the data it is to be run on.

    ``path`` None means the best checkpoint of the latest run; ``data`` None means the data
    that run used. Returns ``(path, checkpoint, model, cache)``; refuses a checkpoint whose
    classes do not fit the data's (``classmap.for_checkpoint``).
    """
    path = path or latest_checkpoint()
    ckpt = checkpoint.load(path)
    config = ckpt.config
    devices = tower_devices(device_kind, config.towers, gpus)
    print(describe_devices(device_kind, devices))
    cache, _ = open_data(data if data is not None else data_of_checkpoint(ckpt),
                         config.image_size, cache_dir, workers, progress)
    cache = classmap.for_checkpoint(cache, ckpt)   # classes by WordNet id, the checkpoint's mean image
    model = AlexNet(config, devices)
    checkpoint.restore(ckpt, model)
    return path, ckpt, model, cache


# --------------------------------------------------------------------------- evaluation

def model_probabilities(model, views, host, chunk):
    """Softmax outputs on the host, (N, K) float64; ten-crop views are averaged (§4.1).

    views (N, 3, S, S) or (N, V, 3, S, S) on any device; forward runs in chunks of at most
    ``chunk`` views. Leaves ``model.fc7_features`` of the last chunk.
    """
    if views.ndim == 4:
        return softmax(host(model.forward(views, train=False)))          # (N, K)
    N, V = views.shape[:2]
    flat = views.reshape((N * V,) + tuple(views.shape[2:]))              # (N*V, 3, S, S)
    logits = [host(model.forward(flat[i:i + chunk], train=False)) for i in range(0, N * V, chunk)]
    return average_views(np.concatenate(logits), V)                      # (N, K)


def evaluate_split(model, cache, split, config, device, batch_size, ten_crop=False, keep=(),
                   progress=False, threads=2, desc=None):
    """Top-1 / top-5 error, loss and every image's five most probable classes on ``split``.

    The loss is the mean of -ln p[label] of the prediction (the ten-crop average when
    ``ten_crop``). ``keep``: indices of images whose centre-crop fc7 features (D,) are
    returned too (Figure 4; only without ten-crop). Returns a dict.
    """
    host = device.to_host
    images_per_batch = max(1, batch_size // 10) if ten_crop else batch_size
    counter = TopKCounter()
    top_classes, top_probs, labels_all, kept = [], [], [], {}
    keep = sorted(set(int(i) for i in keep))
    start = 0
    bar = _bar(progress, len(cache.split(split)), desc or f"{split}", leave=False)
    try:
        for views, labels in eval_batches(cache, split, config, device, images_per_batch,
                                          ten_crop=ten_crop, threads=threads):
            probs = model_probabilities(model, views, host, batch_size)   # (N, K)
            labels = np.asarray(host(labels))                             # (N,)
            p_true = probs[np.arange(len(labels)), labels]
            loss = float(-np.log(np.maximum(p_true, 1e-300)).mean())
            counter.add(probs, labels, loss)
            k = min(5, probs.shape[1])
            cls = topk_classes(probs, k)                                  # (N, 5)
            top_classes.append(cls)
            top_probs.append(np.take_along_axis(probs, cls, axis=1))
            labels_all.append(labels)
            wanted = [i for i in keep if start <= i < start + len(labels)]
            if wanted and not ten_crop:
                features = np.asarray(host(model.fc7_features))           # (N, D)
                kept.update({i: features[i - start].copy() for i in wanted})
            start += len(labels)
            if bar is not None:
                bar.update(len(labels))
    finally:
        if bar is not None:
            bar.close()
    return {"count": counter.count, "loss": counter.loss,
            "top1": counter.error(1), "top5": counter.error(5),
            "wrong1": counter.wrong[1], "wrong5": counter.wrong[5],
            "top_classes": np.concatenate(top_classes), "top_probs": np.concatenate(top_probs),
            "labels": np.concatenate(labels_all), "features": kept}


# --------------------------------------------------------------------------- figures

def sample_indices(count, n):
    """``n`` indices spread evenly over ``range(count)`` (deterministic)."""
    n = min(n, count)
    return sorted(set(np.linspace(0, count - 1, n).round().astype(int).tolist()))


def draw_figure4(model, cache, config, device, folder, batch_size, pool=0, split="val",
                 show=8, queries=5, neighbours=6, progress=False, threads=2, result=None):
    """Figure 4, left and right, for the images of ``split``; returns the two paths.

    ``result``: an ``evaluate_split`` result of the same split and model (centre crop) with
    the features of ``sample_indices`` kept; computed here when not given.
    ``pool``: how many training images (the first ones) to search (0: all of them).
    """
    data = cache.split(split)
    shown = sample_indices(len(data), show)
    asked = sample_indices(len(data), queries)
    if result is None or any(i not in result["features"] for i in asked):
        result = evaluate_split(model, cache, split, config, device, batch_size, keep=asked,
                                progress=progress, threads=threads, desc=f"{split} (figures)")
    left = figures.prediction_sheet(
        np.stack([data.images[i] for i in shown]), result["top_classes"][shown],
        result["top_probs"][shown], data.labels[shown], cache.class_names,
        os.path.join(folder, "figure4_predictions.png"),
        title=f"five most probable labels, {split} images (Figure 4, left)")

    searched = "train" if "train" in cache.splits else split  # a folder of photos may have no train split
    train = cache.split(searched)
    limit = len(train) if pool <= 0 else min(pool, len(train))
    q = move(np.stack([result["features"][i] for i in asked]), device)      # (Q, D)

    def features(views):
        model.forward(views, train=False)
        return model.fc7_features                                           # (B, D) on the head device

    def batches():
        seen = 0
        bar = _bar(progress, limit, "fc7 neighbours", leave=False)
        stream = eval_batches(cache, searched, config, device, batch_size, threads=threads)
        try:
            for views, _ in stream:
                take = min(len(views), limit - seen)
                yield views[:take]
                seen += take
                if bar is not None:
                    bar.update(take)
                if seen >= limit:
                    break
        finally:
            stream.close()
            if bar is not None:
                bar.close()

    with device:
        index, distance = figures.nearest_neighbours(features, q, batches(), k=neighbours,
                                                     to_host=device.to_host)
    right = figures.neighbour_sheet(
        np.stack([data.images[i] for i in asked]),
        [[train.images[j] for j in row] for row in index], os.path.join(folder, "figure4_neighbours.png"),
        distances=distance,
        title=f"{split} images and their {neighbours} nearest {searched} images in fc7 space "
              f"(Figure 4, right; {limit} {searched} images searched)")
    return left, right


def kernel_weights(model):
    """[tower g's conv1 W (F/G, 3, 11, 11) on the host] (Figure 3)."""
    return [np.asarray(t.device.to_host(t.conv1.params["W"])) for t in model.towers]


# --------------------------------------------------------------------------- the loop

class StopFlag:
    """SIGINT -> ``requested``; a second SIGINT raises KeyboardInterrupt at once."""

    def __init__(self, say):
        self.requested, self.say, self.old = False, say, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self.handle)
        return self

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.say("Ctrl-C: stopping after this step and saving a checkpoint (Ctrl-C again quits without saving)")

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
        return False


def _bar(enabled, total, desc, leave=True, initial=0):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="img", unit_scale=True, leave=leave,
                dynamic_ncols=True, mininterval=0.5)


def _say(message):
    try:
        from tqdm import tqdm
        tqdm.write(message)
    except ImportError:
        print(message, flush=True)


class Trainer:
    """One run: model, optimiser, schedule, position, history; ``run()`` trains to the end.

    ``data_info``: a JSON-able dict saved with every checkpoint (where the data came from),
    so that evaluate.py can find the data of a run.
    """

    def __init__(self, config, cache, devices, run_dir, options=None, data_info=None, say=_say):
        self.config, self.cache, self.devices = config, cache, list(devices)
        self.run_dir, self.options = run_dir, options or Options()
        self.data_info, self.say = dict(data_info or {}), say
        self.device = self.devices[0]
        self.model = AlexNet(config, self.devices)
        self.optimizer = SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum,
                             weight_decay=config.weight_decay, decay_biases=config.decay_biases)
        if self.options.lr_steps:
            self.schedule = FixedSchedule(config.lr, self.options.lr_steps)
        else:
            self.schedule = PlateauSchedule(config.lr, config.lr_patience, config.lr_drops)
        self.epoch, self.batch, self.step = 0, 0, 0
        self.history = []
        self.counter = TopKCounter()
        self.best = {"val_top1": None, "epoch": 0}
        self.elapsed = 0.0       # seconds of training and validation, over all sessions
        self.epoch_time = 0.0    # seconds of training steps in the current epoch
        self.stall = {"reported": False}
        self.recent = []         # the losses of the last steps, for the stall check
        self.last_saved = None   # (path, step) of the newest checkpoint on disk
        self.chance_loss = math.log(config.num_classes)
        os.makedirs(run_dir, exist_ok=True)

    # -------------------------------------------------------------- state
    def meta(self):
        return {"position": {"epoch": self.epoch, "batch": self.batch, "step": self.step},
                "schedule": self.schedule.state_dict(), "history": self.history,
                "counter": self.counter.state_dict(), "best": self.best, "elapsed": self.elapsed,
                "epoch_time": self.epoch_time, "stall": self.stall, "recent": list(self.recent),
                "data": self.data_info, "options": dataclasses.asdict(self.options),
                "saved_at": time.strftime("%Y-%m-%d %H:%M:%S")}

    def resume(self, ckpt):
        """Continue from a ``checkpoint.load`` result (same architecture, checked)."""
        reseeded = checkpoint.restore(ckpt, self.model, self.optimizer)
        meta = ckpt.meta
        self.epoch, self.batch, self.step = ckpt.position
        try:
            self.schedule.load_state_dict(meta["schedule"])
        except ValueError as error:
            raise checkpoint.CheckpointError(f"checkpoint {ckpt.path}: {error}") from None
        self.optimizer.lr = self.schedule.lr
        self.history = list(meta["history"])
        self.counter.load_state_dict(meta["counter"])
        self.best = dict(meta["best"])
        self.elapsed = meta.get("elapsed", 0.0)
        self.epoch_time = meta.get("epoch_time", 0.0)
        self.stall = dict(meta.get("stall", self.stall))
        self.recent = list(meta.get("recent", []))
        self.last_saved = (ckpt.path, self.step)
        if reseeded:
            self.say(f"note: the dropout generators ({', '.join(reseeded)}) live on a GPU and cannot be "
                     f"saved; re-seeded from (seed, step {self.step}): later masks differ from an "
                     "uninterrupted run's")
        self.log({"kind": "resume", "checkpoint": ckpt.path, "epoch": self.epoch + 1,
                  "batch": self.batch, "step": self.step, "lr": self.optimizer.lr})

    def save(self, name):
        """Write checkpoint ``name`` of the current state; never one with weights not finite."""
        bad = [n for n, w, _, d in self.model.parameters() if not bool(d.xp.isfinite(w).all())]
        if bad:
            self.fail(weight=bad[0])
        path = os.path.join(self.run_dir, name)
        checkpoint.save(path, self.model, self.optimizer, self.meta())
        self.last_saved = (path, self.step)
        return path

    def log(self, record):
        record = dict(record, time=round(time.time(), 3))
        with open(os.path.join(self.run_dir, LOG), "a") as f:
            f.write(json.dumps(record) + "\n")

    # -------------------------------------------------------------- training
    def run(self):
        """Train to ``config.epochs``. Returns "finished", "interrupted" or "stopped" (max_steps)."""
        if self.epoch >= self.config.epochs:
            self.say(f"the run has finished its {self.config.epochs} epochs: nothing to do "
                     "(give --epochs to train longer)")
            return "finished"
        self.log({"kind": "start", "epoch": self.epoch + 1, "batch": self.batch, "step": self.step,
                  "lr": self.optimizer.lr, "config": self.config.to_dict(), "schedule": self.schedule.describe()})
        with StopFlag(self.say) as stop:
            while self.epoch < self.config.epochs:
                outcome = self.train_epoch(stop)
                if outcome != "epoch done":
                    return outcome
                self.end_epoch()
                if stop.requested:   # during the validation or figures of the epoch's end
                    self.log({"kind": "interrupted", "epoch": self.epoch + 1, "batch": self.batch, "step": self.step,
                              "checkpoint": self.last_saved[0]})
                    self.say(f"interrupted at step {self.step} (after epoch {self.epoch}); checkpoint "
                             f"{self.last_saved[0]}; continue with --resume {self.run_dir}")
                    return "interrupted"
        return "finished"

    def train_epoch(self, stop):
        c, o, model = self.config, self.options, self.model
        loader = TrainLoader(self.cache, c, self.device, epoch=self.epoch, start_batch=self.batch,
                             threads=o.threads)
        per_epoch = loader.batches_per_epoch
        stall_steps = o.stall_steps or max(200, per_epoch)
        self.recent = collections.deque(self.recent, maxlen=stall_steps)
        bar = _bar(o.progress, per_epoch * c.batch_size, f"epoch {self.epoch + 1}/{c.epochs}",
                   initial=self.batch * c.batch_size)
        host = self.device.to_host
        tick, tick_images = time.perf_counter(), 0
        interval_losses = []
        started = time.perf_counter()
        try:
            for images, labels in loader:
                # Overflow is not an error here: its outcome, a loss that is not finite, is
                # caught below with a message naming the step (NumPy would only warn).
                with np.errstate(over="ignore", invalid="ignore"):
                    loss = float(host(model.forward_loss(images, labels, train=True)))
                    if not math.isfinite(loss):
                        self.fail(loss=loss)
                    model.zero_grads()
                    model.backward()
                    self.optimizer.step()
                self.step += 1
                self.batch += 1
                self.counter.add(host(model.logits), host(labels), loss)
                interval_losses.append(loss)
                self.recent.append(loss)
                tick_images += len(labels)
                if bar is not None:
                    bar.set_postfix_str(f"loss {self.counter.loss:.3f}  top-1 err {100 * self.counter.error(1):.1f}%  "
                                        f"lr {self.optimizer.lr:g}", refresh=False)
                    bar.update(len(labels))
                if self.step % o.log_every == 0 or self.batch == per_epoch:
                    now = time.perf_counter()
                    rate = tick_images / max(now - tick, 1e-9)
                    mean_loss = float(np.mean(interval_losses))
                    self.log({"kind": "step", "epoch": self.epoch + 1, "batch": self.batch, "step": self.step,
                              "loss": mean_loss, "train_top1": self.counter.error(1),
                              "train_top5": self.counter.error(5), "lr": self.optimizer.lr,
                              "images_per_s": round(rate, 2)})
                    self.watch_stall(stall_steps)
                    tick, tick_images, interval_losses = now, 0, []
                if o.checkpoint_every and self.step % o.checkpoint_every == 0 and self.batch < per_epoch:
                    self.elapsed_add(started)
                    started = time.perf_counter()
                    self.save(LAST)
                if stop.requested or (o.max_steps and self.step >= o.max_steps):
                    self.elapsed_add(started)
                    path = self.save(LAST)
                    why = "interrupted" if stop.requested else "stopped"
                    self.log({"kind": why, "epoch": self.epoch + 1, "batch": self.batch, "step": self.step,
                              "checkpoint": path})
                    if bar is not None:
                        bar.close()
                        bar = None
                    self.say(f"{why} at step {self.step} (epoch {self.epoch + 1}, batch {self.batch} of "
                             f"{per_epoch}); checkpoint {path}; continue with --resume {self.run_dir}")
                    return why
        finally:
            if bar is not None:
                bar.close()
        self.elapsed_add(started)
        return "epoch done"

    def elapsed_add(self, started, training=True):
        seconds = time.perf_counter() - started
        self.elapsed += seconds
        if training:
            self.epoch_time += seconds

    def fail(self, loss=None, weight=None):
        """Stop: the loss of the step being taken, or a weight after the last step, is not finite."""
        if weight is None:
            step, batch = self.step + 1, self.batch + 1
            what, outcome = f"the loss is {loss}", "before that update"
        else:
            step, batch = self.step, self.batch
            what, outcome = f"the weights are not finite (first: {weight})", "without saving them"
        where = f"step {step} (epoch {self.epoch + 1}, batch {batch})"
        self.log({"kind": "not finite", "what": what, "epoch": self.epoch + 1, "batch": batch, "step": step})
        kept = (f"the last good checkpoint is {self.last_saved[0]} (step {self.last_saved[1]})"
                if self.last_saved else "no checkpoint had been written yet")
        raise TrainingError(f"{what} at {where}: training stopped {outcome}; {kept}. A lower --lr usually helps.")

    def watch_stall(self, stall_steps):
        """Report (once) a mean loss over the last ``stall_steps`` steps within 2% of ln K."""
        if self.stall["reported"] or len(self.recent) < stall_steps:
            return
        mean_loss = float(np.mean(self.recent))
        if abs(mean_loss - self.chance_loss) > 0.02 * self.chance_loss:
            return
        self.stall["reported"] = True
        K = self.config.num_classes
        self.log({"kind": "stall", "step": self.step, "steps": stall_steps, "loss": mean_loss})
        self.say(f"warning: the loss has stayed at ln({K}) = {self.chance_loss:.3f}, the loss of a uniform guess "
                 f"over {K} classes, for the last {stall_steps} steps (mean {mean_loss:.3f}): the net is not "
                 "learning. The paper's N(0, 0.01) initialisation is known to stall like this in some "
                 "reproductions; see README.md, 'If the loss stays at ln K'.")

    def end_epoch(self):
        c, o = self.config, self.options
        started = time.perf_counter()
        done_epoch = self.epoch + 1
        val = evaluate_split(self.model, self.cache, "val", c, self.device,
                             o.eval_batch_size or c.batch_size, progress=o.progress, threads=o.threads,
                             keep=sample_indices(len(self.cache.split("val")), 5) if self._last_epoch() else (),
                             desc=f"epoch {done_epoch} validation")
        lr_used = self.optimizer.lr
        self.elapsed_add(started, training=False)
        record = {"epoch": done_epoch, "step": self.step, "lr": lr_used,
                  "train_loss": self.counter.loss, "train_top1": self.counter.error(1),
                  "train_top5": self.counter.error(5),
                  "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
                  "val_images": val["count"], "elapsed_s": round(self.elapsed, 2),
                  "images_per_s": round(self.counter.count / max(self.epoch_time, 1e-9), 2),
                  "epoch_train_s": round(self.epoch_time, 2)}
        self.history.append(record)
        self.log(dict(record, kind="epoch"))
        self.say(f"epoch {done_epoch}/{c.epochs}: train loss {record['train_loss']:.4f}, "
                 f"top-1 {100 * record['train_top1']:.2f}%, top-5 {100 * record['train_top5']:.2f}% error | "
                 f"val loss {val['loss']:.4f}, top-1 {100 * val['top1']:.2f}%, top-5 {100 * val['top5']:.2f}% "
                 f"error ({val['count']} images, centre crop) | lr {lr_used:g} | {self.elapsed:.0f} s")
        change = self.schedule.update(done_epoch, val["top1"])
        if change is not None:
            self.optimizer.lr = change.new
            self.log(dict(change.to_dict(), kind="lr change"))
            self.say(f"learning rate {change.old:g} -> {change.new:g} after epoch {done_epoch}: {change.reason}")
        improved = self.best["val_top1"] is None or val["top1"] < self.best["val_top1"]
        if improved:
            self.best = {"val_top1": val["top1"], "val_top5": val["top5"], "epoch": done_epoch}
        self.epoch, self.batch = done_epoch, 0
        self.counter.reset()
        self.epoch_time = 0.0
        path = self.save(LAST)
        if improved:
            self.save(BEST)
        self.last_saved = (path, self.step)   # the resume point (best.npz may be older)
        if o.keep_epochs:
            self.save(f"epoch-{done_epoch:03d}.npz")
        if o.figures:
            self.draw(final=self.epoch >= c.epochs, val=val)

    def _last_epoch(self):
        return self.options.figures and self.epoch + 1 >= self.config.epochs

    def draw(self, final=False, val=None):
        """Curves and conv1 kernels after every epoch; Figure 4 after the last one."""
        figures.training_curves(self.history, self.schedule.changes, os.path.join(self.run_dir, "curves.png"),
                                num_classes=self.config.num_classes,
                                title=f"{os.path.basename(os.path.abspath(self.run_dir))}: training curves")
        figures.conv1_kernels(kernel_weights(self.model), os.path.join(self.run_dir, "conv1_kernels.png"),
                              title=f"conv1 kernels after epoch {self.epoch} (Figure 3)")
        if final:
            paths = draw_figure4(self.model, self.cache, self.config, self.device, self.run_dir,
                                 self.options.eval_batch_size or self.config.batch_size,
                                 pool=self.options.neighbour_pool, progress=self.options.progress,
                                 threads=self.options.threads, result=val)
            self.say(f"figures: {', '.join(paths)}")
