"""The MLP with ReLU / sigmoid / identity layers (spec/mlp.md), with negative controls."""

from __future__ import annotations

import warnings
from itertools import pairwise
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from refimpl.cases._base import CaseTensors, Config, Result, Tensors
from refimpl.cases.mlp import mlp_reference
from refimpl.gradcheck import check_component
from refimpl.nn import mlp as mlp_module
from refimpl.nn.linear import LinearParams
from refimpl.nn.mlp import ACTIVATIONS, MLPConfig, MLPParams, mlp_backward, mlp_forward, sigmoid


@st.composite
def setups(draw: st.DrawFn) -> tuple[CaseTensors, Config]:
    """1 to 3 layers with drawn widths and activations; x with 0 to 2 leading axes."""
    depth = draw(st.integers(1, 3))
    widths = draw(st.lists(st.integers(1, 4), min_size=depth + 1, max_size=depth + 1))
    activations = draw(st.lists(st.sampled_from(ACTIVATIONS), min_size=depth, max_size=depth))
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    params: Tensors = {}
    for index, (d_in, d_out) in enumerate(pairwise(widths)):
        params[f"W_{index}"] = rng.standard_normal((d_in, d_out))
        params[f"b_{index}"] = rng.standard_normal(d_out)
    tensors = CaseTensors(
        {"x": rng.standard_normal((*lead, widths[0]))}, params, {"d_out": rng.standard_normal((*lead, widths[-1]))}
    )
    return tensors, {"activations": activations}


def _near_relu_kink(tensors: CaseTensors, config: Config) -> bool:
    """A ReLU input within the finite-difference step of 0 (the derivative jumps there)."""
    h = tensors.inputs["x"]
    for index, act in enumerate(config["activations"]):
        z = h @ tensors.params[f"W_{index}"] + tensors.params[f"b_{index}"]
        if act == "relu" and np.any(np.abs(z) < 1e-4):
            return True
        h = mlp_module.activate(act, z)
    return False


@given(setup=setups())
def test_gradients_match_finite_differences(setup: tuple[CaseTensors, Config]) -> None:
    tensors, config = setup
    assume(not _near_relu_kink(tensors, config))
    assert check_component(mlp_reference, tensors, config) == []


_ACTIVATION_BACKWARD = mlp_module.activation_backward


def _forgetful_activation_backward(name: str, activated: Any, d_activated: Any) -> Any:
    if name == "sigmoid":
        return d_activated * activated  # the (1 - s) factor forgotten
    return _ACTIVATION_BACKWARD(name, activated, d_activated)


def _wrong_sigmoid_derivative(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    with mock.patch.object(mlp_module, "activation_backward", _forgetful_activation_backward):
        return mlp_reference(inputs, params, config, upstream)


def test_negative_control_finite_differences_catch_a_wrong_sigmoid_derivative() -> None:
    rng = np.random.default_rng(0)
    tensors = CaseTensors(
        {"x": rng.standard_normal((3, 2))},
        {"W_0": rng.standard_normal((2, 3)), "b_0": rng.standard_normal(3)},
        {"d_out": rng.standard_normal((3, 3))},
    )
    config = {"activations": ["sigmoid"]}
    assert check_component(mlp_reference, tensors, config) == []
    assert check_component(_wrong_sigmoid_derivative, tensors, config)


def test_relu_gradient_at_exactly_zero_is_zero() -> None:
    p = MLPParams((LinearParams(W=np.eye(2), b=np.zeros(2)),))
    out, cache = mlp_forward(p, np.array([[0.0, 1.0]]), MLPConfig(("relu",)))
    _, d_x = mlp_backward(cache, np.array([[5.0, 7.0]]))
    assert out.tolist() == [[0.0, 1.0]]
    assert d_x.tolist() == [[0.0, 7.0]]


def overflow_problems(sigmoid_fn: object) -> list[str]:
    z = np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = sigmoid_fn(z)  # type: ignore[operator]
    problems = [str(w.message) for w in caught]
    if not np.all((s >= 0) & (s <= 1)) or s[2] != 0.5:
        problems.append(f"wrong values {s}")
    return problems


def test_sigmoid_does_not_overflow_and_the_naive_one_is_caught() -> None:
    assert overflow_problems(sigmoid) == []
    assert overflow_problems(lambda z: 1.0 / (1.0 + np.exp(-z)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_computes_in_the_input_dtype(dtype: Any) -> None:
    rng = np.random.default_rng(1)
    layers = tuple(LinearParams(W=rng.standard_normal((3, 3)).astype(dtype), b=np.zeros(3, dtype)) for _ in ACTIVATIONS)
    out, cache = mlp_forward(MLPParams(layers), rng.standard_normal((2, 3)).astype(dtype), MLPConfig(ACTIVATIONS))
    grads, d_x = mlp_backward(cache, np.ones((2, 3), dtype))
    assert {out.dtype, d_x.dtype, *(g.W.dtype for g in grads.layers)} == {np.dtype(dtype)}


def test_tiny_hand_case_matches_the_spec_numbers() -> None:
    p = MLPParams(
        (
            LinearParams(W=np.array([[1.0, 2.0], [1.0, -1.0]]), b=np.array([0.0, -1.0])),
            LinearParams(W=np.array([[1.0], [-1.0]]), b=np.array([0.0])),
        )
    )
    out, cache = mlp_forward(p, np.array([[1.0, -1.0]]), MLPConfig(("relu", "sigmoid")))
    grads, d_x = mlp_backward(cache, np.array([[2.0]]))
    assert np.round(out, 6).tolist() == [[0.119203]]
    assert np.round(d_x, 6).tolist() == [[-0.419974, 0.209987]]
    assert np.round(grads.layers[0].b, 6).tolist() == [0.0, -0.209987]
