"""The learning-rate schedule of `refimpl.train.fit` (issue 10): reduce-on-plateau cuts and the
cosine decay do what TrainConfig says, the default is a constant rate, and the checks catch a
schedule that never cuts; `training_record` reads a curve as the demos report it."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from refimpl import train
from refimpl.train import Curve, TrainConfig, fit, report_line, scheduled_lr, training_record

RULE = TrainConfig(steps=100, eval_every=10, patience=2, min_improvement=0.01)


def _run(valid_losses: list[float], rule: TrainConfig) -> tuple[Curve, list[float]]:
    """fit on a fake model whose gradient is always +1 and whose validation loss follows
    `valid_losses` (one per measurement, the first for the init; the last repeats): the curve and
    how far Adam had moved the parameter at each measurement. With a constant gradient Adam's step
    is the learning rate (m_hat / sqrt(v_hat) = 1), so the distance is the sum of the rates used."""
    values = iter(valid_losses)
    last = [valid_losses[-1]]
    moved: list[float] = []

    def valid_fn(p: dict[str, np.ndarray]) -> float:
        moved.append(float(-p["w"][0]))
        last[0] = next(values, last[0])
        return last[0]

    _, curve = fit("fake", {"w": np.zeros(1)}, lambda p, _: (0.0, {"w": np.ones(1)}), valid_fn, 1.0,
                   rule, rule.steps, np.random.default_rng(0), stream=None)
    return curve, moved


def check_plateau_cuts(rule: TrainConfig) -> None:
    """Falls for two measurements, then flat: with patience 2 and two cuts by 0.5 the rate is cut
    after the 4th and 6th measurements and training stops after the 8th (step 80), not at the
    first plateau (step 40) nor at the cap; the params kept are the best (step 20)."""
    plateau = replace(rule, lr=0.01, lr_cuts=2, lr_factor=0.5)
    curve, _ = _run([5.0, 4.0, 3.0, 3.0], plateau)
    assert curve.cut_steps == [40, 60]
    assert curve.lr == [0.01] * 5 + [0.005] * 2 + [0.0025] * 2
    assert curve.valid_steps[-1] == 80 and curve.stopped_early and curve.best_step == 20


def test_plateau_cuts_the_rate_then_stops() -> None:
    check_plateau_cuts(RULE)


def test_the_cut_rate_is_the_rate_adam_steps_with() -> None:
    """The parameter moved by 10 steps per measurement at the recorded rates: 40 x 0.01 + 20 x
    0.005 + 20 x 0.0025 = 0.55 (a recorded but unused cut would move it 0.8)."""
    _, moved = _run([5.0, 4.0, 3.0, 3.0], replace(RULE, lr=0.01, lr_cuts=2, lr_factor=0.5))
    assert moved[-1] == pytest.approx(0.55, rel=1e-5)


def test_negative_control_a_schedule_that_never_cuts_fails_the_plateau_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Broken: the rate ignores the cuts (always cfg.lr)."""
    monkeypatch.setattr(train, "scheduled_lr", lambda cfg, step, cap, cuts: cfg.lr)
    with pytest.raises(AssertionError):
        check_plateau_cuts(RULE)


def test_no_cuts_is_todays_rule_a_constant_rate_and_the_first_plateau_stops() -> None:
    curve, moved = _run([5.0, 4.0, 3.0, 3.0], RULE)
    assert curve.cut_steps == [] and curve.valid_steps[-1] == 40 and curve.best_step == 20
    assert set(curve.lr) == {RULE.lr} and moved[-1] == pytest.approx(40 * RULE.lr, rel=1e-5)


def test_cosine_decays_from_lr_to_near_zero_at_the_cap() -> None:
    rule = replace(RULE, lr=0.01, lr_schedule="cosine")
    assert scheduled_lr(rule, 1, 100, 0) == pytest.approx(0.01)
    assert scheduled_lr(rule, 51, 100, 0) == pytest.approx(0.005)
    assert scheduled_lr(rule, 100, 100, 0) == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 0.99)))
    assert scheduled_lr(rule, 51, 100, 1) == pytest.approx(0.005 * rule.lr_factor)
    curve, moved = _run([10.0 - i for i in range(11)], rule)
    expected = sum(scheduled_lr(rule, s, 100, 0) for s in range(1, 101))
    assert moved[-1] == pytest.approx(expected, rel=1e-5)
    assert curve.lr[-1] == pytest.approx(scheduled_lr(rule, 100, 100, 0))


@pytest.mark.parametrize(("field", "value", "error"), [
    ("lr_schedule", "step", ValueError), ("lr_cuts", -1, ValueError), ("lr_cuts", 1.5, TypeError),
    ("lr_factor", 1.0, ValueError), ("lr_factor", 0.0, ValueError),
])
def test_schedule_fields_are_checked(field: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=f"cfg.{field}"):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_scheduled_lr_refuses_a_step_past_the_cap() -> None:
    with pytest.raises(ValueError, match="step"):
        scheduled_lr(RULE, 11, 10, 0)


def test_report_line_shows_the_rate_when_given() -> None:
    assert "lr 3.0e-03" in report_line("m", 10, 100, 1.0, 1.0, 1.0, 0.5, lr=3e-3)
    assert " lr " not in report_line("m", 10, 100, 1.0, 1.0, 1.0, 0.5)


def test_training_record_reads_the_curve_with_the_training_loss_since_the_last_measurement() -> None:
    curve = Curve(train=[9.0, 9.0, 2.0, 4.0], valid_steps=[0, 2, 4], valid=[5.0, 3.0, 3.5], chance=6.0,
                  best_step=2, stopped_early=True)
    record = training_record(curve, 1.234)
    assert record == {"seconds": 1.23, "steps": 4, "best_step": 2, "stopped_early": 1.0, "train_loss": 3.0,
                      "valid_loss_init": 5.0, "valid_loss_best": 3.0, "learned_nothing": 6.0}
    # negative control: the mean over every step (a record that ignores the last measurement) differs
    assert record["train_loss"] != pytest.approx(float(np.mean(curve.train)))


def test_training_record_refuses_what_is_not_a_curve() -> None:
    with pytest.raises(TypeError, match="curve: expected a Curve, got dict"):
        training_record({"train": []}, 1.0)  # type: ignore[arg-type]
    curve = Curve(train=[1.0], valid_steps=[0, 1], valid=[2.0, 1.0], chance=2.0, best_step=1, stopped_early=False)
    with pytest.raises(ValueError, match="seconds"):
        training_record(curve, -1.0)
