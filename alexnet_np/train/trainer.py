"""The training loop of §5, on one process or on R ranks (data parallel).

Dimensions:
    N  batch    S  input size    K  classes    V  views (10 for ten-crop)

One step (§5): a batch of N augmented crops, the mean cross-entropy, backward, and SGD
with momentum 0.9 and weight decay 0.0005. After each epoch: the validation split is
evaluated on centre crops, the schedule is told the validation top-1 error (§5: divide the
rate by 10 when it stops improving, at most three times), a checkpoint is written
(``last.npz``, and ``best.npz`` when the validation error is the lowest so far), one
machine-readable line goes to ``log.jsonl``, and the curves and conv1 kernels are redrawn.

Exact resume. The position is (epoch, batch within it, step). The data pipeline derives
every random draw from (seed, epoch, batch) (``data.TrainLoader``) and the dropout masks
from (seed, step, layer, tower) (``layers.Dropout``); the checkpoint holds weights,
momentum, the schedule and the running metrics of the epoch, so a run stopped anywhere
and resumed repeats the same arithmetic: on the CPU the weights are bitwise those of an
uninterrupted run (``tests/test_train_resume.py``).

The host waits for the devices once a step: the loss and the top-1/top-5 misses are computed
on tower 0's device and read together after the update is queued (``forward``, ``read``);
the labels stay on the host (the loss layer gets a copy, which needs no wait).

Ranks (``distributed``). With R ranks each computes rows r*B/R .. of every batch of B
(the same order and draws as one process), its part of the loss (its rows' sum / B) and
of the gradients, which ``buckets.GradientBuckets`` sums across ranks while backward runs;
every rank then applies the same update. The loss, the top-k counts and a stop request
are summed in one small reduction per step; validation is shared (``evaluation``). Rank
0 alone prints, logs, checkpoints and draws; a checkpoint holds nothing of one rank, so
a run resumes at any number of ranks.

Stopping. Ctrl-C (SIGINT) or SIGTERM sets a flag; the ranks agree on it in the step's
reduction, finish that step (never half an SGD update), write one checkpoint at that
position and return "interrupted"; a second Ctrl-C stops at once without saving. A loss
that is not finite stops training (``TrainingError`` names the step) without saving that
step's update: the last checkpoint on disk is the last good one. A loss that stays at ln K (the loss of a
uniform guess) for a long time is reported once.
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

from . import checkpoint, figures
from ..parallel.buckets import GradientBuckets
from ..data.loader import TrainLoader
from ..parallel.distributed import World
from .evaluation import draw_figure4, evaluate_split, kernel_weights, progress_bar, sample_indices
from .metrics import TopKCounter, step_misses
from ..nn.backend import move
from ..nn.model import AlexNet
from .runs import BEST, LAST, LOG
from .schedule import FixedSchedule, PlateauSchedule


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


# --------------------------------------------------------------------------- the loop

class StopFlag:
    """SIGINT or SIGTERM -> ``requested``; a second one raises KeyboardInterrupt at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, say):
        self.requested, self.say, self.old = False, say, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = {s: signal.signal(s, self.handle) for s in self.SIGNALS}
        return self

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        what = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        self.say(f"{what}: stopping after this step and saving a checkpoint (Ctrl-C again quits without saving)")

    def __exit__(self, *exc):
        for s, old in self.old.items():
            signal.signal(s, old)
        return False


def _say(message):
    try:
        from tqdm import tqdm
        tqdm.write(message)
    except ImportError:
        print(message, flush=True)


class Trainer:
    """One run: model, optimiser, schedule, position, history; ``run()`` trains to the end.

    ``data_info``: a JSON-able dict saved with every checkpoint (where the data came from),
    so that evaluate.py can find the data of a run. ``model``: the net to train (default
    ``AlexNet(config, devices)``); experiments.py passes Figure 1's four-layer net, which
    has the same interface (run it with ``Options(figures=False)``: it has no towers).
    """

    def __init__(self, config, cache, devices, run_dir, options=None, data_info=None, say=_say, world=None,
                 model=None):
        self.config, self.cache, self.devices = config, cache, list(devices)
        self.run_dir, self.options = run_dir, options or Options()
        self.world = world or World()
        self.data_info = dict(data_info or {})
        self.say = say if self.world.is_root else (lambda message: None)
        self.progress = self.options.progress and self.world.is_root
        self.rows = self.world.rows(config.batch_size)   # this rank's rows of every batch
        self.device = self.devices[0]
        self.model = model if model is not None else AlexNet(config, self.devices)
        # Several ranks: gradients in flat buckets summed while backward runs (before SGD,
        # which keeps references to them).
        self.buckets = GradientBuckets(self.model, self.world) if self.world.size > 1 else None
        self.optimizer = self.model.optimizer(config)   # §5's SGD, in the net's form
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
        if self.world.is_root:
            os.makedirs(run_dir, exist_ok=True)

    # -------------------------------------------------------------- state
    def meta(self):
        return {"position": {"epoch": self.epoch, "batch": self.batch, "step": self.step},
                "schedule": self.schedule.state_dict(), "history": self.history,
                "counter": self.counter.state_dict(), "best": self.best, "elapsed": self.elapsed,
                "epoch_time": self.epoch_time, "stall": self.stall, "recent": list(self.recent),
                "data": self.data_info, "options": dataclasses.asdict(self.options),
                # the outputs' class ids (folder names: WordNet ids for ImageNet) and names, in
                # order, by which evaluation matches other data's classes (``classmap``)
                "classes": list(self.cache.classes), "class_names": list(self.cache.class_names),
                "device": self.device.kind,   # --resume continues on the same kind of device
                "saved_at": time.strftime("%Y-%m-%d %H:%M:%S")}

    def resume(self, ckpt):
        """Continue from a ``checkpoint.load`` result (same architecture, checked)."""
        checkpoint.restore(ckpt, self.model, self.optimizer)
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
        self.log({"kind": "resume", "checkpoint": ckpt.path, "epoch": self.epoch + 1,
                  "batch": self.batch, "step": self.step, "lr": self.optimizer.lr})

    def save(self, name):
        """Write checkpoint ``name`` of the current state (rank 0); never one with weights not
        finite (every rank checks: they hold the same weights, so they stop together)."""
        bad = self.model.first_not_finite()
        if bad is not None:
            self.fail(weight=bad)
        path = os.path.join(self.run_dir, name)
        if self.world.is_root:
            checkpoint.save(path, self.model, self.optimizer, self.meta())
        self.last_saved = (path, self.step)
        return path

    def log(self, record):
        if not self.world.is_root:
            return
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
                if self.world.sum_values([stop.requested])[0]:   # during the validation or figures
                    self.log({"kind": "interrupted", "epoch": self.epoch + 1, "batch": self.batch, "step": self.step,
                              "checkpoint": self.last_saved[0]})
                    self.say(f"interrupted at step {self.step} (after epoch {self.epoch}); checkpoint "
                             f"{self.last_saved[0]}; continue with --resume {self.run_dir}")
                    return "interrupted"
        return "finished"

    def train_epoch(self, stop):
        c, o, model = self.config, self.options, self.model
        loader = TrainLoader(self.cache, c, self.device, epoch=self.epoch, start_batch=self.batch,
                             threads=o.threads, rows=self.rows, devices=self.devices)
        per_epoch = loader.batches_per_epoch
        stall_steps = o.stall_steps or max(200, per_epoch)
        self.recent = collections.deque(self.recent, maxlen=stall_steps)
        bar = progress_bar(self.progress, per_epoch * c.batch_size, f"epoch {self.epoch + 1}/{c.epochs}",
                   initial=self.batch * c.batch_size)
        tick, tick_images = time.perf_counter(), 0
        interval_losses = []
        started = time.perf_counter()
        try:
            for images, labels in loader:
                # Overflow is not an error here: its outcome, a loss that is not finite, is
                # caught below with a message naming the step (NumPy would only warn).
                with np.errstate(over="ignore", invalid="ignore"):
                    figures = self.forward(images, labels)
                    if self.buckets is None:
                        model.backward()
                    else:
                        model.backward(finished=self.buckets.finished)   # sums start during backward
                        self.buckets.wait()
                    self.optimizer.step()
                    loss, wrong, stopping = self.read(figures, stop)     # the step's one host read
                    if not math.isfinite(loss):
                        self.fail(loss=loss)
                self.step += 1
                self.batch += 1
                self.counter.add_totals(c.batch_size, wrong, loss)
                interval_losses.append(loss)
                self.recent.append(loss)
                tick_images += c.batch_size
                if bar is not None:
                    bar.set_postfix_str(f"loss {self.counter.loss:.3f}  top-1 err {100 * self.counter.error(1):.1f}%  "
                                        f"lr {self.optimizer.lr:g}", refresh=False)
                    bar.update(c.batch_size)
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
                if stopping or (o.max_steps and self.step >= o.max_steps):
                    self.elapsed_add(started)
                    path = self.save(LAST)
                    why = "interrupted" if stopping else "stopped"
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

    def forward(self, images, labels):
        """Forward and loss of one step on this rank's rows (labels (N,) on the host). Returns
        its figures on tower 0's device, nothing read to the host: (3,) float64, this rank's
        part of the loss and its top-1 and top-5 misses (``read`` reads them)."""
        head = self.device
        with head:
            labels = move(labels, head)                                         # (N,) host -> device
        part = self.model.forward_loss(images, labels, train=True, step=self.step,
                                       rows=(self.rows.start, self.config.batch_size))
        with head:
            misses = step_misses(self.model.logits, labels, (1, 5), head.xp)    # (2,)
            return head.xp.concatenate([part.reshape(1).astype(head.xp.float64), misses])  # (3,)

    def read(self, figures, stop):
        """The step's one host read, once its update is queued (on a GPU the host then waits
        for the step to finish, and no sooner): ``forward``'s figures, summed over the ranks
        with the stop requests in one small reduction. Returns ``(loss, {1: wrong, 5: wrong}, stop)``."""
        loss, wrong1, wrong5 = (float(v) for v in self.device.to_host(figures))
        loss, wrong1, wrong5, stopping = self.world.sum_values([loss, wrong1, wrong5, stop.requested])
        return loss, {1: wrong1, 5: wrong5}, stopping > 0

    def elapsed_add(self, started, training=True):
        seconds = time.perf_counter() - started
        self.elapsed += seconds
        if training:
            self.epoch_time += seconds

    def fail(self, loss=None, weight=None):
        """Stop: the loss of the step being taken, or a weight after the last step, is not finite."""
        if weight is None:
            step, batch = self.step + 1, self.batch + 1
            what, outcome = f"the loss is {loss}", "without keeping that step's update"
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
                 "reproductions; see docs/training.md, 'If the loss stays at ln K'.")

    def end_epoch(self):
        c, o = self.config, self.options
        started = time.perf_counter()
        done_epoch = self.epoch + 1
        val = evaluate_split(self.model, self.cache, "val", c, self.device,
                             o.eval_batch_size or c.batch_size, progress=self.progress, threads=o.threads,
                             keep=sample_indices(len(self.cache.split("val")), 5) if self._last_epoch() else (),
                             desc=f"epoch {done_epoch} validation", world=self.world)
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
        if o.figures and self.world.is_root:
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
                                 pool=self.options.neighbour_pool, progress=self.progress,
                                 threads=self.options.threads, result=val)
            self.say(f"figures: {', '.join(paths)}")
