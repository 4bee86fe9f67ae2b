"""What every model does with its flat `dict[str, Array]` params: check their names and shapes,
draw fresh ones, accumulate gradients, and read an attention block stored under a prefix.

A model's params are one flat dict (so refimpl.optim.adam_step updates them as they are); the
model lists every name and shape in its `param_shapes(cfg)`. An attention block named `block`
(refimpl.nn.attention) is stored as `{block}_Wq`, `{block}_bq`, ..., `{block}_bo`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from refimpl._check import Array, Shapes
from refimpl.nn.attention import PARAM_NAMES as ATTENTION_NAMES
from refimpl.nn.attention import AttentionParams

Params = dict[str, Array]


def check_param_names(params: Mapping[str, Array], expected: Iterable[str], model: str) -> None:
    """Refuse a params dict that lacks or adds a parameter (named), before any lookup fails, and
    any param that is not a finite float32/float64 array of the dtype the others share."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected a dict of arrays, got {type(params).__name__}")
    expected = tuple(expected)
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        raise ValueError(
            f"params: the {model} parameters are {list(expected)}; "
            f"missing {missing}, unexpected {extra}"
        )
    check_param_arrays(params)


def check_param_arrays(params: Mapping[str, Array]) -> None:
    """Every param a finite float32/float64 array, all of one dtype; errors name the param."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected a dict of arrays, got {type(params).__name__}")
    dtypes = Shapes()
    for name, value in params.items():
        dtypes.check_float(name, value, tuple(f"{name}.{axis}" for axis in range(np.ndim(value))))


def check_param_shapes(
    params: Mapping[str, Array], shapes: Mapping[str, tuple[int, ...]], model: str
) -> Shapes:
    """Refuse missing, unexpected or misshapen params, or params of mixed float dtypes; returns
    the Shapes that bound their dtype."""
    check_param_names(params, shapes, model)
    bound = Shapes()
    for name, shape in shapes.items():
        bound.check_float(name, params[name], shape)
    return bound


def attention_block_shapes(block: str, width: int) -> dict[str, tuple[int, ...]]:
    """The shapes of attention block `block` of width D: weights (D, D), biases (D,)."""
    return {
        f"{block}_{name}": (width, width) if name.startswith("W") else (width,)
        for name in ATTENTION_NAMES
    }


def attention_block(params: Mapping[str, Array], block: str) -> AttentionParams:
    """Attention block `block` read from the flat params."""
    return AttentionParams(**{name: params[f"{block}_{name}"] for name in ATTENTION_NAMES})


def attention_block_grads(grads: AttentionParams, block: str) -> Params:
    """The gradients of attention block `block`, under the flat params' names."""
    return {f"{block}_{name}": getattr(grads, name) for name in ATTENTION_NAMES}


def add_grads(total: Params, part: Mapping[str, Array]) -> None:
    """Accumulate `part` into `total` in place (a param reached by several paths sums them)."""
    for name, value in part.items():
        total[name] = total[name] + value if name in total else value


def normal_init(
    shapes: Mapping[str, tuple[int, ...]], rng: np.random.Generator, dtype: Any = np.float64
) -> Params:
    """Tables (names ending in "table") N(0, 1/D), other matrices N(0, 1/fan_in), vectors 0,
    drawn from `rng` in the order of `shapes`, in `dtype`."""
    params: Params = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            params[name] = np.zeros(shape, dtype=dtype)
        else:
            fan = shape[1] if name.endswith("table") else shape[0]
            params[name] = (rng.standard_normal(shape) / np.sqrt(fan)).astype(dtype)
    return params
