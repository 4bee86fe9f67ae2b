"""Validation of the upstream gradient a backward function receives.

A backward pass is a public function too: an upstream gradient of the wrong shape or dtype is a
ValueError/TypeError naming it, never a broadcast that silently produces a wrong gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from refimpl._check import Array, require_finite_array, require_real


def check_upstream(name: str, value: Any, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array:
    """`value` must be an array of exactly `shape` and `dtype` (those of the forward's output)."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(value).__name__}")
    if value.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} (the forward's output), got {value.shape}")
    if value.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the forward's dtype), got {value.dtype}")
    require_finite_array(name, value)
    result: Array = value
    return result


def check_loss_upstream(name: str, value: Any, dtype: np.dtype[Any]) -> Array:
    """The upstream gradient of a scalar loss: a finite Python float (bool refused), or a numpy
    scalar or 0-d array of the loss's dtype; returned as a 0-d array of `dtype`."""
    if isinstance(value, float | int) and not isinstance(value, bool | np.generic):
        result: Array = np.asarray(require_real(name, value), dtype=dtype)
        return result
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if isinstance(value, np.ndarray) and value.shape != ():
        raise ValueError(f"{name}: expected a scalar (shape ()), got shape {value.shape}")
    return check_upstream(name, value, (), dtype)
