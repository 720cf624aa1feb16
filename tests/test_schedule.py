"""The learning-rate schedule of §5 on a scripted validation error (alexnet_np/train/schedule.py)."""
import json

import pytest

from alexnet_np.train.schedule import FixedSchedule, PlateauSchedule


def run(schedule, errors):
    """Feed errors for epochs 1, 2, ...; return {epoch: new lr} of the changes."""
    changes = {}
    for epoch, error in enumerate(errors, start=1):
        change = schedule.update(epoch, error)
        if change is not None:
            changes[epoch] = change.new
    return changes


def test_drops_on_plateaus_at_most_three_times():
    s = PlateauSchedule(0.01, patience=2, max_drops=3)
    errors = [0.9, 0.8, 0.7,          # improving: no change
              0.7, 0.71,              # epochs 4, 5 without improvement -> drop after epoch 5
              0.6,                    # improves
              0.65, 0.6,              # 2 epochs without (0.6 is not < 0.6) -> drop after epoch 8
              0.61, 0.62,             # -> drop after epoch 10 (patience counted from the drop)
              0.63, 0.64, 0.65, 0.66]  # would be a fourth drop: refused
    changes = run(s, errors)
    assert list(changes) == [5, 8, 10]
    assert [round(v, 12) for v in changes.values()] == [0.001, 0.0001, 0.00001]
    assert s.drops == 3 and s.lr == pytest.approx(1e-5)
    assert len(s.changes) == 3
    assert "has not improved on the best 60.00% (epoch 6) for 2 epochs" in s.changes[1]["reason"]


def test_patience_restarts_after_a_drop():
    s = PlateauSchedule(0.1, patience=3, max_drops=3)
    # best at epoch 1; no improvement after: drops after epochs 4 and 7, not 5 and 6.
    changes = run(s, [0.5] + [0.6] * 7)
    assert list(changes) == [4, 7]


def test_improvement_resets_the_wait():
    s = PlateauSchedule(0.01, patience=2)
    assert run(s, [0.5, 0.6, 0.4, 0.45, 0.39, 0.41]) == {}


def test_state_round_trip_through_json_continues_identically():
    errors = [0.9, 0.8, 0.8, 0.8, 0.7, 0.75, 0.76, 0.77, 0.78, 0.79]
    whole = PlateauSchedule(0.01, patience=2)
    expected = run(whole, errors)
    first = PlateauSchedule(0.01, patience=2)
    run(first, errors[:4])
    second = PlateauSchedule(0.01, patience=2)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    later = {}
    for epoch, error in enumerate(errors[4:], start=5):
        change = second.update(epoch, error)
        if change is not None:
            later[epoch] = change.new
    earlier = {e: v for e, v in expected.items() if e <= 4}
    assert {**earlier, **later} == expected
    assert second.state_dict() == whole.state_dict()


def test_fixed_schedule_and_kind_check():
    s = FixedSchedule(0.01, (30, 60, 80))
    changes = run(s, [0.5] * 90)
    assert list(changes) == [30, 60, 80]
    assert s.lr == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="schedule"):
        PlateauSchedule(0.01).load_state_dict(s.state_dict())
