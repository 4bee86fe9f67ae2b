"""Seed statistics: every table entry is a mean +- std over seeds, and an ordering between two rows
is claimed only beyond that spread (spec/demo.md#seeds).

The rule (`beyond_spread`): row A is above row B when mean(A) - mean(B) > std(A) + std(B), with
the sample standard deviation (ddof = 1) over at least MIN_SEEDS seeds: the one-std intervals of
the two rows do not touch. Otherwise the two are "within the spread" and no order is claimed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from refimpl._check import Array, require_int

__all__ = ["MIN_SEEDS", "beyond_spread", "format_mean_std", "mean_std", "ordering"]

MIN_SEEDS = 3

SeedValues = Sequence[float] | Array  # one table entry's value per seed (S,)


def _seed_values(name: str, values: Any) -> Array:
    """The per-seed values of one table entry as a float64 vector (S,), refused by `name` unless
    they are a list or tuple of real numbers or a 1-D integer or float array, all finite (a NaN
    would compare false and silently hide or invent an ordering). An empty `values` is (0,)."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"{name}: expected one value per seed (S,), got shape {values.shape}")
        if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
            raise TypeError(f"{name}: expected real numbers, got dtype {values.dtype}")
        items = [float(v) for v in values.astype(np.float64)]
    elif isinstance(values, list | tuple):
        for seed, value in enumerate(values):
            if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
                raise TypeError(f"{name}: expected real numbers, got {type(value).__name__} {value!r} at seed {seed}")
        items = [float(v) for v in values]
    else:
        raise TypeError(f"{name}: expected a list, tuple or 1-D array of per-seed values, got {type(values).__name__}")
    for seed, value in enumerate(items):
        if not math.isfinite(value):
            raise ValueError(f"{name}: expected finite values, got {value} at seed {seed}")
    result: Array = np.array(items, dtype=np.float64)
    return result


def _mean_std(name: str, values: Any) -> tuple[float, float]:
    array = _seed_values(name, values)
    if array.size == 0:
        raise ValueError(f"{name}: expected at least one value, got none")
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std


def mean_std(values: SeedValues) -> tuple[float, float]:
    """(mean, sample std with ddof = 1; 0 for a single value). No value is a ValueError."""
    return _mean_std("values", values)


def beyond_spread(above: SeedValues, below: SeedValues) -> bool:
    """True when the row `above` is above `below` by more than the sum of their stds, with at
    least MIN_SEEDS seeds on each side (fewer seeds, none included, never support a claim)."""
    above_values, below_values = _seed_values("above", above), _seed_values("below", below)
    if above_values.size < MIN_SEEDS or below_values.size < MIN_SEEDS:
        return False
    mean_a, std_a = _mean_std("above", above_values)
    mean_b, std_b = _mean_std("below", below_values)
    return mean_a - mean_b > std_a + std_b


def ordering(name_a: str, a: SeedValues, name_b: str, b: SeedValues) -> str:
    """'A > B', 'B > A' or 'A ~ B (within the spread)'."""
    for label, row_name in (("name_a", name_a), ("name_b", name_b)):
        if not isinstance(row_name, str):
            raise TypeError(f"{label}: expected a str, got {type(row_name).__name__}")
    a_values, b_values = _seed_values("a", a), _seed_values("b", b)
    if beyond_spread(a_values, b_values):
        return f"{name_a} > {name_b}"
    if beyond_spread(b_values, a_values):
        return f"{name_b} > {name_a}"
    return f"{name_a} ~ {name_b} (within the spread)"


def format_mean_std(values: SeedValues, digits: int = 1) -> str:
    """'mean +- std'; a single value is printed alone (one seed has no spread). No value is a
    ValueError; `digits` is an int >= 0."""
    require_int("digits", digits, low=0)
    mean, std = _mean_std("values", values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} +- {std:.{digits}f}"
