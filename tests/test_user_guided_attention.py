"""User-guided attention (UMI eq. 2): gradients, masking, range, validation, negative controls."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refimpl.cases._base import CaseTensors
from refimpl.cases.user_guided_attention import AttentionShape, user_guided_attention_reference
from refimpl.conformance import reference_adapter, run_conformance
from refimpl.gradcheck import assert_gradients_match, check_component
from refimpl.nn.user_guided_attention import (
    UserGuidedAttentionParams,
    user_guided_attention_backward,
    user_guided_attention_forward,
)


def draw(seed: int, b: int = 2, length: int = 4, d: int = 3, d_user: int = 2, hidden: int = 4) -> CaseTensors:
    """The golden cases' builder (row 0 all padded) at these sizes, from `seed`."""
    shape = AttentionShape(batch=b, length=length, d=d, d_user=d_user, hidden=hidden, empty_row=True)
    return shape.build(np.random.default_rng(seed))


def forward(t: CaseTensors) -> Any:
    return user_guided_attention_forward(
        UserGuidedAttentionParams(**t.params), t.inputs["items"], t.inputs["user"], t.inputs["mask"]
    )


@given(seed=st.integers(0, 2**32 - 1), b=st.integers(1, 3), length=st.integers(1, 5))
@settings(max_examples=8)
def test_gradients_match_finite_differences(seed: int, b: int, length: int) -> None:
    t = draw(seed, b=b, length=length)
    assert_gradients_match(check_component(user_guided_attention_reference, t, {}))


def test_negative_control_gradient_check_catches_a_wrong_gradient() -> None:
    def off_by_one_percent(*args: Any) -> Any:
        result = user_guided_attention_reference(*args)
        result.grads["d_user"] = 1.01 * result.grads["d_user"]
        return result

    problems = check_component(off_by_one_percent, draw(5), {})
    assert problems and all(p.startswith("user") for p in problems)


def test_weights_match_the_equation() -> None:
    t = draw(1)
    p, x = t.params, t.inputs
    weights, _ = forward(t)
    joint = np.concatenate([x["items"], np.repeat(x["user"][:, None], 4, axis=1)], axis=-1)
    logit = np.maximum(joint @ p["W1"] + p["b1"], 0) @ p["W2"][:, 0] + p["b2"][0]
    expected = np.where(x["mask"], 1 / (1 + np.exp(-logit)), 0)
    np.testing.assert_allclose(weights, expected, rtol=1e-13, atol=1e-15)


def assert_padded_inert(t: CaseTensors, fwd: Any) -> None:
    weights, cache = fwd(t)
    mask = t.inputs["mask"]
    assert np.all(weights[~mask] == 0) and np.all((weights[mask] > 0) & (weights[mask] < 1))
    grads = user_guided_attention_backward(cache, t.upstream["d_item_weights"])
    assert np.all(grads.items[~mask] == 0)
    assert np.all(grads.user[~mask.any(axis=1)] == 0)


@given(seed=st.integers(0, 2**32 - 1))
def test_padded_behaviours_get_zero_weight_and_zero_gradient(seed: int) -> None:
    assert_padded_inert(draw(seed, b=3, length=5), forward)


def test_negative_control_padding_check_catches_an_unmasked_weight() -> None:
    def unmasked(t: CaseTensors) -> Any:
        inputs = dict(t.inputs, mask=np.ones_like(t.inputs["mask"]))
        return forward(CaseTensors(inputs, t.params, t.upstream))

    with pytest.raises(AssertionError):
        assert_padded_inert(draw(2, b=3, length=5), unmasked)


def test_float32_and_validation() -> None:
    t = draw(3)
    t32 = CaseTensors(
        {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in t.inputs.items()},
        {k: v.astype(np.float32) for k, v in t.params.items()},
        t.upstream,
    )
    weights, cache = forward(t32)
    assert weights.dtype == np.float32
    grads = user_guided_attention_backward(cache, t.upstream["d_item_weights"].astype(np.float32))
    assert grads.items.dtype == np.float32 and grads.params.W1.dtype == np.float32
    with pytest.raises(ValueError, match="W1"):
        forward(CaseTensors(t.inputs, dict(t.params, W1=t.params["W1"][1:]), t.upstream))
    with pytest.raises(ValueError, match="user"):
        forward(CaseTensors(dict(t.inputs, user=t.inputs["user"][:1]), t.params, t.upstream))
    with pytest.raises(ValueError, match="d_item_weights"):
        user_guided_attention_backward(cache, np.zeros((1, 1), dtype=np.float32))


def test_reference_passes_its_goldens_and_an_unmasked_variant_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert run_conformance(reference_adapter(), components=["user_guided_attention"]).ok
    import refimpl.nn.user_guided_attention as module

    monkeypatch.setattr(module, "np", _NoWhere())
    report = run_conformance(reference_adapter(), components=["user_guided_attention"])
    failed = {r.case_id: r for r in report.results if r.status == "fail"}
    assert "item_weights" in failed["user_guided_attention/all_padded_row"].failing_names


class _NoWhere:
    """numpy, except that `where` forgets the mask (padded behaviours keep their sigmoid)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    @staticmethod
    def where(condition: Any, x: Any, y: Any) -> Any:
        return np.asarray(x) + 0 * np.asarray(y)
