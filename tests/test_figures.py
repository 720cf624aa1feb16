"""The line charts (matplotlib) and the probabilities written on the prediction sheets."""
import math

import numpy as np
from PIL import Image

from alexnet_np.train import figures


def stalled_history(epochs=12):
    """A run that learns nothing: loss at ln 10, errors near chance, every curve ending at the
    top right, where a legend in a fixed upper-right corner would hide it."""
    rng = np.random.default_rng(0)
    return [{"epoch": e, "train_loss": math.log(10) + 0.01 * rng.standard_normal(),
             "val_loss": math.log(10) + 0.01 * rng.standard_normal(),
             "train_top1": 0.9 + 0.01 * rng.standard_normal(), "val_top1": 0.9 + 0.01 * rng.standard_normal(),
             "train_top5": 0.5 + 0.01 * rng.standard_normal(), "val_top5": 0.5 + 0.01 * rng.standard_normal(),
             "lr": 0.01} for e in range(1, epochs + 1)]


def points_under_legends(fig):
    """The curves' points that a legend box covers, as (panel title, curve label, epoch)."""
    fig.canvas.draw()                                                   # lays the legends out
    covered = []
    for ax in fig.axes:
        box = ax.get_legend().get_window_extent()
        for line in ax.get_lines():
            xs, ys = (np.asarray(v, dtype=float) for v in line.get_data())
            if line.get_transform() != ax.transData:                    # a level drawn across
                continue
            for x, y in zip(xs, ys):
                if math.isfinite(y) and box.contains(*ax.transData.transform((x, y))):
                    covered.append((ax.get_title(), line.get_label(), x))
    return covered


def test_the_legends_cover_no_point_of_a_stalled_run():
    fig = figures.curves_figure(stalled_history(), [{"epoch": 8, "old": 0.01, "new": 0.001}], num_classes=10)
    assert [ax.get_title() for ax in fig.axes] == ["loss (cross-entropy)", "error (%)"]
    assert points_under_legends(fig) == []
    rng = np.random.default_rng(1)
    arms = [("on", False, np.arange(1, 13), 88 + 2 * rng.random((3, 12))),
            ("off", True, np.arange(1, 13), 88 + 2 * rng.random((3, 12)))]
    assert points_under_legends(figures.arms_figure(arms, "towers (§3.2)")) == []


def test_charts_are_written_whole_with_one_epoch_or_none(tmp_path):
    path = figures.training_curves(stalled_history(1), [], str(tmp_path / "curves.png"), num_classes=10)
    assert Image.open(path).size == (1100, 440)
    arms = [("on", False, np.arange(1, 4), np.array([[50.0, np.nan, np.nan], [60.0, 40.0, np.nan]]))]
    path = figures.arm_curves(arms, str(tmp_path / "arms.png"), "t", target=25)
    assert Image.open(path).size == (760, 480)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arms.png", "curves.png"]   # no temporary left


def test_probabilities_get_the_decimals_that_tell_them_apart():
    assert figures.probability_labels([0.5568, 0.3962, 0.03, 0.01, 0.0]) == ["0.56", "0.40", "0.03", "0.01", "0.00"]
    # an uncertain 1000-class net: every probability near 1/1000, none may read 0.00
    assert figures.probability_labels([0.0031, 0.0029, 0.0012, 0.0011, 0.001]) == \
        ["0.0031", "0.0029", "0.0012", "0.0011", "0.0010"]
    assert figures.probability_labels([0.00312, 0.00309, 0.002]) == ["0.00312", "0.00309", "0.00200"]
    assert figures.probability_labels([0.5, 0.5, 0.0]) == ["0.50", "0.50", "0.00"]   # equal stay equal
    # a confident net: the classes far below the first need no digits of their own
    assert figures.probability_labels([0.602285, 0.394059, 0.003469, 0.000173, 0.000005]) == \
        ["0.60", "0.39", "0.00", "0.00", "0.00"]
