"""Element-wise comparison of an actual tensor with an expected one, explained.

An element passes when |actual - expected| <= atol + rtol * |expected| (NaN never passes unless
both are NaN; equal infinities pass). Integer and bool tensors must be equal element for element.
The `Comparison` says what kind of failure it is (`values`, `shape`, `dtype`, `type`; the runner adds
`missing`), how far off the worst element is and where, so a report can tell the user exactly where an
implementation diverges and what to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

FAILURE_KINDS = ("missing", "type", "shape", "dtype", "values")


@dataclass(frozen=True)
class Comparison:
    name: str
    passed: bool
    problem: str  # "" when shapes and dtypes match; otherwise what is wrong, and no values are compared
    kind: str = ""  # "" when passed; otherwise one of FAILURE_KINDS
    exact: bool = False  # an integer or bool tensor, compared for equality
    mismatched: int = 0
    total: int = 0
    max_abs: float = 0.0
    max_abs_index: tuple[int, ...] = ()
    max_rel: float | None = None  # over elements whose expected value is not 0; None when there are none
    max_rel_index: tuple[int, ...] = ()
    worst_index: tuple[int, ...] = ()  # the element using the largest share of the allowed error (or first unequal)
    actual_at_worst: float = 0.0  # a bool or int for exact tensors
    expected_at_worst: float = 0.0
    share_of_allowed: float = 0.0  # max over elements of |a - e| / (atol + rtol |e|); 0 for exact tensors
    rtol: float = 0.0
    atol: float = 0.0

    @property
    def values_compared(self) -> bool:
        """True when element values were compared (shape and dtype matched)."""
        return not self.problem

    def describe(self) -> str:
        """One line a person can act on."""
        if self.problem:
            return f"{self.name}: {self.problem}"
        if self.passed:
            used = "" if self.exact else f" ({self.share_of_allowed:.2g} of the allowed error used)"
            return f"{self.name}: ok{used}"
        where = list(self.worst_index)
        if self.exact:
            return (f"{self.name}: {self.mismatched} of {self.total} elements differ; first at {where}: "
                    f"{self.actual_at_worst} where {self.expected_at_worst} expected")
        text = (
            f"{self.name}: {self.mismatched} of {self.total} elements ({self.mismatched / max(self.total, 1):.1%}) "
            f"outside atol={self.atol:.3g} rtol={self.rtol:.3g}; worst at {where}: actual {self.actual_at_worst:.10g}, "
            f"expected {self.expected_at_worst:.10g}, {self.share_of_allowed:.3g}x the allowed error; "
            f"max |diff| {self.max_abs:.6g} at {list(self.max_abs_index)}"
        )
        if self.max_rel is not None:
            text += f"; max rel diff {self.max_rel:.6g} at {list(self.max_rel_index)} (where expected != 0)"
        return text


def layout_problem(actual: NDArray[Any], expected_shape: tuple[int, ...], want: np.dtype[Any]) -> tuple[str, str]:
    """(kind, message) when `actual`'s shape or dtype is not what a conforming implementation returns."""
    if actual.shape != expected_shape:
        hint = "; scalars have shape ()" if expected_shape == () or actual.shape == () else ""
        return "shape", f"shape {actual.shape}, expected {expected_shape}{hint}"
    if actual.dtype == want:
        return "", ""
    if actual.dtype.kind == want.kind and actual.dtype.itemsize == want.itemsize:
        return "dtype", (f"dtype {actual.dtype.str} is big-endian, expected little-endian {want.str}: write "
                         "little-endian npy files")
    if want.kind == "b":
        return "dtype", (f"dtype {actual.dtype}, expected bool: write masks as numpy bool (npy descr '|b1', "
                         "True = valid), not as 0/1 numbers")
    if want.kind == "i":
        return "dtype", f"dtype {actual.dtype}, expected int64: write ids as int64 (npy descr '<i8')"
    if want.kind == "f" and actual.dtype.kind == "f":
        run = "--dtype float32" if want == np.float32 else "--dtype float64 (the default)"
        return "dtype", f"dtype {actual.dtype}, expected {want}: under {run} float tensors are {want}"
    return "dtype", f"dtype {actual.dtype}, expected {want}"


def compare_arrays(
    name: str, actual: Any, expected: NDArray[Any], rtol: float, atol: float,
    expected_dtype: np.dtype[Any] | None = None,
) -> Comparison:
    """Compare `actual` with `expected`; `expected_dtype` is the dtype the implementation must return."""
    want = expected.dtype if expected_dtype is None else expected_dtype
    if not isinstance(actual, np.ndarray):
        return Comparison(name, False, f"expected a numpy array, got {type(actual).__name__}", kind="type")
    kind, problem = layout_problem(actual, expected.shape, want)
    if problem:
        return Comparison(name, False, problem, kind=kind)
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
    nonzero = e != 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        share = np.where(diff == 0, 0.0, diff / allowed)
        rel = np.where((diff == 0) | ~nonzero, 0.0, diff / np.abs(e))
    bad = diff > allowed
    total = int(a.size)
    if total == 0:
        return Comparison(name, True, "", rtol=rtol, atol=atol)
    worst = _argmax(share)
    worst_abs = _argmax(diff)
    worst_rel = _argmax(rel)
    failed = bool(bad.any())
    relative = bool((nonzero & (diff > 0)).any())
    return Comparison(
        name=name,
        passed=not failed,
        problem="",
        kind="values" if failed else "",
        mismatched=int(bad.sum()),
        total=total,
        max_abs=float(diff[worst_abs]),
        max_abs_index=worst_abs,
        max_rel=float(rel[worst_rel]) if relative else None,
        max_rel_index=worst_rel if relative else (),
        worst_index=worst,
        actual_at_worst=float(a[worst]),
        expected_at_worst=float(e[worst]),
        share_of_allowed=float(share[worst]),
        rtol=rtol,
        atol=atol,
    )


def _argmax(values: NDArray[Any]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(values)), values.shape))


def _compare_exact(name: str, actual: NDArray[Any], expected: NDArray[Any]) -> Comparison:
    """Integer and bool tensors: the count of differing elements and the first one, no float diagnostics."""
    bad = actual != expected
    total = int(actual.size)
    if not bad.any():
        return Comparison(name, True, "", exact=True, total=total)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    as_python = bool if expected.dtype.kind == "b" else int
    return Comparison(
        name=name,
        passed=False,
        problem="",
        kind="values",
        exact=True,
        mismatched=int(bad.sum()),
        total=total,
        worst_index=first,
        actual_at_worst=as_python(actual[first]),
        expected_at_worst=as_python(expected[first]),
    )
