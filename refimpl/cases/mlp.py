"""Golden cases and the reference adapter of `mlp`: a stack of affine layers with ReLU, sigmoid or
identity activations (spec/mlp.md). Layer l's params are `W_l`, `b_l`, counted from 0."""

from __future__ import annotations

from itertools import pairwise

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
from refimpl.nn.linear import LinearParams
from refimpl.nn.mlp import MLPConfig, MLPParams, mlp_backward, mlp_forward

SPEC = "spec/mlp.md"


def _layers(params: Tensors) -> MLPParams:
    count = len([name for name in params if name.startswith("W_")])
    missing = [f"{p}_{i}" for i in range(count) for p in ("W", "b") if f"{p}_{i}" not in params]
    if missing:
        raise ValueError(f"params: expected W_l and b_l for every layer l < {count}; missing {missing}")
    return MLPParams(layers=tuple(LinearParams(W=params[f"W_{i}"], b=params[f"b_{i}"]) for i in range(count)))


def mlp_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    layers = _layers(params)
    out, cache = mlp_forward(layers, inputs["x"], MLPConfig(activations=tuple(config["activations"])))
    grads, d_x = mlp_backward(cache, upstream["d_out"])
    per_layer: Tensors = {}
    for index, layer in enumerate(grads.layers):
        per_layer[f"d_W_{index}"] = layer.W
        per_layer[f"d_b_{index}"] = layer.b
    hidden = {f"h_{i + 1}": a for i, a in enumerate(cache.activated[:-1])}
    return Result(outputs={"out": out}, grads={"d_x": d_x, **per_layer}, intermediates=hidden)


COMPONENTS = {"mlp": mlp_reference}


def _random(lead: tuple[int, ...], widths: tuple[int, ...], weight_scale: float = 1.0, zero_rows: int = 0) -> Builder:
    """x (*lead, widths[0]) ~ N(0, 1), W_l ~ N(0, weight_scale^2 / D_in), b_l ~ N(0, 0.1^2).

    zero_rows > 0 zeroes that many leading rows of x and the first bias, so some first-layer
    pre-activations are exactly 0 (the ReLU kink: its gradient there is 0 by convention).
    """

    def build(rng: np.random.Generator) -> CaseTensors:
        x = rng.standard_normal((*lead, widths[0]))
        params: Tensors = {}
        for index, (d_in, d_out) in enumerate(pairwise(widths)):
            params[f"W_{index}"] = rng.standard_normal((d_in, d_out)) * weight_scale / np.sqrt(d_in)
            params[f"b_{index}"] = 0.1 * rng.standard_normal(d_out)
        if zero_rows:
            x.reshape(-1, widths[0])[:zero_rows] = 0.0
            params["b_0"][: widths[1] // 2] = 0.0
        return CaseTensors(
            inputs={"x": x},
            params=params,
            upstream=upstream_like(rng, {"out": (*lead, widths[-1])}),
        )

    return build


def _tiny_hand(rng: np.random.Generator) -> CaseTensors:
    """x = [[1, -1]]; layer 0: W = [[1, 2], [1, -1]], b = [0, -1], ReLU; layer 1: W = [[1], [-1]],
    b = [0], sigmoid; d_out = [[2]]."""
    return CaseTensors(
        inputs={"x": np.array([[1.0, -1.0]])},
        params={
            "W_0": np.array([[1.0, 2.0], [1.0, -1.0]]),
            "b_0": np.array([0.0, -1.0]),
            "W_1": np.array([[1.0], [-1.0]]),
            "b_1": np.array([0.0]),
        },
        upstream={"d_out": np.array([[2.0]])},
    )


def _case(name: str, description: str, activations: tuple[str, ...], build: Builder) -> CaseSpec:
    return CaseSpec("mlp", name, description, f"{SPEC}#golden-cases", {"activations": list(activations)}, build)


CASES = (
    CaseSpec(
        "mlp",
        "tiny_hand",
        "2 -> 2 (ReLU, one unit at exactly 0) -> 1 (sigmoid); numbers in the spec.",
        f"{SPEC}#worked-example",
        {"activations": ["relu", "sigmoid"]},
        _tiny_hand,
    ),
    _case(
        "relu_relu_sigmoid",
        "A click tower: 6 -> 8 -> 4 -> 1, ReLU, ReLU, sigmoid; x (5, 6).",
        ("relu", "relu", "sigmoid"),
        _random((5,), (6, 8, 4, 1)),
    ),
    _case(
        "sigmoid_saturated",
        "Weights scaled by 20 so sigmoid inputs reach +-40 (saturation, no "
        "overflow): 5 -> 4 (sigmoid) -> 3 (sigmoid); x (3, 5).",
        ("sigmoid", "sigmoid"),
        _random((3,), (5, 4, 3), weight_scale=20.0),
    ),
    _case(
        "relu_zero_preactivation",
        "Rows of x and half of b_0 are 0, so some ReLU inputs are "
        "exactly 0 (gradient 0 there): 4 -> 6 (ReLU) -> 2 (identity); x (4, 4).",
        ("relu", "identity"),
        _random((4,), (4, 6, 2), zero_rows=2),
    ),
)
