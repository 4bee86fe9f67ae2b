"""The finite-difference checker accepts a correct gradient and catches wrong ones, element-wise
and along random directions for large tensors."""

from __future__ import annotations

import numpy as np

from refimpl.cases._base import CaseTensors, Result, Tensors
from refimpl.gradcheck import check_component, check_gradients, numerical_gradient


def _quadratic(at: Tensors) -> float:
    return float(np.sum(at["x"] ** 3) + np.sum(at["x"][:, :1] * at["y"]))


def _point(n: int) -> Tensors:
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((n, 3)), "y": rng.standard_normal((n, 1))}


def _analytic(point: Tensors) -> Tensors:
    d_x = 3 * point["x"] ** 2
    d_x[:, :1] += point["y"]
    return {"x": d_x, "y": point["x"][:, :1].copy()}


def test_numerical_gradient_matches_analytic() -> None:
    point = _point(4)
    np.testing.assert_allclose(numerical_gradient(_quadratic, point, "x"), _analytic(point)["x"], rtol=1e-7)


def test_correct_gradients_pass_small_and_large() -> None:
    for n in (4, 400):
        point = _point(n)
        assert check_gradients(_quadratic, point, _analytic(point)) == []


def test_a_wrong_element_is_caught_small() -> None:
    point = _point(4)
    analytic = _analytic(point)
    analytic["x"][2, 1] += 1e-3
    problems = check_gradients(_quadratic, point, analytic)
    assert problems and problems[0].startswith("x[2, 1]")


def test_a_wrong_large_gradient_is_caught_along_directions() -> None:
    point = _point(400)
    analytic = _analytic(point)
    analytic["x"] *= 1.001
    problems = check_gradients(_quadratic, point, analytic)
    assert any("directional derivative" in p for p in problems)


def test_missing_and_misshapen_gradients_are_reported() -> None:
    point = _point(4)
    assert check_gradients(_quadratic, point, {"x": _analytic(point)["x"]}) == [
        "y: no analytic gradient returned"
    ]
    problems = check_gradients(_quadratic, point, {"x": _analytic(point)["x"].T, "y": point["y"]})
    assert problems[0].startswith("x: gradient shape")


def _scale_component(inputs: Tensors, params: Tensors, config: object, upstream: Tensors) -> Result:
    out = inputs["x"] * params["w"]
    d_out = upstream["d_out"]
    return Result({"out": out}, {"d_x": d_out * params["w"], "d_w": np.sum(d_out * inputs["x"], axis=0)})


def test_check_component_uses_the_upstream_gradient() -> None:
    rng = np.random.default_rng(1)
    tensors = CaseTensors({"x": rng.standard_normal((3, 2))}, {"w": rng.standard_normal(2)},
                          {"d_out": rng.standard_normal((3, 2))})
    assert check_component(_scale_component, tensors, {}) == []

    def wrong(inputs: Tensors, params: Tensors, config: object, upstream: Tensors) -> Result:
        result = _scale_component(inputs, params, config, upstream)
        return Result(result.outputs, {**result.grads, "d_w": result.grads["d_w"][::-1]})

    assert any(p.startswith("w[") for p in check_component(wrong, tensors, {}))
