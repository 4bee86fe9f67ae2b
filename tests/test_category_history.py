"""The pointer's category history: merged, deduplicated keeping the most recent occurrence,
time-ordered, truncated to the P most recent, padded with a mask (refimpl.data.category_history)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl.data.category_history import merge_category_history

History = tuple[np.ndarray, np.ndarray]


def _row(cats: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([cats], dtype=np.int64), np.ones((1, len(cats)), dtype=bool)


def _merge(long: list[int], short: list[int], p: int, **kw: Any) -> list[int]:
    lc, lm = _row(long)
    sc, sm = _row(short)
    history, mask = merge_category_history(lc, lm, sc, sm, p, **kw)
    return [int(c) for c in history[0, mask[0]]]


def test_hand_case_most_recent_occurrence_wins_and_order_is_oldest_first() -> None:
    # events in time order: 3 1 3 2 | 1 5 ; last times: 3@2, 2@3, 1@4, 5@5
    assert _merge([3, 1, 3, 2], [1, 5], 10) == [3, 2, 1, 5]


def test_hand_case_truncation_keeps_the_most_recent() -> None:
    assert _merge([3, 1, 3, 2], [1, 5], 2) == [1, 5]


def test_hand_case_timestamps_interleave_the_sequences() -> None:
    times_long = np.array([[1, 2, 9, 4]])
    times_short = np.array([[5, 6]])
    got = _merge([3, 1, 3, 2], [1, 5], 10, long_times=times_long, short_times=times_short)
    assert got == [2, 1, 5, 3]


def test_equal_timestamps_order_long_before_short_then_by_position() -> None:
    got = _merge([7, 8], [9, 7], 10, long_times=np.array([[0, 0]]), short_times=np.array([[0, 0]]))
    assert got == [8, 9, 7]


def test_masked_positions_are_ignored_and_rows_pad_on_the_right() -> None:
    long_c = np.array([[4, -1, 2], [-1, -1, -1]])
    long_m = np.array([[True, False, True], [False, False, False]])
    short_c = np.array([[2], [6]])
    short_m = np.array([[True], [False]])
    history, mask = merge_category_history(long_c, long_m, short_c, short_m, 4, pad_id=0)
    np.testing.assert_array_equal(history, [[4, 2, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(mask, [[True, True, False, False], [False] * 4])
    assert history.dtype == np.int64 and mask.dtype == np.bool_


def test_empty_sequences() -> None:
    empty = np.zeros((2, 0), dtype=np.int64)
    history, mask = merge_category_history(empty, empty.astype(bool), empty, empty.astype(bool), 3)
    assert history.shape == (2, 3) and not mask.any()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_history": 0}, ValueError, "max_history"),
        ({"long_times": np.zeros((1, 2))}, ValueError, "both sequences"),
        ({"long_mask": np.ones((1, 3), dtype=bool)}, ValueError, "long_mask"),
        ({"short_mask": np.ones((1, 1), dtype=np.int64)}, TypeError, "short_mask"),
        ({"long_categories": np.array([[1.0, 2.0]])}, TypeError, "long_categories"),
        ({"short_categories": np.array([[-3]])}, ValueError, "short_categories"),
        ({"num_categories": 2}, ValueError, "outside"),
        (
            {"long_times": np.array([[0.0, np.nan]]), "short_times": np.zeros((1, 1))},
            ValueError,
            "finite",
        ),
        ({"long_times": np.zeros((1, 3)), "short_times": np.zeros((1, 1))}, ValueError, "long_times"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    args: dict[str, Any] = {
        "long_categories": np.array([[1, 2]]),
        "long_mask": np.ones((1, 2), dtype=bool),
        "short_categories": np.array([[3]]),
        "short_mask": np.ones((1, 1), dtype=bool),
        "max_history": 4,
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        merge_category_history(**args)


# --- the invariant, checked against an independent oracle -----------------------------------


def _oracle(long: list[int], short: list[int], p: int) -> list[int]:
    """Walk the events in time order, remember each category's last time, sort by it."""
    last: dict[int, int] = {}
    for time, category in enumerate(long + short):
        last[category] = time
    return sorted(last, key=last.__getitem__)[-p:]


def _problems(merge: Callable[..., History], long: list[list[int]], short: list[list[int]],
              long_mask: np.ndarray, short_mask: np.ndarray, p: int) -> list[str]:
    history, mask = merge(
        np.array(long, dtype=np.int64), long_mask, np.array(short, dtype=np.int64), short_mask, p
    )
    problems = []
    for row in range(len(long)):
        kept_long = [c for c, m in zip(long[row], long_mask[row], strict=True) if m]
        kept_short = [c for c, m in zip(short[row], short_mask[row], strict=True) if m]
        expected = _oracle(kept_long, kept_short, p)
        got = [int(c) for c in history[row, mask[row]]]
        if got != expected or mask[row].tolist() != [i < len(expected) for i in range(p)]:
            problems.append(f"row {row}: got {got}, expected {expected}")
    return problems


rows = st.integers(1, 4)


@st.composite
def sequences(draw: st.DrawFn) -> tuple[list[list[int]], list[list[int]], np.ndarray, np.ndarray, int]:
    b = draw(rows)
    length = draw(st.integers(0, 8))
    short_length = draw(st.integers(0, 4))
    cats = st.integers(0, 5)
    long = [draw(st.lists(cats, min_size=length, max_size=length)) for _ in range(b)]
    short = [draw(st.lists(cats, min_size=short_length, max_size=short_length)) for _ in range(b)]
    long_mask = np.array(draw(st.lists(st.booleans(), min_size=b * length, max_size=b * length)),
                         dtype=bool).reshape(b, length)
    short_mask = np.array(
        draw(st.lists(st.booleans(), min_size=b * short_length, max_size=b * short_length)),
        dtype=bool,
    ).reshape(b, short_length)
    return long, short, long_mask, short_mask, draw(st.integers(1, 7))


@given(sequences())
def test_history_equals_the_oracle(case: tuple[Any, ...]) -> None:
    assert _problems(merge_category_history, *case) == []


def _keeps_first_occurrence(lc: Any, lm: Any, sc: Any, sm: Any, p: int) -> History:
    """Broken: deduplicates keeping the OLDEST occurrence (reverse the time order twice)."""
    history = np.zeros((lc.shape[0], p), dtype=np.int64)
    mask = np.zeros((lc.shape[0], p), dtype=bool)
    for row in range(lc.shape[0]):
        events = list(lc[row][lm[row]]) + list(sc[row][sm[row]])
        first = list(dict.fromkeys(events))[-p:]
        history[row, : len(first)] = first
        mask[row, : len(first)] = True
    return history, mask


def _keeps_oldest_p(lc: Any, lm: Any, sc: Any, sm: Any, p: int) -> History:
    """Broken: truncates to the P OLDEST categories."""
    full, full_mask = merge_category_history(lc, lm, sc, sm, lc.shape[1] + sc.shape[1] + p)
    return full[:, :p], full_mask[:, :p]


@pytest.mark.parametrize("broken", [_keeps_first_occurrence, _keeps_oldest_p])
def test_negative_control_broken_merges_are_caught(broken: Callable[..., History]) -> None:
    long = [[3, 1, 3, 2, 4]]
    short = [[1, 5]]
    masks = (np.ones((1, 5), dtype=bool), np.ones((1, 2), dtype=bool))
    assert _problems(broken, long, short, *masks, 3) != []
    assert _problems(merge_category_history, long, short, *masks, 3) == []


@given(sequences(), st.integers(0, 2**32 - 1))
def test_history_with_tied_timestamps_equals_the_oracle(case: tuple[Any, ...], seed: int) -> None:
    long, short, long_mask, short_mask, p = case
    rng = np.random.Generator(np.random.PCG64(seed))
    long_times = rng.integers(0, 3, size=long_mask.shape)  # few values: many ties
    short_times = rng.integers(0, 3, size=short_mask.shape)
    history, mask = merge_category_history(
        np.array(long, dtype=np.int64), long_mask, np.array(short, dtype=np.int64), short_mask, p,
        long_times=long_times, short_times=short_times,
    )
    for row in range(len(long)):
        events = sorted(
            [(long_times[row, i], 0, i, c) for i, c in enumerate(long[row]) if long_mask[row, i]]
            + [(short_times[row, i], 1, i, c) for i, c in enumerate(short[row]) if short_mask[row, i]]
        )
        last = {event[3]: rank for rank, event in enumerate(events)}
        expected = sorted(last, key=last.__getitem__)[-p:]
        assert [int(c) for c in history[row, mask[row]]] == expected
