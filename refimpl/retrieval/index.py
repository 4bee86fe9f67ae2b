"""The one interface both retrieval back ends implement (spec/retrieval.md#back-ends)."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from refimpl._check import Array, Shapes, require_positive_int
from refimpl.retrieval.catalogue import Catalogue, Int64Array

__all__ = [
    "SearchIndex",
]


class SearchIndex(Protocol):
    """Top-k maximum-inner-product search over one category's items or the whole catalogue.

    `search(queries (Q, D), k, category)` returns ids (Q, k') int64 and scores (Q, k') in the
    catalogue's dtype, each row by score descending, with k' = min(k, pool size): a category with
    fewer than k items returns all it has, an empty category returns (Q, 0). `category=None`
    searches the whole catalogue. Queries must have the catalogue's width D and dtype.
    """

    name: str
    catalogue: Catalogue

    def search(self, queries: Array, k: int, category: int | None = None) -> tuple[Int64Array, Array]: ...

    def free_depth(self, category: int | None = None) -> int:
        """How many items a search of the pool may be asked for at the cost of fewer: hnswlib walks
        the graph with a beam of ef candidates whatever k <= ef is, so asking for k = ef costs what
        k = 1 does; a scan's selection does not gain from it (0). The cascade's short-term route
        asks for at least this many, so fewer rows need a deeper second search."""
        ...


def catalogue_shapes(catalogue: Catalogue) -> Shapes:
    """Shapes with D and the float dtype bound to the catalogue's. `Catalogue.build` already
    refused non-finite vectors: the catalogue is not scanned again on every search."""
    shapes = Shapes(D=catalogue.dim)
    shapes.float_dtype = catalogue.vectors.dtype
    shapes.float_dtype_source = "catalogue.vectors"
    return shapes


def check_search_args(catalogue: Catalogue, queries: Any, k: Any, category: Any) -> None:
    """ValueError/TypeError naming the bad argument of a `search` call."""
    shapes = catalogue_shapes(catalogue)
    shapes.check_float("queries", queries, ("Q", "D"))
    require_positive_int("k", k)
    check_category(catalogue, category)


def check_category(catalogue: Catalogue, category: Any) -> None:
    """TypeError/ValueError unless `category` is None or a category id of the catalogue."""
    if category is not None:
        if isinstance(category, bool) or not isinstance(category, int | np.integer):
            raise TypeError(f"category: expected an int or None, got {category!r}")
        catalogue.check_categories("category", np.asarray([category]))
