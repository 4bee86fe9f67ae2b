"""Float64 central finite differences against hand-written gradients.

Every component's backward is checked the same way: the scalar `f = sum_o sum(d_o * o)` over the
outputs o and their fixed random upstream gradients d_o has, by definition of the backward pass,
the gradient the backward returns. Small tensors are checked element by element; large ones along
random directions (`(f(x + h v) - f(x - h v)) / 2h` against `<grad, v>`) plus a sample of elements.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from refimpl.cases._base import CaseTensors, ComponentFn, Config, Tensors

Objective = Callable[[Tensors], float]


def numerical_gradient(f: Objective, point: Tensors, name: str, eps: float = 1e-6) -> NDArray[Any]:
    """The central-difference gradient of `f` with respect to `point[name]`, element by element."""
    grad = np.zeros_like(point[name], dtype=np.float64)
    for index in np.ndindex(point[name].shape):
        grad[index] = _central_difference(f, point, name, _unit(point[name], index), eps)
    return grad


def _unit(like: NDArray[Any], index: tuple[int, ...]) -> NDArray[Any]:
    direction = np.zeros_like(like, dtype=np.float64)
    direction[index] = 1.0
    return direction


def _central_difference(
    f: Objective, point: Tensors, name: str, direction: NDArray[Any], eps: float
) -> float:
    plus = dict(point)
    minus = dict(point)
    plus[name] = point[name] + eps * direction
    minus[name] = point[name] - eps * direction
    return (f(plus) - f(minus)) / (2.0 * eps)


def check_gradients(
    f: Objective,
    point: Tensors,
    analytic: Mapping[str, NDArray[Any]],
    *,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    max_full_elements: int = 200,
    directions: int = 3,
    seed: int = 0,
) -> list[str]:
    """Compare `analytic[name]` with finite differences of `f` for every name; return the mismatches.

    A tensor of at most `max_full_elements` elements is checked element by element; a larger one
    along `directions` random directions and at `max_full_elements // 4` sampled elements.
    An element passes when |numeric - analytic| <= atol + rtol * |numeric|.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    problems: list[str] = []
    for name, value in point.items():
        if name not in analytic:
            problems.append(f"{name}: no analytic gradient returned")
            continue
        grad = np.asarray(analytic[name], dtype=np.float64)
        if grad.shape != value.shape:
            problems.append(f"{name}: gradient shape {grad.shape} != value shape {value.shape}")
            continue
        if value.size <= max_full_elements:
            indices = list(np.ndindex(value.shape))
        else:
            flat = rng.choice(value.size, size=max_full_elements // 4, replace=False)
            indices = [tuple(int(i) for i in np.unravel_index(k, value.shape)) for k in flat]
            for trial in range(directions):
                direction = rng.standard_normal(value.shape)
                numeric = _central_difference(f, point, name, direction, eps)
                expected = float(np.sum(grad * direction))
                if abs(numeric - expected) > atol * np.sqrt(value.size) + rtol * abs(numeric):
                    problems.append(
                        f"{name}: directional derivative {trial}: analytic {expected:.10g}, "
                        f"finite difference {numeric:.10g}"
                    )
        for index in indices:
            numeric = _central_difference(f, point, name, _unit(value, index), eps)
            if abs(numeric - grad[index]) > atol + rtol * abs(numeric):
                problems.append(
                    f"{name}{list(index)}: analytic {grad[index]:.10g}, "
                    f"finite difference {numeric:.10g}"
                )
    return problems


def component_objective(
    fn: ComponentFn, tensors: CaseTensors, config: Config
) -> tuple[Objective, Tensors, Tensors]:
    """The scalar `sum(upstream * outputs)` of a component as a function of its float tensors.

    Returns (f, point, analytic): `point` holds every float input and param by name, `analytic` the
    backward's gradient of each (`d_<name>` renamed to `<name>`).
    """
    float_names = [
        name
        for group in (tensors.inputs, tensors.params)
        for name, value in group.items()
        if np.issubdtype(value.dtype, np.floating)
    ]
    point = {
        name: (tensors.inputs | tensors.params)[name].astype(np.float64) for name in float_names
    }

    def f(at: Tensors) -> float:
        inputs = {k: at.get(k, v) for k, v in tensors.inputs.items()}
        params = {k: at.get(k, v) for k, v in tensors.params.items()}
        result = fn(inputs, params, config, tensors.upstream)
        return float(
            sum(np.sum(tensors.upstream[f"d_{k}"] * v) for k, v in result.outputs.items())
        )

    result = fn(
        {k: point.get(k, v) for k, v in tensors.inputs.items()},
        {k: point.get(k, v) for k, v in tensors.params.items()},
        config,
        tensors.upstream,
    )
    analytic = {name: result.grads[f"d_{name}"] for name in float_names if f"d_{name}" in result.grads}
    return f, point, analytic


def check_component(
    fn: ComponentFn, tensors: CaseTensors, config: Config, **options: Any
) -> list[str]:
    """Finite-difference check of every float input and param of one component call."""
    f, point, analytic = component_objective(fn, tensors, config)
    return check_gradients(f, point, analytic, **options)


def assert_gradients_match(problems: list[str], limit: int = 20) -> None:
    """Raise AssertionError listing (at most `limit` of) the mismatches, if any."""
    if problems:
        shown = "\n  ".join(problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        raise AssertionError(f"{len(problems)} gradient mismatches:\n  {shown}{more}")
