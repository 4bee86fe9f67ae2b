"""Affine map `y = x W + b`, the building block of every projection and MLP layer (spec/linear.md).

The papers use it everywhere without an equation of its own (e.g. the item tower of ULIM, the
interest refinement `o_k = W_b relu(W_a [e_u^k; v_k] + b_a) + b_b` of UMI eq. 9).

Shapes: x (..., D_in), W (D_in, D_out), b (D_out,), y (..., D_out).
Backward: d_x = d_y W^T, d_W = sum over leading axes of x^T d_y, d_b = sum over leading axes of d_y.

Weight layout: W is (in, out), so `y = x @ W`. `torch.nn.Linear` stores (out, in) and computes
`x @ weight.T`; map with `weight = W.T`, `bias = b`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, Shapes
from refimpl.nn._upstream import check_upstream

__all__ = [
    "LinearCache",
    "LinearParams",
    "linear_backward",
    "linear_forward",
]


@dataclass(frozen=True)
class LinearParams:
    W: Array  # (D_in, D_out)
    b: Array  # (D_out,)


@dataclass(frozen=True)
class LinearCache:
    x: Array  # (..., D_in)
    W: Array  # (D_in, D_out)


def check_linear_params(params: LinearParams, shapes: Shapes, prefix: str = "") -> None:
    """Validate W (D_in, D_out) and b (D_out,) against `shapes`, naming them with `prefix`."""
    shapes.check_float(f"{prefix}W", params.W, ("D_in", "D_out"))
    shapes.check_float(f"{prefix}b", params.b, ("D_out",))


def check_features(shapes: Shapes, name: str, x: object, width: str) -> Array:
    """Validate x (..., width): any number (>= 0) of leading axes, the last one named `width`."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(x).__name__}")
    if x.ndim < 1:
        raise ValueError(f"{name}: expected an array of shape (..., {width}), got shape {x.shape}")
    return shapes.check_float(name, x, (*(f"{name}.axis{i}" for i in range(x.ndim - 1)), width))


def _rows(x: Array) -> Array:
    """x (..., D) as one (N, D) matrix, N the product of the leading axes: numpy multiplies a
    stacked (B, L, D) array by a matrix as B separate products, one matrix product is 2-3x cheaper."""
    return x.reshape(math.prod(x.shape[:-1]), x.shape[-1])  # not -1: a zero width has no row count


def affine(x: Array, W: Array, b: Array) -> Array:
    """x W + b, unchecked (the kernel that `linear_forward` and every attention projection share;
    callers validate)."""
    y: Array = _rows(x) @ W
    y += b  # on the fresh product: one (..., D_out) array instead of two
    return y.reshape(*x.shape[:-1], W.shape[1])


def affine_param_grads(x: Array, d_y: Array) -> tuple[Array, Array]:
    """d_W and d_b of y = x W + b, unchecked. Every leading axis of x is a row of the same map, so
    both gradients sum over all rows: d_W = rows(x)^T rows(d_y), d_b = sum of rows(d_y)."""
    rows = _rows(x)  # (N, D_in), N = product of the leading axes
    d_rows = _rows(d_y)  # (N, D_out)
    # in the forward pass this was: y = rows @ W + b (b broadcast to every row)
    d_W: Array = rows.T @ d_rows
    d_b: Array = d_rows.sum(axis=0)
    return d_W, d_b


def affine_backward(x: Array, W: Array, d_y: Array) -> tuple[Array, Array, Array]:
    """d_W, d_b and d_x of y = x W + b, unchecked."""
    # in the forward pass this was: y = x @ W + b
    d_x: Array = (_rows(d_y) @ W.T).reshape(*d_y.shape[:-1], W.shape[0])
    return (*affine_param_grads(x, d_y), d_x)


def linear_forward(params: LinearParams, x: Array, name: str = "x") -> tuple[Array, LinearCache]:
    """y = x W + b over the last axis of x (any number of leading axes)."""
    shapes = Shapes()
    check_linear_params(params, shapes)
    check_features(shapes, name, x, "D_in")
    return affine(x, params.W, params.b), LinearCache(x=x, W=params.W)


def linear_backward(cache: LinearCache, d_y: Array) -> tuple[LinearParams, Array]:
    """Gradients (as LinearParams: d_W, d_b) and d_x for upstream d_y (..., D_out)."""
    check_upstream("d_y", d_y, (*cache.x.shape[:-1], cache.W.shape[1]), cache.x.dtype)
    d_W, d_b, d_x = affine_backward(cache.x, cache.W, d_y)
    return LinearParams(W=d_W, b=d_b), d_x
