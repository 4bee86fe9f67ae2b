"""The affine layer y = x W + b (spec/linear.md), with a negative control for every property."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl.cases._base import CaseTensors, Config, Result, Tensors
from refimpl.cases.linear import linear_reference
from refimpl.gradcheck import check_component
from refimpl.nn.linear import LinearParams, linear_backward, linear_forward


@st.composite
def setups(draw: st.DrawFn) -> CaseTensors:
    """x with 0 to 2 leading axes, widths 1..4, values from a drawn seed."""
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    d_in, d_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return CaseTensors(
        inputs={"x": rng.standard_normal((*lead, d_in))},
        params={"W": rng.standard_normal((d_in, d_out)), "b": rng.standard_normal(d_out)},
        upstream={"d_y": rng.standard_normal((*lead, d_out))},
    )


@given(tensors=setups())
def test_gradients_match_finite_differences(tensors: CaseTensors) -> None:
    assert check_component(linear_reference, tensors, {}) == []


def _bias_grad_averaged(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    """A broken backward that averages d_b over the batch instead of summing."""
    result = linear_reference(inputs, params, config, upstream)
    rows = max(1, int(np.prod(inputs["x"].shape[:-1])))
    return Result(result.outputs, {**result.grads, "d_b": result.grads["d_b"] / rows})


def test_negative_control_finite_differences_catch_an_averaged_bias_gradient() -> None:
    rng = np.random.default_rng(0)
    tensors = CaseTensors(
        {"x": rng.standard_normal((3, 2))},
        {"W": rng.standard_normal((2, 2)), "b": rng.standard_normal(2)},
        {"d_y": rng.standard_normal((3, 2))},
    )
    assert check_component(linear_reference, tensors, {}) == []
    problems = check_component(_bias_grad_averaged, tensors, {})
    assert problems and all(p.startswith("b") for p in problems)


def leading_axes_error(forward: Any, tensors: CaseTensors) -> float:
    """Leading axes are a batch: y of (2, 3, D) equals y of the (6, D) reshape, row for row."""
    p = LinearParams(W=tensors.params["W"], b=tensors.params["b"])
    x = tensors.inputs["x"]
    flat = forward(p, x.reshape(-1, x.shape[-1]))[0]
    return float(np.max(np.abs(forward(p, x)[0].reshape(flat.shape) - flat)))


def _batch_mixing_forward(p: LinearParams, x: Any) -> tuple[Any, None]:
    """A broken layer that normalises over the batch (mixes rows)."""
    y = linear_forward(p, x)[0]
    return y - y.mean(axis=0), None


def test_leading_axes_are_independent_rows_and_the_control_is_caught() -> None:
    rng = np.random.default_rng(1)
    tensors = CaseTensors(
        {"x": rng.standard_normal((2, 3, 4))}, {"W": rng.standard_normal((4, 5)), "b": rng.standard_normal(5)}, {}
    )
    assert leading_axes_error(linear_forward, tensors) == 0.0
    assert leading_axes_error(_batch_mixing_forward, tensors) > 1e-3


def dtypes_returned(forward: Any, backward: Any, dtype: Any) -> set[np.dtype[Any]]:
    """Every dtype a forward + backward returns for inputs of `dtype`."""
    rng = np.random.default_rng(2)
    p = LinearParams(W=rng.standard_normal((3, 2)).astype(dtype), b=np.zeros(2, dtype))
    y, cache = forward(p, rng.standard_normal((4, 3)).astype(dtype))
    grads, d_x = backward(cache, np.ones((4, 2), dtype))
    return {y.dtype, d_x.dtype, grads.W.dtype, grads.b.dtype}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_computes_in_the_input_dtype(dtype: Any) -> None:
    assert dtypes_returned(linear_forward, linear_backward, dtype) == {np.dtype(dtype)}


def _upcasting_backward(cache: Any, d_y: Any) -> tuple[LinearParams, Any]:
    """A broken backward that accumulates the bias gradient in a float64 buffer."""
    grads, d_x = linear_backward(cache, d_y)
    d_b = np.zeros(d_y.shape[-1])
    d_b += d_y.reshape(-1, d_y.shape[-1]).sum(axis=0)
    return LinearParams(W=grads.W, b=d_b), d_x


def test_negative_control_dtype_check_catches_a_silent_upcast() -> None:
    assert dtypes_returned(linear_forward, _upcasting_backward, np.float32) == {
        np.dtype(np.float32),
        np.dtype(np.float64),
    }


def test_tiny_hand_case_matches_the_spec_numbers() -> None:
    p = LinearParams(W=np.array([[1.0, 0.0, -1.0], [0.5, 1.0, 2.0]]), b=np.array([0.0, 1.0, 0.0]))
    y, cache = linear_forward(p, np.array([[1.0, 2.0]]))
    grads, d_x = linear_backward(cache, np.array([[1.0, -1.0, 0.5]]))
    assert y.tolist() == [[2.0, 3.0, 3.0]]
    assert d_x.tolist() == [[0.5, 0.5]]
    assert grads.W.tolist() == [[1.0, -1.0, 0.5], [2.0, -2.0, 1.0]]
    assert grads.b.tolist() == [1.0, -1.0, 0.5]


@pytest.mark.parametrize(("x_shape", "w_shape"), [((2, 4, 3), (3, 0)), ((2, 0), (0, 2)), ((0, 4, 3), (3, 2))])
def test_zero_widths_and_rows_give_empty_results_not_numpy_reshape_errors(x_shape: tuple[int, ...],
                                                                          w_shape: tuple[int, int]) -> None:
    """A zero-width layer or an empty batch: y (..., D_out) and every gradient keep their shapes (the
    leading axes folded into rows by count, not by -1, which a zero width leaves undetermined)."""
    x, W = np.ones(x_shape), np.ones(w_shape)
    y, cache = linear_forward(LinearParams(W, np.zeros(w_shape[1])), x)
    assert y.shape == (*x_shape[:-1], w_shape[1])
    grads, d_x = linear_backward(cache, np.ones_like(y))
    assert d_x.shape == x.shape and grads.W.shape == W.shape and grads.b.shape == (w_shape[1],)
    rows = int(np.prod(x_shape[:-1]))
    np.testing.assert_array_equal(grads.W, np.full(w_shape, float(rows)))  # ones times ones, summed over rows
