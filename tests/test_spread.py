"""refimpl.spread refuses per-seed values that would make a table entry or an ordering meaningless
(spec/conventions.md): a NaN compares false, so it would hide or invent an ordering."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from refimpl.spread import beyond_spread, format_mean_std, mean_std, ordering

BAD_VALUES: list[tuple[Any, type[Exception]]] = [
    ([1.0, float("nan"), 3.0], ValueError),
    ([1.0, float("inf"), 3.0], ValueError),
    (np.array([[1.0, 2.0, 3.0]]), ValueError),
    ([1.0, "2", 3.0], TypeError),
    ([1.0, True, 3.0], TypeError),
    ([1.0, 2j, 3.0], TypeError),
    (np.array([1.0, 2.0, 3.0], complex), TypeError),
    (np.array([True, False, True]), TypeError),
    ({1.0, 2.0, 3.0}, TypeError),
    ("123", TypeError),
]


def spread_problems(fn: Callable[[Any, Any], object]) -> list[str]:
    """What `fn(above, below)` accepts of BAD_VALUES given as `above`, or raises without naming it."""
    problems = []
    good = [1.0, 2.0, 3.0]
    for bad, error in BAD_VALUES:
        try:
            result = fn(bad, good)
        except (ValueError, TypeError) as raised:
            if type(raised) is not error or not str(raised).startswith("above:"):
                problems.append(f"{bad!r}: {type(raised).__name__} {raised}")
            continue
        problems.append(f"{bad!r}: accepted, returned {result!r}")
    return problems


def test_beyond_spread_refuses_bad_values_by_name() -> None:
    assert spread_problems(beyond_spread) == []


def _beyond_spread_unvalidated(above: Any, below: Any) -> bool:
    """The rule as it was: no check of the values, so a NaN seed makes every comparison false."""
    a, b = np.asarray(above, dtype=np.float64), np.asarray(below, dtype=np.float64)
    if len(a) < 3 or len(b) < 3:
        return False
    return bool(a.mean() - b.mean() > a.std(ddof=1) + b.std(ddof=1))


def test_negative_control_an_unvalidated_rule_is_caught() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it silently casts complex values, among other things
        problems = spread_problems(_beyond_spread_unvalidated)
    assert any(p.startswith("[1.0, nan, 3.0]: accepted") for p in problems)


def test_every_entry_point_names_its_own_argument() -> None:
    with pytest.raises(ValueError, match=r"^values: expected finite values, got nan at seed 1"):
        mean_std([1.0, float("nan")])
    with pytest.raises(ValueError, match=r"^values: expected at least one value"):
        format_mean_std([])
    with pytest.raises(TypeError, match=r"^digits: expected an integer"):
        format_mean_std([1.0], digits=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^digits: expected an integer >= 0"):
        format_mean_std([1.0], digits=-1)
    with pytest.raises(TypeError, match=r"^b: expected real numbers"):
        ordering("A", [1.0, 2.0, 3.0], "B", [1.0, None, 3.0])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"^name_b: expected a str"):
        ordering("A", [1.0, 2.0, 3.0], 2, [1.0, 2.0, 3.0])  # type: ignore[arg-type]


def test_valid_values_in_every_accepted_form() -> None:
    """Lists, tuples and 1-D integer or float arrays; no value at all is no claim (fewer than 3
    seeds), and one seed prints without a spread."""
    assert mean_std((1, 2, 3)) == (2.0, 1.0)
    assert mean_std(np.array([1.0, 2.0, 3.0], np.float32)) == (2.0, 1.0)
    assert beyond_spread(np.array([10, 11, 12]), [7.0, 8.0, 9.0])
    assert not beyond_spread([], [])
    assert ordering("A", [], "B", [1.0]) == "A ~ B (within the spread)"
    assert format_mean_std([np.float64(0.25)], digits=2) == "0.25"
    assert format_mean_std([1.0, 2.0, 3.0], digits=0) == "2 +- 1"
