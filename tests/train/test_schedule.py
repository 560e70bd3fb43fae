"""The learning-rate schedules: the paper's plateau rule [5], onecycle, cosine, constant, and warm-up on each."""
import math

import pytest

from alexnet.train.recipes import resolve_config
from alexnet.train.schedule import LRSchedule

STEPS = 10   # per epoch


def schedule(kind: str, **kw) -> LRSchedule:
    return LRSchedule(resolve_config("quick", schedule=kind, lr=0.1, epochs=5, **kw), STEPS)


def test_plateau_divides_by_ten_after_patience_epochs_without_improvement_at_most_max_drops_times():
    s = schedule("plateau", plateau_patience=2, plateau_max_drops=2, warmup_epochs=0.0)
    assert s.lr_at(0) == s.lr_at(49) == pytest.approx(0.1)
    assert [s.end_epoch(e) for e in (0.5, 0.4, 0.4)] == [False, False, False]   # one bad epoch: not yet
    assert s.end_epoch(0.41) is True and s.lr_at(30) == pytest.approx(0.01)     # two in a row: / 10
    assert s.end_epoch(0.39) is False                                            # an improvement resets the count
    assert [s.end_epoch(0.5) for _ in range(2)] == [False, True] and s.lr_at(0) == pytest.approx(0.001)
    assert not any(s.end_epoch(0.9) for _ in range(6)) and s.lr_at(0) == pytest.approx(0.001)   # max_drops 2


def test_plateau_state_round_trips_so_a_resumed_run_continues_the_rule():
    s = schedule("plateau", plateau_patience=1, warmup_epochs=0.0)
    s.end_epoch(0.5), s.end_epoch(0.6)
    t = schedule("plateau", plateau_patience=1, warmup_epochs=0.0)
    t.load_state_dict(s.state_dict())
    assert t.lr_at(7) == s.lr_at(7) == pytest.approx(0.01) and t.end_epoch(0.7) == s.end_epoch(0.7)


def test_onecycle_and_cosine_ramp_up_then_fall_to_zero():
    one, cos = schedule("onecycle", warmup_epochs=1.0), schedule("cosine", warmup_epochs=1.0)
    for s in (one, cos):
        assert s.lr_at(0) == pytest.approx(0.1 / STEPS) and s.lr_at(STEPS - 1) == pytest.approx(0.1)
        assert s.lr_at(5 * STEPS) == pytest.approx(0.0, abs=1e-12)
    middle = STEPS + 20        # halfway through the 40 steps after warm-up
    assert one.lr_at(middle) == pytest.approx(0.05) and cos.lr_at(middle) == pytest.approx(0.05)
    assert cos.lr_at(STEPS + 10) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 4)))


@pytest.mark.parametrize("kind", ["plateau", "constant"])
def test_warm_up_ramps_plateau_and_constant_linearly_then_holds_lr(kind):
    s = schedule(kind, warmup_epochs=0.5)                 # 5 steps
    assert [round(s.lr_at(i), 6) for i in range(7)] == [0.02, 0.04, 0.06, 0.08, 0.1, 0.1, 0.1]
    assert schedule(kind, warmup_epochs=0.0).lr_at(0) == pytest.approx(0.1)   # no warm-up: lr from the first step
