"""Masked mean pooling (spec/pooling.md), with a negative control for every property."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl.cases._base import CaseTensors, Config, Result, Tensors
from refimpl.cases.pooling import masked_mean_pool_reference
from refimpl.gradcheck import check_component
from refimpl.nn.pooling import masked_mean_pool_backward, masked_mean_pool_forward

Array = np.ndarray[Any, Any]


@st.composite
def setups(draw: st.DrawFn) -> CaseTensors:
    """Shapes B, L in 1..4, D in 1..3 and a drawn mask (all-masked rows included)."""
    b, length, d = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    bits = draw(st.lists(st.booleans(), min_size=b * length, max_size=b * length))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return CaseTensors(
        {"x": rng.standard_normal((b, length, d)), "mask": np.array(bits).reshape(b, length)},
        {},
        {"d_out": rng.standard_normal((b, d))},
    )


@given(tensors=setups())
def test_gradients_match_finite_differences(tensors: CaseTensors) -> None:
    assert check_component(masked_mean_pool_reference, tensors, {}) == []


def _gradient_over_length(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    """A broken backward dividing by L instead of the count of valid positions."""
    result = masked_mean_pool_reference(inputs, params, config, upstream)
    mask = inputs["mask"]
    d_x = mask[:, :, None] * upstream["d_out"][:, None, :] / mask.shape[1]
    return Result(result.outputs, {"d_x": d_x})


def test_negative_control_finite_differences_catch_a_wrong_divisor() -> None:
    rng = np.random.default_rng(0)
    tensors = CaseTensors(
        {"x": rng.standard_normal((2, 3, 2)), "mask": np.array([[True, False, True], [True, True, True]])},
        {},
        {"d_out": rng.standard_normal((2, 2))},
    )
    assert check_component(masked_mean_pool_reference, tensors, {}) == []
    assert check_component(_gradient_over_length, tensors, {})


Pool = Callable[[Array, Array], Array]


def reference_pool(x: Array, mask: Array) -> Array:
    return masked_mean_pool_forward(x, mask)[0]


def pooling_problems(pool: Pool, tensors: CaseTensors) -> list[str]:
    """Masked values must not matter, all-masked rows give zeros, never NaN nor a warning."""
    x, mask = tensors.inputs["x"], tensors.inputs["mask"]
    noise = np.where(mask[:, :, None], 0.0, 100.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, moved = pool(x, mask), pool(x + noise, mask)
    problems = [f"warning: {w.message}" for w in caught]
    if not np.all(np.isfinite(out)):
        problems.append("non-finite output")
    if np.any(out[~mask.any(axis=1)] != 0):
        problems.append("an all-masked row is not zero")
    if not np.array_equal(out, moved):
        problems.append("masked values change the output")
    return problems


@given(tensors=setups())
def test_masked_values_do_not_matter_and_empty_rows_are_zero(tensors: CaseTensors) -> None:
    assert pooling_problems(reference_pool, tensors) == []
    d_x = masked_mean_pool_backward(
        masked_mean_pool_forward(tensors.inputs["x"], tensors.inputs["mask"])[1], tensors.upstream["d_out"]
    )
    assert np.all(d_x[~tensors.inputs["mask"]] == 0)


def _naive_pool(x: Array, mask: Array) -> Array:
    result: Array = (x * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
    return result


def _plain_mean(x: Array, mask: Array) -> Array:
    result: Array = x.mean(axis=1) * mask.any(axis=1, keepdims=True)
    return result


@pytest.mark.parametrize(
    ("broken", "expected"), [(_naive_pool, "non-finite output"), (_plain_mean, "masked values change the output")]
)
def test_negative_control_pooling_check_catches_broken_pools(broken: Pool, expected: str) -> None:
    tensors = CaseTensors(
        {"x": np.arange(12.0).reshape(2, 3, 2), "mask": np.array([[True, False, True], [False, False, False]])}, {}, {}
    )
    assert pooling_problems(reference_pool, tensors) == []
    assert expected in pooling_problems(broken, tensors)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_computes_in_the_input_dtype(dtype: Any) -> None:
    x = np.ones((2, 3, 4), dtype)
    out, cache = masked_mean_pool_forward(x, np.array([[True, False, True], [False] * 3]))
    d_x = masked_mean_pool_backward(cache, np.ones((2, 4), dtype))
    assert out.dtype == dtype and d_x.dtype == dtype


def test_tiny_hand_case_matches_the_spec_numbers() -> None:
    x = np.array([[[1.0, 2.0], [10.0, 20.0], [3.0, -4.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 1.0]]])
    out, cache = masked_mean_pool_forward(x, np.array([[True, False, True], [False] * 3]))
    d_x = masked_mean_pool_backward(cache, np.array([[1.0, -2.0], [3.0, 0.5]]))
    assert out.tolist() == [[2.0, -1.0], [0.0, 0.0]]
    assert d_x[0].tolist() == [[0.5, -1.0], [0.0, 0.0], [0.5, -1.0]] and not d_x[1].any()
