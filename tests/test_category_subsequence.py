"""`category_subsequences` (vectorised over rows and categories) equals the module docstring's
steps 1-3 run row by row, category by category (spec/category_sequences.md)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl.data.category_subsequence import category_subsequences

Subsequences = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]


def row_by_row(items: Any, item_categories: Any, mask: Any, categories: Any, max_length: int,
               pad_id: int = 0, keep: str = "recent") -> Subsequences:
    """Steps 1-3 of the module docstring for one row and one category at a time; keep="oldest"
    is a broken variant (it keeps the oldest behaviours past the cap)."""
    batch, wanted = categories.shape
    out = np.full((batch, wanted, max_length), pad_id, dtype=np.int64)
    out_mask = np.zeros((batch, wanted, max_length), dtype=bool)
    for row in range(batch):
        for slot, category in enumerate(categories[row]):
            matches = items[row][mask[row] & (item_categories[row] == category)]
            kept = matches[-max_length:] if keep == "recent" else matches[:max_length]
            out[row, slot, : kept.size] = kept
            out_mask[row, slot, : kept.size] = True
    return out, out_mask


@st.composite
def cases(draw: st.DrawFn) -> tuple[Any, ...]:
    batch, length = draw(st.integers(1, 4)), draw(st.integers(0, 30))
    num_categories, wanted = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    items = rng.integers(0, 50, (batch, length))
    item_categories = rng.integers(0, num_categories, (batch, length))
    mask = rng.random((batch, length)) < 0.7
    categories = rng.integers(0, num_categories + 1, (batch, wanted))  # + 1: a category never seen
    return items, item_categories, mask, categories, draw(st.integers(1, 12)), draw(st.integers(-1, 2))


@given(cases())
def test_equals_the_row_by_row_definition(case: tuple[Any, ...]) -> None:
    fast, fast_mask = category_subsequences(*case)
    slow, slow_mask = row_by_row(*case)
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(fast_mask, slow_mask)


def test_negative_control_keeping_the_oldest_differs() -> None:
    """The definition check can fail: past the cap, the oldest behaviours are not S_c."""
    items = np.array([[1, 2, 3, 4, 5]])
    categories_of_items = np.zeros((1, 5), dtype=np.int64)
    case = (items, categories_of_items, np.ones((1, 5), dtype=bool), np.array([[0]]), 3)
    fast, _ = category_subsequences(*case)
    np.testing.assert_array_equal(fast[0, 0], [3, 4, 5])
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(fast, row_by_row(*case, keep="oldest")[0])
