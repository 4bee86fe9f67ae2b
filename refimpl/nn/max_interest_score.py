"""Multi-interest serving score (UMI eq. 1): an item scores by the user's best interest.

With interests v_bk (B, K, D) and item vectors e_m (M, D):

    k_bm  = argmax_k <v_bk, e_m>                     best_interest (B, M), ties to the lowest k
    s_bm  = max_k <v_bk, e_m> = <v_{b k_bm}, e_m>    scores (B, M), user b, item m      (UMI eq. 1)
    top-n(b) = the n items of highest s_b., ties to the lower item id

Retrieval with one nearest-neighbour search per interest followed by a merge
(`merge_interest_candidates`: the union of the K lists, de-duplicated, ordered by score) returns
exactly the top-n under s when each interest's search is exact and returns its own top n: an item
in the top-n under s is in the top n of its best interest, and de-duplication keeps each item's
highest score, which is its s.

The backward treats the argmax as a constant, as the readout does (refimpl.nn.multi_interest_readout):
d v_{b k_bm} += d s_bm e_m and d e_m += sum_b d s_bm v_{b k_bm}; away from ties this is the exact
gradient, at a tie it is the gradient of the lowest-index branch.

Shapes: interests (B, K, D), items (M, D), scores (B, M) in their dtype, best_interest (B, M) int64,
top-n ids (B, n) int64. Edge cases: K = 1 is the plain inner product; n must lie in [1, M].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, IntArray, Shapes, require_positive_int

__all__ = [
    "MaxInterestCache",
    "max_interest_score_backward",
    "max_interest_score_forward",
    "max_interest_top_n",
    "merge_interest_candidates",
]


@dataclass(frozen=True)
class MaxInterestCache:
    interests: Array  # (B, K, D)
    items: Array  # (M, D)
    best_interest: IntArray  # (B, M) int64


def max_interest_score_forward(interests: Array, items: Array) -> tuple[Array, MaxInterestCache]:
    """UMI eq. 1 for every (user, item) pair: scores (B, M) and the cache (with best_interest)."""
    shapes = Shapes()
    shapes.check_float("interests", interests, ("B", "K", "D"))
    shapes.check_float("items", items, ("M", "D"))
    if shapes.size("K") == 0:
        raise ValueError("interests: expected at least one interest (K >= 1), got K = 0")
    per_interest = np.einsum("bkd,md->bmk", interests, items)  # (B, M, K)
    best_interest = np.argmax(per_interest, axis=-1).astype(np.int64)
    scores: Array = np.take_along_axis(per_interest, best_interest[..., None], axis=-1)[..., 0]
    return scores, MaxInterestCache(interests, items, best_interest)


def max_interest_score_backward(cache: MaxInterestCache, d_scores: Array) -> tuple[Array, Array]:
    """(d_interests (B, K, D), d_items (M, D)) for the upstream d_scores (B, M)."""
    b, k, _ = cache.interests.shape
    shapes = Shapes(B=b, M=cache.items.shape[0])
    shapes.check_float("interests", cache.interests, ("B", "K", "D"))
    shapes.check_float("d_scores", d_scores, ("B", "M"))
    # in the forward pass this was: scores = per_interest[..., best_interest],
    # per_interest = einsum("bkd,md->bmk", interests, items): only the best interest gets a gradient
    chosen = np.eye(k, dtype=d_scores.dtype)[cache.best_interest]  # (B, M, K) one-hot
    d_interests: Array = np.einsum("bm,bmk,md->bkd", d_scores, chosen, cache.items)
    d_items: Array = np.einsum("bm,bmk,bkd->md", d_scores, chosen, cache.interests)
    return d_interests, d_items


def max_interest_top_n(interests: Array, items: Array, n: int) -> tuple[IntArray, Array]:
    """Exact retrieval by UMI eq. 1: ids (B, n) int64 of the n best items of each user (ties to
    the lower id) and their scores (B, n), best first."""
    scores, _ = max_interest_score_forward(interests, items)
    count = require_positive_int("n", n)
    if count > items.shape[0]:
        raise ValueError(f"n: expected at most M = {items.shape[0]} items, got {count}")
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :count].astype(np.int64)
    top_scores: Array = np.take_along_axis(scores, ids, axis=1)
    return ids, top_scores


def merge_interest_candidates(ids: IntArray, scores: Array, n: int) -> IntArray:
    """The merge step of per-interest retrieval: ids, scores (S, K, n') of each interest's search
    results -> (S, n) int64, the top n of their union by score, each item once (at its highest
    score), ties to the lower id, rows padded with -1 when fewer than n distinct items were found.
    Negative ids in `ids` are a search's padding and are skipped."""
    shapes = Shapes()
    shapes.check_int("ids", ids, ("S", "K", "N"))
    shapes.check_float("scores", scores, ("S", "K", "N"))
    count = require_positive_int("n", n)
    flat_ids = ids.reshape(ids.shape[0], -1)
    flat_scores = scores.reshape(scores.shape[0], -1)
    out = np.full((ids.shape[0], count), -1, dtype=np.int64)
    for row, (row_ids, row_scores) in enumerate(zip(flat_ids, flat_scores, strict=True)):
        found = row_ids >= 0
        order = np.lexsort((row_ids[found], -row_scores[found]))  # by score, then by id
        ranked = row_ids[found][order]
        _, first = np.unique(ranked, return_index=True)
        kept = ranked[np.sort(first)][:count]
        out[row, : kept.shape[0]] = kept
    return out
