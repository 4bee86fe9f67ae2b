"""ULIM's category subsequences (ULIM 2.1.1, spec/category_sequences.md#category-subsequences).

ULIM clusters a user's long behaviour sequence by category: the subsequence S_c holds the user's
behaviours of category c, in time order. Long-term interest c attends over S_c only, so its vector
depends on no other category. Sequences are long (thousands of behaviours) and the attention is
cut to the `max_length` MOST RECENT behaviours of S_c:

1. take the valid behaviours (mask True) of the row whose category is c, oldest first;
2. keep the last `max_length` of them (the most recent);
3. left-align them, oldest first and the most recent in the last valid slot, and pad on the right
   to `max_length` with `pad_id`, mask False.

Shapes: items, item_categories, mask (B, L) (item_categories is the category of each behaviour);
categories (B, K), the categories wanted per row; out subsequence (B, K, T) int64 and
subsequence_mask (B, K, T) bool with T = max_length.
Edge cases: a category without a behaviour in the row gives an all-masked subsequence; a category
asked twice in a row gives the same subsequence twice; behaviours at masked positions are ignored
whatever their category.
"""

from __future__ import annotations

import numpy as np

from refimpl._check import BoolArray, IntArray, Shapes, require_int, require_positive_int

__all__ = [
    "category_subsequences",
]


def category_subsequences(
    items: IntArray,
    item_categories: IntArray,
    mask: BoolArray,
    categories: IntArray,
    max_length: int,
    pad_id: int = 0,
) -> tuple[IntArray, BoolArray]:
    """S_c of each row for each wanted category c: (subsequence (B, K, T), mask (B, K, T)).

    The `max_length` (T) most recent behaviours of category c, oldest first, padded on the right.
    """
    shapes = Shapes()
    shapes.check_int("items", items, ("B", "L"))
    shapes.check_int("item_categories", item_categories, ("B", "L"))
    shapes.check_bool("mask", mask, ("B", "L"))
    shapes.check_int("categories", categories, ("B", "K"))
    length = require_positive_int("max_length", max_length)
    batch, wanted = categories.shape
    subsequence = np.full((batch, wanted, length), require_int("pad_id", pad_id), dtype=np.int64)
    subsequence_mask = np.zeros((batch, wanted, length), dtype=bool)
    # step 1: match[b, k, l] = behaviour l of row b is valid and of category categories[b, k]
    match = mask[:, None, :] & (item_categories[:, None, :] == categories[:, :, None])  # (B, K, L)
    # step 2: of a row's n matches, the j-th (0-based, oldest first) is kept when j >= n - min(n, T)
    order = np.cumsum(match, axis=-1, dtype=np.int32) - 1  # (B, K, L)
    total = order[..., -1:] + 1 if match.shape[-1] else np.zeros((batch, wanted, 1), np.int32)
    dropped = total - np.minimum(total, length)  # (B, K, 1) the oldest matches past the cap
    row, slot, position = np.nonzero(match & (order >= dropped))
    # step 3: a kept match goes to slot j - (n - min(n, T)): left-aligned, oldest first
    column = order[row, slot, position] - dropped[row, slot, 0]
    subsequence[row, slot, column] = items[row, position]
    subsequence_mask[row, slot, column] = True
    return subsequence, subsequence_mask
