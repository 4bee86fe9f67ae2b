"""Seed statistics: every table entry is a mean +- std over seeds, and an ordering between two rows
is claimed only beyond that spread (spec/demo.md#seeds).

The rule (`beyond_spread`): row A is above row B when mean(A) - mean(B) > std(A) + std(B), with
the sample standard deviation (ddof = 1) over at least MIN_SEEDS seeds: the one-std intervals of
the two rows do not touch. Otherwise the two are "within the spread" and no order is claimed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_SEEDS = 3


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample std with ddof = 1; 0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("values: expected at least one value, got none")
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std


def beyond_spread(above: Sequence[float], below: Sequence[float]) -> bool:
    """True when the row `above` is above `below` by more than the sum of their stds, with at
    least MIN_SEEDS seeds on each side (fewer seeds never support a claim)."""
    if len(above) < MIN_SEEDS or len(below) < MIN_SEEDS:
        return False
    mean_a, std_a = mean_std(above)
    mean_b, std_b = mean_std(below)
    return mean_a - mean_b > std_a + std_b


def ordering(name_a: str, a: Sequence[float], name_b: str, b: Sequence[float]) -> str:
    """'A > B', 'B > A' or 'A ~ B (within the spread)'."""
    if beyond_spread(a, b):
        return f"{name_a} > {name_b}"
    if beyond_spread(b, a):
        return f"{name_b} > {name_a}"
    return f"{name_a} ~ {name_b} (within the spread)"


def format_mean_std(values: Sequence[float], digits: int = 1) -> str:
    """'mean +- std'; a single value is printed alone (one seed has no spread)."""
    mean, std = mean_std(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} +- {std:.{digits}f}"
