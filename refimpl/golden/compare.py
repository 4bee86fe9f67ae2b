"""Element-wise comparison of an actual tensor with an expected one, explained.

An element passes when |actual - expected| <= atol + rtol * |expected| (NaN never passes unless
both are NaN; equal infinities pass). The `Comparison` says how far off the worst element is and
where, so a report can tell the user exactly where an implementation diverges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Comparison:
    name: str
    passed: bool
    problem: str  # "" when shapes and dtypes match; otherwise what is wrong, and no values are compared
    mismatched: int = 0
    total: int = 0
    max_abs: float = 0.0
    max_abs_index: tuple[int, ...] = ()
    max_rel: float = 0.0
    max_rel_index: tuple[int, ...] = ()
    actual_at_worst: float = 0.0
    expected_at_worst: float = 0.0
    share_of_allowed: float = 0.0  # max over elements of |a - e| / (atol + rtol |e|)
    rtol: float = 0.0
    atol: float = 0.0

    def describe(self) -> str:
        """One line (or a few) a person can act on."""
        if self.problem:
            return f"{self.name}: {self.problem}"
        if self.passed:
            return f"{self.name}: ok ({self.share_of_allowed:.2g} of the allowed error used)"
        return (
            f"{self.name}: {self.mismatched} of {self.total} elements "
            f"({self.mismatched / max(self.total, 1):.1%}) outside atol={self.atol:.3g} "
            f"rtol={self.rtol:.3g}; max |diff| {self.max_abs:.6g} at {list(self.max_abs_index)} "
            f"(actual {self.actual_at_worst:.10g}, expected {self.expected_at_worst:.10g}); "
            f"max rel diff {self.max_rel:.6g} at {list(self.max_rel_index)}; "
            f"{self.share_of_allowed:.3g}x the allowed error"
        )


def compare_arrays(
    name: str, actual: Any, expected: NDArray[Any], rtol: float, atol: float,
    expected_dtype: np.dtype[Any] | None = None,
) -> Comparison:
    """Compare `actual` with `expected`; `expected_dtype` is the dtype the implementation must return."""
    want = expected.dtype if expected_dtype is None else expected_dtype
    if not isinstance(actual, np.ndarray):
        return Comparison(name, False, f"expected a numpy array, got {type(actual).__name__}")
    if actual.shape != expected.shape:
        return Comparison(name, False, f"shape {actual.shape}, expected {expected.shape}")
    if actual.dtype != want:
        return Comparison(name, False, f"dtype {actual.dtype}, expected {want}")
    if expected.dtype.kind in "biu":
        return _compare_exact(name, actual, expected)
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    both_nan = np.isnan(a) & np.isnan(e)
    same_inf = np.isinf(e) & (a == e)
    with np.errstate(invalid="ignore"):
        diff = np.where(both_nan | same_inf, 0.0, np.abs(a - e))
    diff = np.where(np.isnan(diff), np.inf, diff)
    allowed = atol + rtol * np.abs(np.where(np.isfinite(e), e, 0.0))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        share = np.where(diff == 0, 0.0, diff / allowed)
        rel = np.where(diff == 0, 0.0, diff / np.abs(e))
    bad = diff > allowed
    total = int(a.size)
    if total == 0:
        return Comparison(name, True, "", rtol=rtol, atol=atol)
    worst = _argmax(share)
    worst_abs = _argmax(diff)
    worst_rel = _argmax(rel)
    return Comparison(
        name=name,
        passed=not bool(bad.any()),
        problem="",
        mismatched=int(bad.sum()),
        total=total,
        max_abs=float(diff[worst_abs]),
        max_abs_index=worst_abs,
        max_rel=float(rel[worst_rel]),
        max_rel_index=worst_rel,
        actual_at_worst=float(a[worst]),
        expected_at_worst=float(e[worst]),
        share_of_allowed=float(share[worst]),
        rtol=rtol,
        atol=atol,
    )


def _argmax(values: NDArray[Any]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(values)), values.shape))


def _compare_exact(name: str, actual: NDArray[Any], expected: NDArray[Any]) -> Comparison:
    bad = actual != expected
    total = int(actual.size)
    if not bad.any():
        return Comparison(name, True, "", total=total)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    return Comparison(
        name=name,
        passed=False,
        problem="",
        mismatched=int(bad.sum()),
        total=total,
        max_abs=float(np.max(np.abs(actual.astype(np.float64) - expected))),
        max_abs_index=first,
        actual_at_worst=float(actual[first]),
        expected_at_worst=float(expected[first]),
        share_of_allowed=float("inf"),
    )
