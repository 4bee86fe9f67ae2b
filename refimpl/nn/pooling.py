"""Masked mean pooling over the length axis (spec/pooling.md).

ULIM's short-term encoder pools its MHSA output this way into v_s (spec/ulim.md), and
PGIN's generator pools the long and short behaviour sequences the same way:

    out_b = sum_l m_bl x_bl / max(1, sum_l m_bl)

Shapes: x (B, L, D), mask (B, L) bool (True = valid), out (B, D).
Edge case: a row with no valid position pools to zeros and passes zero gradient (never 0/0 = NaN).
Backward: d_x_bl = m_bl d_out_b / max(1, sum_l m_bl).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, BoolArray, Shapes
from refimpl.nn._upstream import check_upstream

__all__ = [
    "PoolCache",
    "masked_mean_pool_backward",
    "masked_mean_pool_forward",
]


@dataclass(frozen=True)
class PoolCache:
    weights: Array  # (B, L): m_bl / max(1, count_b)
    width: int  # D


def masked_mean_pool_forward(x: Array, mask: BoolArray) -> tuple[Array, PoolCache]:
    """The mean of the valid positions of every row: x (B, L, D), mask (B, L) -> (B, D)."""
    shapes = Shapes()
    shapes.check_float("x", x, ("B", "L", "D"))
    shapes.check_bool("mask", mask, ("B", "L"))
    count = mask.sum(axis=1, keepdims=True)
    # 1/count is exact to the dtype's rounding whichever dtype divides, so cast the (B, L) weights.
    weights = (mask / np.maximum(count, 1)).astype(x.dtype)
    out: Array = np.einsum("bl,bld->bd", weights, x)
    return out, PoolCache(weights=weights, width=x.shape[2])


def masked_mean_pool_backward(cache: PoolCache, d_out: Array) -> Array:
    """d_x (B, L, D) for upstream d_out (B, D)."""
    check_upstream("d_out", d_out, (cache.weights.shape[0], cache.width), cache.weights.dtype)
    # in the forward pass this was: out = einsum("bl,bld->bd", weights, x)
    d_x: Array = cache.weights[:, :, None] * d_out[:, None, :]
    return d_x
