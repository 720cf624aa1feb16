"""Top-k error against hand-computed examples, ties included (alexnet_np/train/metrics.py)."""
import math

import numpy as np
import pytest

from alexnet_np.train.metrics import (TopKCounter, average_views, label_ranks, softmax, topk_classes,
                                topk_correct, topk_error)

# Four examples, six classes. Ranks worked out by hand with the documented rule:
# rank(y) = #{j: s_j > s_y} + #{j < y: s_j = s_y}.
SCORES = np.array([
    [0.10, 0.50, 0.05, 0.20, 0.10, 0.05],   # label 1: the maximum              -> rank 0
    [0.30, 0.30, 0.10, 0.10, 0.10, 0.10],   # label 1: tied with class 0 (lower) -> rank 1
    [0.30, 0.30, 0.10, 0.10, 0.10, 0.10],   # label 0: tied with class 1 (higher) -> rank 0
    [0.25, 0.15, 0.15, 0.15, 0.15, 0.15],   # label 5: 1 above, 4 tied before it -> rank 5
])
LABELS = np.array([1, 1, 0, 5])


def test_ranks_by_hand():
    assert label_ranks(SCORES, LABELS).tolist() == [0, 1, 0, 5]


def test_top1_and_top5_error_by_hand():
    # top-1: examples 1 (rank 1) and 3 (rank 5) are wrong -> 2/4
    assert topk_error(SCORES, LABELS, 1) == pytest.approx(0.5)
    # top-5: only example 3 (rank 5) is outside the first five -> 1/4
    assert topk_error(SCORES, LABELS, 5) == pytest.approx(0.25)
    assert topk_correct(SCORES, LABELS, 2).tolist() == [True, True, True, False]


def test_rule_matches_a_stable_sort_and_topk_classes():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(200, 7)).astype(np.float64)  # many ties
    labels = rng.integers(0, 7, size=200)
    order = np.argsort(-scores, axis=1, kind="stable")                # (N, K) the reference ranking
    expected = np.argmax(order == labels[:, None], axis=1)
    assert label_ranks(scores, labels).tolist() == expected.tolist()
    assert topk_classes(scores, 5).tolist() == order[:, :5].tolist()
    for k in (1, 3, 5):
        in_list = (topk_classes(scores, k) == labels[:, None]).any(axis=1)
        assert topk_correct(scores, labels, k).tolist() == in_list.tolist()


def test_uniform_scores_give_chance_exactly():
    # Every class once as the label, all scores equal: classes 0..k-1 count as predicted.
    K = 10
    scores = np.full((K, K), 0.1)
    labels = np.arange(K)
    assert topk_error(scores, labels, 1) == pytest.approx(1 - 1 / K)
    assert topk_error(scores, labels, 5) == pytest.approx(1 - 5 / K)


def test_counter_accumulates_and_round_trips():
    counter = TopKCounter()
    counter.add(SCORES[:2], LABELS[:2], loss=1.0)
    counter.add(SCORES[2:], LABELS[2:], loss=3.0)
    assert counter.count == 4
    assert counter.wrong == {1: 2, 5: 1}
    assert counter.error(1) == pytest.approx(0.5) and counter.error(5) == pytest.approx(0.25)
    assert counter.loss == pytest.approx(2.0)
    other = TopKCounter()
    other.load_state_dict(counter.state_dict())
    assert other.state_dict() == counter.state_dict()
    assert math.isnan(TopKCounter().error(1))


def test_ten_crop_average_of_softmax():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((3 * 10, 4))
    probs = average_views(logits, 10)
    for n in range(3):
        expected = np.mean([np.exp(z) / np.exp(z).sum() for z in logits[n * 10:(n + 1) * 10]], axis=0)
        np.testing.assert_allclose(probs[n], expected, rtol=1e-12)
    np.testing.assert_allclose(softmax(np.array([[1000.0, 1000.0]])), [[0.5, 0.5]])  # stable
    with pytest.raises(ValueError):
        average_views(logits[:7], 10)


def test_bad_labels_are_refused():
    with pytest.raises(ValueError):
        label_ranks(SCORES, np.array([0, 1, 2, 6]))
