"""The pointer's category history: long- and short-term categories merged, deduplicated, time-ordered.

PGIN's pointer (ULIM 2.2.1) copies from the categories the user has already engaged with. This
helper builds that history from the two behaviour sequences:

1. take the categories at the valid positions of the long sequence (B, L) and the short one (B, S);
2. order them by time: by the timestamps when given; otherwise each sequence is oldest first and
   the whole long sequence precedes the short one (the short sequence is the most recent
   behaviours). Equal timestamps order long before short, then by position;
3. deduplicate, keeping each category's MOST RECENT occurrence (its place in time is the last
   time the user engaged with it);
4. keep the P most recent categories, oldest first (the most recent is the last valid slot);
5. pad on the right to P with `pad_id` and mask False (True = valid).

Shapes: long_categories, long_mask (B, L); short_categories, short_mask (B, S); the optional
timestamps like their sequence; out history (B, P) int64 and history_mask (B, P) bool.
Edge cases: a row with no valid behaviour gives an all-masked history row; L or S may be 0.
Categories at masked positions are ignored (they may hold any integer, e.g. -1 padding).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from refimpl._check import BoolArray, IntArray, Shapes, require_int, require_positive_int

__all__ = [
    "merge_category_history",
]


def _check_times(name: str, times: Any, like: IntArray, mask: BoolArray) -> NDArray[Any]:
    if not isinstance(times, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(times).__name__}")
    if times.shape != like.shape:
        raise ValueError(f"{name}: expected the shape of its sequence {like.shape}, got {times.shape}")
    if not (np.issubdtype(times.dtype, np.integer) or np.issubdtype(times.dtype, np.floating)):
        raise TypeError(f"{name}: expected integer or float timestamps, got {times.dtype}")
    if np.issubdtype(times.dtype, np.floating) and not np.isfinite(times[mask]).all():
        raise ValueError(f"{name}: timestamps at valid positions must be finite")
    return times


def _check_ids(name: str, ids: IntArray, mask: BoolArray, num_categories: int | None) -> None:
    valid = ids[mask]
    if valid.size and valid.min() < 0:
        raise ValueError(f"{name}: category ids at valid positions must be >= 0, got {valid.min()}")
    if num_categories is not None and valid.size and valid.max() >= num_categories:
        raise ValueError(
            f"{name}: category id {valid.max()} at a valid position is outside [0, {num_categories})"
        )


def _check_sequences(
    long_categories: IntArray,
    long_mask: BoolArray,
    short_categories: IntArray,
    short_mask: BoolArray,
    max_history: int,
    long_times: NDArray[Any] | None,
    short_times: NDArray[Any] | None,
    num_categories: int | None,
) -> int:
    """Validate both sequences against each other (B), P and the category range; returns P."""
    shapes = Shapes()
    shapes.check_int("long_categories", long_categories, ("B", "L"))
    shapes.check_bool("long_mask", long_mask, ("B", "L"))
    shapes.check_int("short_categories", short_categories, ("B", "S"))
    shapes.check_bool("short_mask", short_mask, ("B", "S"))
    p = require_positive_int("max_history", max_history)
    if (long_times is None) != (short_times is None):
        raise ValueError("long_times, short_times: give timestamps for both sequences or for neither")
    _check_ids("long_categories", long_categories, long_mask, num_categories)
    _check_ids("short_categories", short_categories, short_mask, num_categories)
    return p


def _newest_first_distinct(
    categories: IntArray, valid: BoolArray, times: NDArray[Any], source: IntArray, position: IntArray
) -> tuple[IntArray, IntArray]:
    """Flat indices of each row's distinct categories at their most recent occurrence, grouped by
    row and newest first within a row; and the row of each."""
    b, n = categories.shape
    rows = np.repeat(np.arange(b), n)
    flat_categories = categories.reshape(-1)
    time_order = np.lexsort(
        (np.tile(position, b), np.tile(source, b), times.reshape(-1), rows)
    )  # the last key is the primary one
    recency = np.empty(b * n, dtype=np.int64)
    recency[time_order] = np.arange(b * n)
    candidates = np.flatnonzero(valid.reshape(-1))
    by_category = candidates[
        np.lexsort((recency[candidates], flat_categories[candidates], rows[candidates]))
    ]
    same_as_next = (rows[by_category][1:] == rows[by_category][:-1]) & (
        flat_categories[by_category][1:] == flat_categories[by_category][:-1]
    )
    last_of_group = np.ones(by_category.size, dtype=bool)
    last_of_group[:-1] = ~same_as_next
    latest = by_category[last_of_group]
    newest_first: IntArray = latest[np.lexsort((-recency[latest], rows[latest]))]
    return newest_first, rows[newest_first]


def merge_category_history(
    long_categories: IntArray,
    long_mask: BoolArray,
    short_categories: IntArray,
    short_mask: BoolArray,
    max_history: int,
    *,
    long_times: NDArray[Any] | None = None,
    short_times: NDArray[Any] | None = None,
    num_categories: int | None = None,
    pad_id: int = 0,
) -> tuple[IntArray, BoolArray]:
    """Merge, deduplicate (most recent occurrence wins) and time-order the category history.

    Returns (history (B, P) int64, history_mask (B, P) bool) with P = max_history.
    `num_categories` (C), when given, refuses ids outside [0, C).
    """
    p = _check_sequences(
        long_categories, long_mask, short_categories, short_mask, max_history, long_times, short_times,
        num_categories,
    )
    b, length = long_categories.shape
    short_length = short_categories.shape[1]
    if long_times is None or short_times is None:
        # No timestamps: the concatenation order (long, then short) is the time order.
        times = np.broadcast_to(np.arange(length + short_length), (b, length + short_length))
    else:
        lt = _check_times("long_times", long_times, long_categories, long_mask)
        st = _check_times("short_times", short_times, short_categories, short_mask)
        times = np.concatenate([lt, st], axis=1)
    categories = np.concatenate([long_categories, short_categories], axis=1).astype(np.int64)
    mask = np.concatenate([long_mask, short_mask], axis=1)
    source = np.concatenate([np.zeros(length, np.int64), np.ones(short_length, np.int64)])
    position = np.concatenate([np.arange(length), np.arange(short_length)])
    newest_first, rows = _newest_first_distinct(categories, mask, times, source, position)
    counts = np.bincount(rows, minlength=b)
    age = np.arange(rows.size) - (np.cumsum(counts) - counts)[rows]  # 0 = the most recent
    kept = age < p
    slot = (np.minimum(counts, p)[rows] - 1 - age)[kept]  # oldest first, newest in the last slot
    history = np.full((b, p), require_int("pad_id", pad_id), dtype=np.int64)
    history_mask = np.zeros((b, p), dtype=bool)
    history[rows[kept], slot] = categories.reshape(-1)[newest_first[kept]]
    history_mask[rows[kept], slot] = True
    return history, history_mask
