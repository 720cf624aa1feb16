"""Top-k error (§6), the softmax of the ten-crop average, and running counters.

Dimensions:
    N  examples    K  classes    V  views of one image (10 for ten-crop)

Top-k error (§6: "the fraction of test images for which the correct label is not among
the k labels considered most probable by the model"). "The k most probable" is ambiguous
when scores tie, so the rule here is fixed and deterministic:

    classes are ranked by score, highest first; equal scores are ranked by class index,
    lowest first (the order of a stable sort of -score, ``np.argsort(-s, kind="stable")``).
    The label y of an example is in its top k when
        rank(y) = #{j : s[j] > s[y]} + #{j < y : s[j] = s[y]}   <   k.

So a tie is never counted in the model's favour by accident: with all K scores equal
(an untrained net's uniform output) only classes 0..k-1 are "predicted", and the error is
exactly 1 - k/K on labels spread evenly over the classes. The rule needs no sort, costs
O(N K), and ``topk_classes`` lists the same k classes in the same order.
All functions take NumPy arrays on the host (the trainer moves scores there first: N x K
is small).
"""
import math

import numpy as np


def label_ranks(scores, labels):
    """The rank of each true label under the rule above (0 = most probable).

    scores (N, K) float; labels (N,) int -> (N,) int
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels).astype(np.int64)
    N, K = scores.shape
    if labels.shape != (N,):
        raise ValueError(f"labels must be ({N},), got {labels.shape}")
    if N and (labels.min() < 0 or labels.max() >= K):
        raise ValueError(f"labels must lie in 0..{K - 1}")
    true = scores[np.arange(N), labels][:, None]                  # (N, 1)
    above = (scores > true).sum(axis=1)                           # (N,) strictly more probable
    lower = np.arange(K)[None, :] < labels[:, None]               # (N, K) classes before the label
    tied_before = ((scores == true) & lower).sum(axis=1)          # (N,) equal and ranked first
    return above + tied_before


def step_misses(scores, labels, ks, xp=np):
    """How many labels are not among the k most probable classes, for each k of ``ks``, as
    ``label_ranks`` ranks them (ties by class index), computed where the scores are: on a
    GPU nothing is read to the host (the training step reads its figures once, after the
    update is queued). scores (N, K) float, labels (N,) int, both with ``xp`` -> (len(ks),)
    float64."""
    N, K = scores.shape
    true = scores[xp.arange(N), labels][:, None]                      # (N, 1)
    above = (scores > true).sum(axis=1)                               # (N,) strictly more probable
    lower = xp.arange(K)[None, :] < labels[:, None]                   # (N, K) classes before the label
    ranks = above + ((scores == true) & lower).sum(axis=1)            # (N,)
    return xp.stack([ranks >= k for k in ks]).sum(axis=1, dtype=xp.float64)   # (len(ks),)


def topk_correct(scores, labels, k):
    """(N,) bool: is the label among the k most probable classes (ties by class index)."""
    return label_ranks(scores, labels) < k


def topk_error(scores, labels, k):
    """The fraction of examples whose label is not in the top k; nan for no examples."""
    correct = topk_correct(scores, labels, k)
    return float(1.0 - correct.mean()) if correct.size else math.nan


def topk_classes(scores, k):
    """(N, k) class indices, most probable first, ties by lowest class index."""
    scores = np.asarray(scores)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def softmax(logits):
    """Row-wise softmax, stable: exp(z - max z) / sum. logits (..., K) -> (..., K) float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def average_views(logits, views):
    """The ten-crop prediction (§4.1): the mean of the V views' softmax outputs.

    logits (N*V, K), grouped by image (the V views of image n are rows n*V .. n*V+V-1)
    -> probabilities (N, K) float64
    """
    probs = softmax(logits)                               # (N*V, K)
    NV, K = probs.shape
    if NV % views:
        raise ValueError(f"{NV} rows are not a whole number of {views}-view groups")
    return probs.reshape(NV // views, views, K).mean(axis=1)


class TopKCounter:
    """Running loss and top-1 / top-5 error over batches (an epoch, or an evaluation).

    ``add(scores, labels, loss)``: scores (N, K) (logits or probabilities: the ranking is
    the same), labels (N,), loss the batch's mean loss (or None).
    """

    def __init__(self, ks=(1, 5)):
        self.ks = tuple(ks)
        self.reset()

    def reset(self):
        self.count = 0
        self.wrong = {k: 0 for k in self.ks}
        self.loss_sum, self.loss_count = 0.0, 0

    def add(self, scores, labels, loss=None):
        self.add_ranks(label_ranks(scores, labels), loss)

    def add_ranks(self, ranks, loss=None):
        """Add examples by the ranks (N,) of their labels (``label_ranks``)."""
        ranks = np.asarray(ranks)
        self.count += int(ranks.size)
        for k in self.ks:
            self.wrong[k] += int((ranks >= k).sum())
        if loss is not None:
            self.loss_sum += float(loss) * int(ranks.size)
            self.loss_count += int(ranks.size)

    def add_totals(self, count, wrong, loss):
        """Add ``count`` examples of which ``wrong[k]`` missed the top k, with mean loss ``loss``
        (the totals of a batch computed on several ranks)."""
        self.count += int(count)
        for k in self.ks:
            self.wrong[k] += int(wrong[k])
        self.loss_sum += float(loss) * int(count)
        self.loss_count += int(count)

    def error(self, k):
        return self.wrong[k] / self.count if self.count else math.nan

    @property
    def loss(self):
        return self.loss_sum / self.loss_count if self.loss_count else math.nan

    def state_dict(self):
        return {"ks": list(self.ks), "count": self.count,
                "wrong": {str(k): v for k, v in self.wrong.items()},
                "loss_sum": self.loss_sum, "loss_count": self.loss_count}

    def load_state_dict(self, state):
        self.ks = tuple(state["ks"])
        self.count = state["count"]
        self.wrong = {int(k): v for k, v in state["wrong"].items()}
        self.loss_sum, self.loss_count = state["loss_sum"], state["loss_count"]
