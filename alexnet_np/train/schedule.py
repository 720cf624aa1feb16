"""The learning-rate schedule of §5, and a fixed alternative.

§5: "The heuristic which we followed was to divide the learning rate by 10 when the
validation error rate stopped improving with the current learning rate. The learning rate
was initialized at 0.01 and reduced three times prior to termination."

``PlateauSchedule`` makes that rule exact: after each epoch it is told the validation
(top-1) error. An epoch *improves* when its error is lower than the best so far by more
than ``min_delta``. When ``patience`` epochs have passed without an improvement since the
best epoch or since the last drop (whichever is later), the rate is divided by ``factor``
(10), at most ``max_drops`` (3) times. ``FixedSchedule`` divides it at listed epochs
instead (e.g. 30, 60, 80), which is what most later reproductions do.

Both return, from ``update``, ``None`` or a ``Change(epoch, old, new, reason)``; the
trainer sets ``optimizer.lr = change.new`` and logs the reason. Both keep their whole
state in ``state_dict()`` (plain JSON values) for exact resume.
"""
import dataclasses
import math


@dataclasses.dataclass
class Change:
    epoch: int          # the epoch whose result caused the change (counted from 1)
    old: float
    new: float
    reason: str

    def to_dict(self):
        return dataclasses.asdict(self)


class PlateauSchedule:
    """Divide the rate by ``factor`` after ``patience`` epochs without improvement (§5)."""

    kind = "plateau"

    def __init__(self, lr, patience=5, max_drops=3, factor=10.0, min_delta=0.0):
        if patience < 1:
            raise ValueError(f"lr patience must be at least 1 epoch, not {patience}")
        self.lr, self.patience, self.max_drops = lr, patience, max_drops
        self.factor, self.min_delta = factor, min_delta
        self.best, self.best_epoch = math.inf, 0
        self.last_drop_epoch = 0
        self.drops = 0
        self.changes = []   # [Change.to_dict()], the whole history

    def update(self, epoch, val_error):
        """Record epoch ``epoch``'s (counted from 1) validation error; maybe drop the rate."""
        if val_error < self.best - self.min_delta:
            self.best, self.best_epoch = val_error, epoch
            return None
        if self.drops >= self.max_drops:
            return None
        waited = epoch - max(self.best_epoch, self.last_drop_epoch)
        if waited < self.patience:
            return None
        old, self.lr = self.lr, self.lr / self.factor
        self.drops += 1
        self.last_drop_epoch = epoch
        change = Change(epoch, old, self.lr, (
            f"validation error {100 * val_error:.2f}% has not improved on the best "
            f"{100 * self.best:.2f}% (epoch {self.best_epoch}) for {waited} epochs "
            f"(patience {self.patience}): drop {self.drops} of at most {self.max_drops}"))
        self.changes.append(change.to_dict())
        return change

    def describe(self):
        return (f"plateau: divide the learning rate by {self.factor:g} when the validation top-1 "
                f"error has not improved for {self.patience} epochs, at most {self.max_drops} times (§5)")

    def state_dict(self):
        return {"kind": self.kind, "lr": self.lr, "patience": self.patience,
                "max_drops": self.max_drops, "factor": self.factor, "min_delta": self.min_delta,
                "best": None if math.isinf(self.best) else self.best, "best_epoch": self.best_epoch,
                "last_drop_epoch": self.last_drop_epoch, "drops": self.drops,
                "changes": list(self.changes)}

    def load_state_dict(self, state):
        check_kind(self, state)
        self.lr, self.drops = state["lr"], state["drops"]
        self.best = math.inf if state["best"] is None else state["best"]
        self.best_epoch, self.last_drop_epoch = state["best_epoch"], state["last_drop_epoch"]
        self.changes = list(state["changes"])


class FixedSchedule:
    """Divide the rate by ``factor`` after each epoch listed in ``epochs`` (counted from 1)."""

    kind = "fixed"

    def __init__(self, lr, epochs, factor=10.0):
        self.lr, self.epochs, self.factor = lr, tuple(sorted(epochs)), factor
        self.drops = 0
        self.changes = []

    def update(self, epoch, val_error=None):
        if epoch not in self.epochs:
            return None
        old, self.lr = self.lr, self.lr / self.factor
        self.drops += 1
        change = Change(epoch, old, self.lr, f"fixed schedule: epoch {epoch} is in {list(self.epochs)}")
        self.changes.append(change.to_dict())
        return change

    def describe(self):
        return f"fixed: divide the learning rate by {self.factor:g} after epochs {list(self.epochs)}"

    def state_dict(self):
        return {"kind": self.kind, "lr": self.lr, "epochs": list(self.epochs), "factor": self.factor,
                "drops": self.drops, "changes": list(self.changes)}

    def load_state_dict(self, state):
        check_kind(self, state)
        self.lr, self.drops, self.changes = state["lr"], state["drops"], list(state["changes"])


def check_kind(schedule, state):
    if state.get("kind") != schedule.kind:
        raise ValueError(f"the checkpoint's learning-rate schedule is {state.get('kind')!r}, "
                         f"this run's is {schedule.kind!r}")
