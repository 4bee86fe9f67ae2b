"""Interest refinement (UMI eq. 7-9): gradients, equations, validation, negative controls."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refimpl.nn.interest_refinement as module
from refimpl.cases._base import CaseTensors
from refimpl.cases.interest_refinement import CASES, interest_refinement_reference, random_params
from refimpl.conformance import reference_adapter, run_conformance
from refimpl.gradcheck import assert_gradients_match, check_component
from refimpl.nn.interest_refinement import (
    InterestRefinementParams,
    interest_refinement_backward,
    interest_refinement_forward,
)


def draw(seed: int, b: int = 2, k: int = 2, d: int = 3, fields: int = 2, field_dim: int = 2) -> CaseTensors:
    rng = np.random.default_rng(seed)
    return CaseTensors(
        inputs={
            "interests": rng.standard_normal((b, k, d)),
            "profile": rng.standard_normal((b, fields, field_dim)),
        },
        params=random_params(rng, d, fields, field_dim, 3, 4, d),
        upstream={"d_refined": rng.standard_normal((b, k, d))},
    )


def forward(t: CaseTensors) -> Any:
    return interest_refinement_forward(InterestRefinementParams(**t.params), t.inputs["interests"], t.inputs["profile"])


@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 3), fields=st.integers(1, 3))
@settings(max_examples=5)
def test_gradients_match_finite_differences(seed: int, k: int, fields: int) -> None:
    t = draw(seed, k=k, fields=fields)
    assert_gradients_match(check_component(interest_refinement_reference, t, {}))


def test_negative_control_gradient_check_catches_a_wrong_gradient() -> None:
    def off_by_one_percent(*args: Any) -> Any:
        result = interest_refinement_reference(*args)
        result.grads["d_profile"] = 1.01 * result.grads["d_profile"]
        return result

    problems = check_component(off_by_one_percent, draw(5), {})
    assert problems and all(p.startswith("profile") for p in problems)


def reference_equations(t: CaseTensors) -> tuple[Any, Any]:
    """UMI eq. 7-9 written out per user and interest."""
    p, v, prof = t.params, t.inputs["interests"], t.inputs["profile"]
    b, k, _ = v.shape
    out, weights = [], []
    for row in range(b):
        e_u = prof[row].reshape(-1)
        for j in range(k):
            hidden = np.maximum(np.concatenate([v[row, j], e_u]) @ p["Wd1"] + p["bd1"], 0)
            d_k = 1 / (1 + np.exp(-(hidden @ p["Wd2"] + p["bd2"])))
            e_uk = (d_k[:, None] * prof[row]).reshape(-1)
            h = np.maximum(np.concatenate([e_uk, v[row, j]]) @ p["Wa"] + p["ba"], 0)
            out.append(h @ p["Wb"] + p["bb"])
            weights.append(d_k)
    return np.array(out).reshape(b, k, -1), np.array(weights).reshape(b, k, -1)


def test_forward_matches_the_equations() -> None:
    t = draw(1, b=2, k=3, fields=3)
    refined, cache = forward(t)
    expected, weights = reference_equations(t)
    np.testing.assert_allclose(refined, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(cache.field_weights, weights, rtol=1e-12)
    assert np.all((cache.field_weights > 0) & (cache.field_weights < 1))


def test_negative_control_equation_check_catches_swapped_concatenation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t = draw(2, b=2, k=3, d=4, fields=2, field_dim=2)  # D = C*F: a swap still has valid shapes
    real = np.concatenate

    class SwappedNumpy:
        def __getattr__(self, name: str) -> Any:
            return getattr(np, name)

        @staticmethod
        def concatenate(parts: Any, axis: int) -> Any:
            return real(list(reversed(parts)), axis=axis)

    monkeypatch.setattr(module, "np", SwappedNumpy())
    refined, _ = forward(t)
    expected, _ = reference_equations(t)
    assert not np.allclose(refined, expected, rtol=1e-12, atol=1e-14)


def test_zero_interest_is_a_valid_input() -> None:
    t = draw(3)
    t.inputs["interests"][0] = 0.0
    refined, cache = forward(t)
    grads = interest_refinement_backward(cache, t.upstream["d_refined"])
    assert np.all(np.isfinite(refined)) and np.all(np.isfinite(grads.interests))


def test_float32_and_validation() -> None:
    t = draw(4)
    t32 = CaseTensors(
        {k: v.astype(np.float32) for k, v in t.inputs.items()},
        {k: v.astype(np.float32) for k, v in t.params.items()},
        t.upstream,
    )
    refined, cache = forward(t32)
    grads = interest_refinement_backward(cache, t.upstream["d_refined"].astype(np.float32))
    assert refined.dtype == np.float32 and grads.profile.dtype == np.float32
    with pytest.raises(ValueError, match="Wd2"):
        forward(CaseTensors(t.inputs, dict(t.params, Wd2=t.params["Wd2"][:, :1]), t.upstream))
    with pytest.raises(ValueError, match="Wa"):
        forward(CaseTensors(t.inputs, dict(t.params, Wa=t.params["Wa"][1:]), t.upstream))
    with pytest.raises(ValueError, match="d_refined"):
        interest_refinement_backward(cache, np.zeros((1, 1, 1), dtype=np.float32))


def test_reference_passes_its_goldens() -> None:
    report = run_conformance(reference_adapter(), components=["interest_refinement"])
    assert report.ok and len(report.results) == len(CASES)
