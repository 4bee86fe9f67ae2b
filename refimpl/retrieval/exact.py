"""Exact maximum-inner-product search in NumPy, grouped by category (spec/retrieval.md#back-ends).

For a query q and a pool P (one category's items, or the whole catalogue) the result is the k items
of P with the largest <q, e>, sorted by score descending; equal scores are ordered by the lower
item id first, so the result is a function of the catalogue and the queries alone. Scores are
computed by one batched matmul per pool (in chunks of queries, to bound memory) in the dtype of the
catalogue; top-k selection uses `argpartition` and falls back to a stable full sort only for the
rows whose k-th score is tied with an item left outside the partition.
"""

from __future__ import annotations

import numpy as np

from refimpl._check import Array
from refimpl.retrieval.catalogue import Catalogue, Int64Array
from refimpl.retrieval.index import check_category, check_search_args

__all__ = [
    "ExactIndex",
]

# Bound on the (queries x pool) score block held in memory at once, in elements.
_BLOCK_ELEMENTS = 1 << 22


class ExactIndex:
    """Exact top-k search over each category and over the whole catalogue.

    Holds the catalogue's per-category blocks (already sorted by id) and a copy of the whole
    catalogue sorted by id for the global pool. Immutable after construction.
    """

    name = "exact"

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        by_id = np.argsort(catalogue.item_ids, kind="stable")
        self._global_ids: Int64Array = catalogue.item_ids[by_id]
        self._global_vectors: Array = np.ascontiguousarray(catalogue.vectors[by_id])

    def search(self, queries: Array, k: int, category: int | None = None) -> tuple[Int64Array, Array]:
        """Top-k items for each query: queries (Q, D) -> ids (Q, k'), scores (Q, k').

        The pool is category `category`'s items, or the whole catalogue when it is None;
        k' = min(k, pool size), so a small or empty category returns what it has.
        """
        check_search_args(self.catalogue, queries, k, category)
        ids, vectors = self._pool(category)
        return top_k_inner_product(queries, vectors, ids, k)

    def free_depth(self, category: int | None = None) -> int:
        """0: a scan costs the same whatever k is, and a deeper ask only sorts more (SearchIndex)."""
        check_category(self.catalogue, category)
        return 0

    def _pool(self, category: int | None) -> tuple[Int64Array, Array]:
        if category is None:
            return self._global_ids, self._global_vectors
        return self.catalogue.category_block(category)


def top_k_inner_product(queries: Array, vectors: Array, ids: Int64Array, k: int) -> tuple[Int64Array, Array]:
    """Exact top-k by inner product; `ids` (n,) must be ascending (it breaks ties).

    queries (Q, D), vectors (n, D) -> ids (Q, min(k, n)), scores (Q, min(k, n)).
    """
    width = min(k, vectors.shape[0])
    out_ids = np.empty((queries.shape[0], width), dtype=np.int64)
    out_scores = np.empty((queries.shape[0], width), dtype=vectors.dtype)
    if width == 0:
        return out_ids, out_scores
    rows_per_block = max(1, _BLOCK_ELEMENTS // vectors.shape[0])
    for start in range(0, queries.shape[0], rows_per_block):
        block = slice(start, start + rows_per_block)
        scores = queries[block] @ vectors.T
        positions = _top_positions(scores, width)
        out_ids[block] = ids[positions]
        out_scores[block] = np.take_along_axis(scores, positions, axis=1)
    return out_ids, out_scores


def _top_positions(scores: Array, k: int) -> Int64Array:
    """Positions of the k largest scores per row, by score descending then position ascending."""
    if k == scores.shape[1]:
        full: Int64Array = np.argsort(-scores, axis=1, kind="stable")
        return full
    # The k largest are the last k after partitioning at n - k: no negated copy of the (Q, n)
    # scores (at n = 10^6 that copy cost more than the partition itself).
    picked = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, scores.shape[1] - k :]
    picked_scores = np.take_along_axis(scores, picked, axis=1)
    order = score_order(picked_scores, picked)
    positions: Int64Array = np.take_along_axis(picked, order, axis=1).astype(np.int64)
    threshold = picked_scores.min(axis=1, keepdims=True)
    # argpartition picks an arbitrary member of a tie at the k-th score; such rows are re-sorted.
    tied = (scores == threshold).sum(axis=1) > (picked_scores == threshold).sum(axis=1)
    if np.any(tied):
        stable = np.argsort(-scores[tied], axis=1, kind="stable")[:, :k]
        positions[tied] = stable
    return positions


def score_order(scores: Array, ids: Int64Array) -> Int64Array:
    """Per row of scores (Q, k), the column order by score descending, then id ascending (ids
    (Q, k); -inf scores last). A fast unstable sort by score; only the rows where two finite
    scores tie are sorted again by (score, id)."""
    order: Int64Array = np.argsort(-scores, axis=1)
    ranked = np.take_along_axis(scores, order, axis=1)
    ties = np.any((ranked[:, 1:] == ranked[:, :-1]) & np.isfinite(ranked[:, 1:]), axis=1)
    if np.any(ties):
        order[ties] = np.lexsort((ids[ties], -scores[ties]), axis=1)
    return order
