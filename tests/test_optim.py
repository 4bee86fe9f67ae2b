"""Adam (refimpl/optim.py, spec/optim.md): the first-step property, agreement with an independent
formulation, the hand-checked example, purity, dtypes, bad inputs, and the goldens through the
conformance runner; each property with a negative control."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refimpl import optim
from refimpl.cases._base import Tensors
from refimpl.cases.optim import CASES, run_adam_steps
from refimpl.conformance import reference_adapter, run_conformance
from refimpl.optim import AdamConfig, AdamState, adam_init, adam_step
from refimpl.train import TrainConfig, fit

Array = np.ndarray[Any, Any]
Step = Callable[[dict[str, Array], dict[str, Array], AdamState, AdamConfig], tuple[dict[str, Array], AdamState]]


def adam_without_bias_correction(
    params: dict[str, Array], grads: dict[str, Array], state: AdamState, cfg: AdamConfig
) -> tuple[dict[str, Array], AdamState]:
    """A broken Adam (forgets 1 - beta^t), for the negative controls."""
    m = {k: cfg.beta1 * state.m[k] + (1 - cfg.beta1) * g for k, g in grads.items()}
    v = {k: cfg.beta2 * state.v[k] + (1 - cfg.beta2) * g * g for k, g in grads.items()}
    new = {k: p - cfg.lr * m[k] / (np.sqrt(v[k]) + cfg.eps) for k, p in params.items()}
    return new, AdamState(step=state.step + 1, m=m, v=v)


def torch_order_adam(
    params: dict[str, Array], grads_per_step: list[dict[str, Array]], cfg: AdamConfig, eps_inside: bool = False
) -> dict[str, Array]:
    """Adam written as torch.optim.Adam orders it: step_size = lr / c1, denom = sqrt(v) / sqrt(c2) + eps
    (or, with eps_inside, the broken sqrt(v / c2 + eps))."""
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in params.items()}
    for t, grads in enumerate(grads_per_step, start=1):
        c1, c2 = 1 - cfg.beta1**t, 1 - cfg.beta2**t
        for k, g in grads.items():
            m[k] = m[k] * cfg.beta1 + g * (1 - cfg.beta1)
            v[k] = v[k] * cfg.beta2 + g * g * (1 - cfg.beta2)
            if eps_inside:
                denom = np.sqrt(v[k] / c2 + cfg.eps)
            else:
                denom = np.sqrt(v[k]) / np.sqrt(c2) + cfg.eps
            p[k] = p[k] - (cfg.lr / c1) * m[k] / denom
    return p


def _first_step_problems(step: Step, grad: Array, lr: float) -> list[str]:
    """Adam's first step from zero moments moves each coordinate by lr * g / (|g| + eps), i.e.
    -lr * sign(g) for |g| >> eps, whatever beta1 and beta2."""
    cfg = AdamConfig(lr=lr, beta1=0.8, beta2=0.95)
    params = {"x": np.zeros_like(grad)}
    new, _ = step(params, {"x": grad}, adam_init(params), cfg)
    expected = -lr * grad / (np.abs(grad) + cfg.eps)
    if not np.allclose(new["x"], expected, rtol=1e-12, atol=0):
        return [f"first step moved by {new['x']}, expected {expected}"]
    return []


gradients = st.lists(st.floats(1e-3, 1e3).flatmap(lambda x: st.sampled_from([x, -x])), min_size=1, max_size=6).map(
    np.array
)


@given(grad=gradients, lr=st.floats(1e-5, 1.0))
def test_first_step_moves_by_lr_times_sign(grad: Array, lr: float) -> None:
    assert _first_step_problems(adam_step, grad, lr) == []


def test_negative_control_missing_bias_correction_is_caught() -> None:
    assert _first_step_problems(adam_without_bias_correction, np.array([0.5, -2.0]), 1e-3) != []


@settings(max_examples=10)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 6), scale=st.sampled_from([1e-7, 1.0, 100.0]))
def test_matches_the_torch_ordering_over_several_steps(seed: int, steps: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    params = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    grads = [{k: scale * rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(steps)]
    cfg = AdamConfig(lr=0.01, beta1=0.85, beta2=0.99)
    state, current = adam_init(params), params
    for g in grads:
        current, state = adam_step(current, g, state, cfg)
    expected = torch_order_adam(params, grads, cfg)
    for name in params:
        np.testing.assert_allclose(current[name], expected[name], rtol=1e-12, atol=1e-15)
    assert state.step == steps


def test_negative_control_eps_inside_the_root_is_caught() -> None:
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal(4)}
    grads = [{"w": 1e-7 * rng.standard_normal(4)} for _ in range(3)]
    cfg = AdamConfig()
    state, current = adam_init(params), params
    for g in grads:
        current, state = adam_step(current, g, state, cfg)
    broken = torch_order_adam(params, grads, cfg, eps_inside=True)
    assert not np.allclose(current["w"], broken["w"], rtol=1e-12, atol=1e-15)


def test_hand_checked_example_of_the_spec() -> None:
    params = {"w": np.array([1.0, 2.0, 3.0, -1.0, 0.0, 0.5])}
    grads = {"w": np.array([0.5, -2.0, 0.0, 1e-8, 3.0, -1e-9])}
    new, state = adam_step(params, grads, adam_init(params), AdamConfig())
    expected = [0.99900000002, 2.000999999995, 3.0, -1.0005, -0.00099999999666667, 0.50009090909091]
    np.testing.assert_allclose(new["w"], expected, rtol=1e-12)
    np.testing.assert_allclose(state.m["w"], 0.1 * grads["w"], rtol=1e-12)
    np.testing.assert_allclose(state.v["w"], 0.001 * grads["w"] ** 2, rtol=1e-12)


def test_step_is_pure() -> None:
    rng = np.random.default_rng(1)
    params = {"w": rng.standard_normal(3)}
    grads = {"w": rng.standard_normal(3)}
    state = AdamState(step=4, m={"w": rng.standard_normal(3)}, v={"w": rng.random(3)})
    before = (params["w"].copy(), grads["w"].copy(), state.m["w"].copy(), state.v["w"].copy())
    new, new_state = adam_step(params, grads, state, AdamConfig())
    after = (params["w"], grads["w"], state.m["w"], state.v["w"])
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert state.step == 4 and new_state.step == 5
    assert new["w"] is not params["w"]


def test_float32_stays_float32() -> None:
    params = {"w": np.ones(3, dtype=np.float32)}
    new, state = adam_step(params, {"w": np.full(3, 0.5, np.float32)}, adam_init(params), AdamConfig())
    assert new["w"].dtype == state.m["w"].dtype == state.v["w"].dtype == np.float32


def test_bad_inputs_are_refused() -> None:
    params = {"w": np.ones(3), "b": np.ones(2)}
    state = adam_init(params)
    cfg = AdamConfig()
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        adam_step(params, {"w": np.ones(3)}, state, cfg)
    with pytest.raises(ValueError, match=r"grads\['b'\]: expected shape \(2,\)"):
        adam_step(params, {"w": np.ones(3), "b": np.ones(3)}, state, cfg)
    with pytest.raises(TypeError, match=r"grads\['w'\]: dtype float32"):
        adam_step(params, {"w": np.ones(3, np.float32), "b": np.ones(2)}, state, cfg)
    with pytest.raises(ValueError, match="state.m"):
        adam_step(params, {"w": np.ones(3), "b": np.ones(2)}, adam_init({"w": np.ones(3)}), cfg)
    for bad in ({"lr": 0.0}, {"beta1": 1.0}, {"beta2": -0.1}, {"eps": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            AdamConfig(**bad)


# --- goldens --------------------------------------------------------------------------------------


def _broken_adapter() -> dict[str, Any]:
    """The reference adapter whose Adam forgets the bias correction."""
    adapter = dict(reference_adapter())

    def run(inputs: Tensors, params: Tensors, config: dict[str, Any], upstream: Tensors) -> dict[str, Any]:
        return run_adam_steps(inputs, params, config, adam_without_bias_correction).flat()

    adapter["adam"] = run
    return adapter


def test_goldens_pass_for_the_reference_in_both_dtypes() -> None:
    for dtype in ("float64", "float32"):
        report = run_conformance(reference_adapter(), components=["adam"], dtype=dtype)
        assert report.ok, [r.text for r in report.results]
        assert {r.case_id for r in report.results} == {c.case_id for c in CASES if c.component == "adam"}


def test_negative_control_goldens_catch_a_missing_bias_correction() -> None:
    report = run_conformance(_broken_adapter(), components=["adam"])
    failing = {r.case_id: r for r in report.results if r.status == "fail"}
    assert set(failing) == {c.case_id for c in CASES if c.component == "adam"}
    assert "new_w" in failing["adam/one_step_tiny"].failing_names
    # five_steps has beta2 = 0.99: sqrt(1 - beta2) = 1 - beta1, so the missing correction cancels
    # at step 1 and the runner must point at step 2
    assert failing["adam/five_steps"].first_divergent_intermediate == "w_after_step2"
    assert failing["adam/small_gradients"].first_divergent_intermediate == "w_after_step1"


def test_the_unchecked_update_is_adam_step_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    params = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4).astype(np.float32)}
    state = adam_init(params)
    cfg = AdamConfig(lr=0.01)
    for _ in range(3):
        grads = {name: rng.standard_normal(p.shape).astype(p.dtype) for name, p in params.items()}
        checked, checked_state = adam_step(params, grads, state, cfg)
        unchecked, state = optim.adam_update(params, grads, state, cfg)
        for name in params:
            np.testing.assert_array_equal(checked[name], unchecked[name])
            np.testing.assert_array_equal(checked_state.v[name], state.v[name])
        params = unchecked
    # negative control: the comparison tells updates apart (another learning rate differs)
    other, _ = optim.adam_update(params, grads, state, AdamConfig(lr=0.02))
    assert not np.array_equal(other["w"], optim.adam_update(params, grads, state, cfg)[0]["w"])


@pytest.mark.parametrize(("grad", "error", "message"), [
    (np.array([1.0, np.nan]), ValueError, r"grads\['w'\]: expected finite values, got nan at position \(1,\)"),
    (np.ones(3), ValueError, r"grads\['w'\]: expected shape \(2,\) like the param, got \(3,\)"),
    (np.ones(2, dtype=np.float32), TypeError, r"grads\['w'\]: dtype float32 differs from the param's float64"),
    ([1.0, 2.0], TypeError, r"grads\['w'\]: expected a numpy array, got list"),
])
def test_fit_checks_every_steps_gradient(grad: object, error: type[Exception], message: str) -> None:
    """fit updates by the unchecked kernel after checking the gradients; a bad one is refused by name
    at its step. Negative control: a finite gradient of the right shape and dtype trains."""
    def run(g: object) -> None:
        fit("fake", {"w": np.zeros(2)}, lambda p, _: (0.0, {"w": g}), lambda p: 1.0, 1.0,
            TrainConfig(steps=3, eval_every=1, patience=5), 3, np.random.default_rng(0), stream=None)

    run(np.ones(2))
    with pytest.raises(error, match=message):
        run(grad)
