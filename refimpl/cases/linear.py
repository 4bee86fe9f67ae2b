"""Golden cases and the reference adapter of `linear`, y = x W + b (spec/linear.md)."""

from __future__ import annotations

import numpy as np

from refimpl.cases._base import (
    Builder,
    CaseSpec,
    CaseTensors,
    Config,
    Result,
    Tensors,
    upstream_like,
)
from refimpl.nn.linear import LinearParams, linear_backward, linear_forward

SPEC = "spec/linear.md"


def linear_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    y, cache = linear_forward(LinearParams(W=params["W"], b=params["b"]), inputs["x"])
    grads, d_x = linear_backward(cache, upstream["d_y"])
    return Result(outputs={"y": y}, grads={"d_x": d_x, "d_W": grads.W, "d_b": grads.b})


COMPONENTS = {"linear": linear_reference}


def _random(lead: tuple[int, ...], d_in: int, d_out: int) -> Builder:
    """x ~ N(0, 1) of shape (*lead, D_in), W ~ N(0, 1/D_in), b ~ N(0, 0.1^2)."""

    def build(rng: np.random.Generator) -> CaseTensors:
        return CaseTensors(
            inputs={"x": rng.standard_normal((*lead, d_in))},
            params={
                "W": rng.standard_normal((d_in, d_out)) / np.sqrt(d_in),
                "b": 0.1 * rng.standard_normal(d_out),
            },
            upstream=upstream_like(rng, {"y": (*lead, d_out)}),
        )

    return build


def _tiny_hand(rng: np.random.Generator) -> CaseTensors:
    """x = [[1, 2]], W = [[1, 0, -1], [0.5, 1, 2]], b = [0, 1, 0], d_y = [[1, -1, 0.5]]."""
    return CaseTensors(
        inputs={"x": np.array([[1.0, 2.0]])},
        params={"W": np.array([[1.0, 0.0, -1.0], [0.5, 1.0, 2.0]]), "b": np.array([0.0, 1.0, 0.0])},
        upstream={"d_y": np.array([[1.0, -1.0, 0.5]])},
    )


CASES = (
    CaseSpec(
        "linear", "tiny_hand", "x (1, 2) to y (1, 3); numbers in the spec.", f"{SPEC}#worked-example", {}, _tiny_hand
    ),
    CaseSpec(
        "linear",
        "vector",
        "A single vector x (D_in,) = (5,), no leading axis, to (3,).",
        f"{SPEC}#shapes",
        {},
        _random((), 5, 3),
    ),
    CaseSpec(
        "linear",
        "batched_3d",
        "x (2, 3, 4) to (2, 3, 6): the map acts on the last axis.",
        f"{SPEC}#shapes",
        {},
        _random((2, 3), 4, 6),
    ),
    CaseSpec(
        "linear",
        "realistic",
        "x (8, 32) to (8, 16): a batch through a projection layer.",
        f"{SPEC}#shapes",
        {},
        _random((8,), 32, 16),
    ),
)
