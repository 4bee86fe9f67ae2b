"""The config checkers of refimpl._check sort a bad value the way spec/conventions.md says:
the wrong kind of value (a str, a float, a bool, None) is a TypeError, the right kind out of range
a ValueError, and either message starts with the caller's name for the value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from refimpl._check import require_choice, require_int, require_positive_int, require_real

WRONG_KIND_FOR_AN_INT: tuple[Any, ...] = ("3", 2.5, 3.0, True, False, np.True_, None, np.float64(2.0), [3])


def int_sorting_problems(check: Callable[[str, Any], int]) -> list[str]:
    """What `check` (a positive-int checker) gets wrong on wrong kinds, bad values and good ones."""
    problems = []
    cases: list[tuple[Any, type[Exception] | None]] = [
        *((value, TypeError) for value in WRONG_KIND_FOR_AN_INT),
        (0, ValueError), (-1, ValueError), (np.int64(0), ValueError),
        (1, None), (np.int32(7), None),
    ]
    for value, expected in cases:
        try:
            result = check("cfg.dim", value)
        except (ValueError, TypeError) as error:
            if expected is None or type(error) is not expected or not str(error).startswith("cfg.dim:"):
                problems.append(f"{value!r}: {type(error).__name__} {error}")
            continue
        if expected is not None:
            problems.append(f"{value!r}: accepted as {result!r}")
        elif type(result) is not int or result != value:
            problems.append(f"{value!r}: returned {result!r}")
    return problems


def test_require_positive_int_sorts_wrong_kinds_from_bad_values() -> None:
    assert int_sorting_problems(require_positive_int) == []


def test_require_int_sorts_wrong_kinds_from_bad_values() -> None:
    assert int_sorting_problems(lambda name, value: require_int(name, value, low=1)) == []


def _positive_int_before_issue_15(name: str, value: Any) -> int:
    """The checker as it was: one ValueError for every bad value, a str or a float included."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def test_negative_control_a_checker_raising_value_error_for_a_str_is_caught() -> None:
    problems = int_sorting_problems(_positive_int_before_issue_15)
    assert any(p.startswith("'3': ValueError") for p in problems)
    assert any(p.startswith("2.5: ValueError") for p in problems)
    assert any(p.startswith("True: ValueError") for p in problems)


@pytest.mark.parametrize("value", ["x", True, None, 1j, np.array(1.0)])
def test_require_real_refuses_a_non_number_with_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match=r"^cfg\.lr: expected a real number"):
        require_real("cfg.lr", value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.5])
def test_require_real_refuses_a_number_out_of_range_with_value_error(value: float) -> None:
    with pytest.raises(ValueError, match=r"^cfg\.lr:"):
        require_real("cfg.lr", value, low=0.0)


def test_require_choice_refuses_a_non_string_with_type_error_and_an_unknown_string_with_value_error() -> None:
    choices = ("uniform", "popularity")
    for value in (1, None, True, np.array(["uniform", "popularity"])):
        with pytest.raises(TypeError, match=r"^cfg\.sampler: expected one of"):
            require_choice("cfg.sampler", value, choices)
    with pytest.raises(ValueError, match=r"^cfg\.sampler: expected one of .* got 'bogus'"):
        require_choice("cfg.sampler", "bogus", choices)
    assert require_choice("cfg.sampler", "uniform", choices) == "uniform"
