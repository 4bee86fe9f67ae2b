"""The item catalogue that retrieval searches: ids, categories and vectors (spec/retrieval.md).

Items are kept grouped by category (category ascending, then item id ascending), so that the
items of category c are one contiguous block `vectors[starts[c]:starts[c + 1]]`. Both back ends
search these blocks; ties between equal scores are broken by the lower item id (exact back end).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from refimpl._check import Array, IntArray, Shapes, require_int

__all__ = [
    "Catalogue",
]

Int64Array = NDArray[np.int64]

_MAX_LISTED = 10


def describe_ids(ids: NDArray[Any]) -> str:
    """A short list of distinct ids for an error message: the first few, and how many in all."""
    unique = np.unique(ids)
    shown = ", ".join(str(int(i)) for i in unique[:_MAX_LISTED])
    more = f", ... ({unique.size} in all)" if unique.size > _MAX_LISTED else ""
    return f"[{shown}{more}]"


@dataclass(frozen=True)
class Catalogue:
    """Items grouped by category. Build it with `Catalogue.build`, never by hand.

    item_ids (I,) int64, unique, >= 0, sorted by (category, id); item_categories (I,) int64 in
    [0, C); vectors (I, D) float32/float64, finite; starts (C + 1,) block offsets per category.
    """

    item_ids: Int64Array
    item_categories: Int64Array
    vectors: Array
    starts: Int64Array
    num_categories: int

    @staticmethod
    def build(
        vectors: Array,
        item_categories: IntArray,
        item_ids: IntArray | None = None,
        num_categories: int | None = None,
    ) -> Catalogue:
        """A catalogue of I items: vectors (I, D), item_categories (I,), item_ids (I,).

        item_ids defaults to 0..I-1 (the row index). num_categories C defaults to
        max(item_categories) + 1; pass it to declare categories that have no items yet
        (searching them returns nothing; a category id outside [0, C) is unknown: ValueError).
        """
        shapes = Shapes()
        shapes.check_float("vectors", vectors, ("I", "D"))
        shapes.check_int("item_categories", item_categories, ("I",))
        ids = np.arange(shapes.size("I"), dtype=np.int64)
        if item_ids is not None:
            ids = shapes.check_int("item_ids", item_ids, ("I",)).astype(np.int64)
        if not np.all(np.isfinite(vectors)):
            raise ValueError("vectors: every item vector must be finite (found NaN or inf)")
        _check_item_ids(ids)
        categories = item_categories.astype(np.int64)
        count = _num_categories(categories, num_categories)
        _check_categories(categories, ids, count)
        order = np.lexsort((ids, categories))
        sorted_categories = categories[order]
        sizes = np.bincount(sorted_categories, minlength=count)
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        return Catalogue(
            item_ids=ids[order],
            item_categories=sorted_categories,
            vectors=np.ascontiguousarray(vectors[order]),
            starts=starts,
            num_categories=count,
        )

    @property
    def size(self) -> int:
        """I, the number of items."""
        return int(self.item_ids.size)

    @property
    def dim(self) -> int:
        """D, the width of the item vectors."""
        return int(self.vectors.shape[1])

    def category_size(self, category: int) -> int:
        """The number of items of one category."""
        self.check_categories("category", np.asarray([require_int("category", category)]))
        return int(self.starts[category + 1] - self.starts[category])

    def category_block(self, category: int) -> tuple[Int64Array, Array]:
        """The ids (n,) ascending and vectors (n, D) of one category's items (views)."""
        self.check_categories("category", np.asarray([require_int("category", category)]))
        start, stop = self.starts[category], self.starts[category + 1]
        return self.item_ids[start:stop], self.vectors[start:stop]

    def category_sizes(self) -> Int64Array:
        """(C,) the number of items of every category."""
        sizes: Int64Array = np.diff(self.starts)
        return sizes

    def check_categories(self, name: str, categories: NDArray[Any]) -> None:
        """ValueError naming the category ids outside [0, C) (the argument called `name` by the
        caller); TypeError for anything but an integer array."""
        if not isinstance(categories, np.ndarray) or not np.issubdtype(categories.dtype, np.integer):
            got = getattr(categories, "dtype", type(categories).__name__)
            raise TypeError(f"{name}: expected an integer array of category ids, got {got}")
        unknown = categories[(categories < 0) | (categories >= self.num_categories)]
        if unknown.size:
            raise ValueError(
                f"{name}: unknown category ids {describe_ids(unknown)}; "
                f"the catalogue has categories 0..{self.num_categories - 1}"
            )

    def positions(self, item_ids: IntArray) -> Int64Array:
        """Row positions (same shape) of the given item ids; ValueError naming unknown ids.

        Use it to look up the category or vector of retrieved or held-out items
        (`catalogue.item_categories[catalogue.positions(ids)]`).
        """
        if not isinstance(item_ids, np.ndarray) or not np.issubdtype(item_ids.dtype, np.integer):
            got = getattr(item_ids, "dtype", type(item_ids).__name__)
            raise TypeError(f"item_ids: expected an integer numpy array, got {got}")
        wanted = item_ids.reshape(-1)
        table = self._position_table
        if table is not None:
            # Dense ids (the usual 0..I-1): one gather; -1 marks an id no item has.
            inside = (wanted >= 0) & (wanted < table.size)
            slot = table[np.where(inside, wanted, 0)]
            known = inside & (slot >= 0)
        else:
            order, sorted_ids = self._id_order
            found_slot = np.minimum(np.searchsorted(sorted_ids, wanted), self.size - 1)
            known = np.zeros(wanted.shape, dtype=bool)
            if self.size:
                known = sorted_ids[found_slot] == wanted
            slot = order[found_slot] if self.size else found_slot
        if not np.all(known):
            raise ValueError(f"item_ids: unknown item ids {describe_ids(wanted[~known])}")
        found: Int64Array = slot.reshape(item_ids.shape).astype(np.int64)
        return found

    @cached_property
    def _position_table(self) -> Int64Array | None:
        """position = table[id] when the ids are dense enough (largest id below 4 I + 1024: the
        table costs at most 4 int64 per item), else None (a binary search over the sorted ids)."""
        if self.size == 0 or int(self.item_ids.max()) >= 4 * self.size + 1024:
            return None
        table: Int64Array = np.full(int(self.item_ids.max()) + 1, -1, dtype=np.int64)
        table[self.item_ids] = np.arange(self.size, dtype=np.int64)
        return table

    @cached_property
    def _id_order(self) -> tuple[Int64Array, Int64Array]:
        """The positions that sort the ids, and the sorted ids (computed once, on first use)."""
        order: Int64Array = np.argsort(self.item_ids, kind="stable").astype(np.int64)
        return order, self.item_ids[order]

    def categories_of(self, item_ids: IntArray) -> Int64Array:
        """The category of each given item id (same shape); ValueError naming unknown ids."""
        found: Int64Array = self.item_categories[self.positions(item_ids)]
        return found


def _check_item_ids(ids: Int64Array) -> None:
    if np.any(ids < 0):
        raise ValueError(f"item_ids: ids must be >= 0, got {describe_ids(ids[ids < 0])}")
    sorted_ids = np.sort(ids)
    repeated = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
    if repeated.size:
        raise ValueError(f"item_ids: ids must be unique, repeated {describe_ids(repeated)}")


def _num_categories(categories: Int64Array, num_categories: int | None) -> int:
    if num_categories is None:
        return int(categories.max()) + 1 if categories.size else 0
    if isinstance(num_categories, bool) or not isinstance(num_categories, int | np.integer):
        raise TypeError(f"num_categories: expected an int >= 0, got {num_categories!r}")
    if num_categories < 0:
        raise ValueError(f"num_categories: expected an int >= 0, got {num_categories!r}")
    return int(num_categories)


def _check_categories(categories: Int64Array, ids: Int64Array, count: int) -> None:
    bad = (categories < 0) | (categories >= count)
    if np.any(bad):
        raise ValueError(
            f"item_categories: items {describe_ids(ids[bad])} have category ids "
            f"{describe_ids(categories[bad])} outside [0, {count})"
        )
