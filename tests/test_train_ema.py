"""`refimpl.train.fit` with `TrainConfig.ema_decay`: every measurement (the validation loss, the
stopping rule, the params returned) reads the exponential moving average of the trained params,
a_1 = p_1, a_t = d a_{t-1} + (1 - d) p_t; 0 reads the trained params. Checked against the average
computed by hand from the trajectory, with both optimizers; a fit that does not average is the
negative control."""

from __future__ import annotations

import numpy as np
import pytest

from refimpl import train
from refimpl.train import TrainConfig, fit

RULE = TrainConfig(steps=30, eval_every=10, patience=5, lr=0.1)


def _run(rule: TrainConfig) -> tuple[list[np.ndarray], dict[int, np.ndarray], dict[str, np.ndarray]]:
    """fit on two params with a noisy gradient: the trained params p_1 .. p_29 (each step sees the
    previous step's), what the validation read at each measurement, and the params returned (the
    validation loss falls, so the last measurement's)."""
    seen: list[np.ndarray] = []
    measured: dict[int, np.ndarray] = {}
    noise = np.random.default_rng(3)

    def step_fn(p: dict[str, np.ndarray], _: np.random.Generator) -> tuple[float, dict[str, np.ndarray]]:
        seen.append(np.concatenate([p["w"], p["v"]]))
        return 0.0, {"w": 1.0 + noise.standard_normal(2), "v": noise.standard_normal(3)}

    def valid_fn(p: dict[str, np.ndarray]) -> float:
        measured[len(seen)] = np.concatenate([p["w"], p["v"]])
        return 10.0 - len(seen)

    params, _ = fit("fake", {"w": np.zeros(2), "v": np.ones(3)}, step_fn, valid_fn, 10.0, rule, rule.steps,
                    np.random.default_rng(0), stream=None)
    return seen[1:], measured, params


def check_measurements_read_the_average(rule: TrainConfig) -> None:
    trajectory, measured, _ = _run(rule)
    averaged = trajectory[0]
    for step, p in enumerate(trajectory[1:], start=2):
        averaged = rule.ema_decay * averaged + (1 - rule.ema_decay) * p
        if step in measured:
            np.testing.assert_allclose(measured[step], averaged, rtol=1e-12)
    assert {10, 20} <= set(measured)


@pytest.mark.parametrize("optimizer", ["adam", "lazy_adam"])
def test_measurements_read_the_moving_average(optimizer: str) -> None:
    rule = TrainConfig(steps=30, eval_every=10, patience=5, lr=0.1, ema_decay=0.9, optimizer=optimizer)
    check_measurements_read_the_average(rule)
    _, measured, params = _run(rule)
    np.testing.assert_array_equal(np.concatenate([params["w"], params["v"]]), measured[30])


def test_no_decay_reads_the_trained_params() -> None:
    trajectory, measured, _ = _run(RULE)
    np.testing.assert_array_equal(measured[20], trajectory[19])


def test_negative_control_a_fit_that_does_not_average_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "_moving_average", lambda averaged, params, decay: dict(params))
    with pytest.raises(AssertionError):
        check_measurements_read_the_average(TrainConfig(steps=30, eval_every=10, patience=5, lr=0.1, ema_decay=0.9))


@pytest.mark.parametrize(("value", "error"), [(1.0, ValueError), (-0.1, ValueError), ("0.9", TypeError),
                                              (True, TypeError), (float("nan"), ValueError)])
def test_a_bad_decay_is_refused_by_name(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="cfg.ema_decay"):
        TrainConfig(ema_decay=value)  # type: ignore[arg-type]
