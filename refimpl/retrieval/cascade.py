"""Cascaded category-to-item retrieval (ULIM 2.2.2; spec/retrieval.md#the-cascade).

PGIN predicts the top-K categories of a user; the long-term vector of the k-th category searches only
that category's items; the short-term vector searches the whole pool; the results are merged,
de-duplicated and cut to N. The quotas:

1. Routes. A long-term route k is live when its mask is True, its category did not already occur at
   a better (lower) PGIN rank in the row (a duplicate prediction is dropped: the same category gives
   the same subsequence, hence the same vector), and its category has at least one item.
2. Short-term share. q_s = floor(short_share * N), or floor(N / (R + 1)) when short_share is None
   (every route, the R live long-term ones and the short-term one, gets an equal share).
3. Long-term split. N - q_s is split evenly over the live long-term routes, each capped by its
   category's size (max-min fair allocation): with L the largest level such that
   sum_k min(size_k, L) <= N - q_s, route k gets min(size_k, L), and the units left over go one
   each to the best-ranked routes whose category holds more than L items.
4. Whatever the long-term routes could not place goes to the short-term route: it takes the best
   q = N - (long-term total) items of the whole pool that no long-term route already returned.
5. Merge order: the N (or fewer) items are sorted by their score (the inner product with the vector
   of the route that retrieved them) descending, ties by the lower item id. The set, not the order,
   is what the quotas fix: a prefix of the result is NOT the cascade at a smaller N.
A row returns fewer than N items only if the catalogue has fewer than N items; the missing slots
are padding (id -1, score -inf, route PAD_ROUTE, valid False).

Steps 2-4 are the default split, "even". `CascadeConfig.split` offers two others, compared by
measurement in spec/retrieval.md#quota-policies: "weighted" (step 3 splits N - q_s in proportion to
`route_weights`, e.g. PGIN's probabilities: `split_weighted`) and "score" (no quotas: every live
long-term route returns up to N items of its category, the short-term route up to N of the whole
pool, and the union, each item at its best score, is cut to the N best).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from refimpl._check import (
    Array,
    BoolArray,
    IntArray,
    Shapes,
    require_array,
    require_choice,
    require_int,
    require_positive_int,
    require_real,
)
from refimpl.retrieval.catalogue import Int64Array
from refimpl.retrieval.index import SearchIndex

__all__ = [
    "PAD_ROUTE",
    "SHORT_ROUTE",
    "SPLITS",
    "CascadeConfig",
    "CascadeResult",
    "cascade_recall",
    "cascade_retrieve",
    "split_evenly",
    "split_weighted",
]

SHORT_ROUTE = -1
"""`routes` value of an item retrieved by the short-term vector (long-term routes are 0..K-1)."""
PAD_ROUTE = -2
"""`routes` value of a padding slot (only when the catalogue has fewer than N items)."""


SPLITS = ("even", "weighted", "score")
"""How N is shared between the routes (spec/retrieval.md#quota-policies): "even" (the default,
steps 2-4 above), "weighted" (the long-term share split in proportion to route weights, e.g.
PGIN's probabilities), "score" (no quotas: every route returns up to N, the union is ranked by
score and cut to N)."""


@dataclass(frozen=True)
class CascadeConfig:
    """n: N, the number of items retrieved per user; short_share: the share of N reserved for the
    short-term vector in [0, 1], or None for an equal share with each live long-term route;
    split: one of SPLITS."""

    n: int
    short_share: float | None = None
    split: str = "even"

    def __post_init__(self) -> None:
        require_positive_int("CascadeConfig.n", self.n)
        require_choice("CascadeConfig.split", self.split, SPLITS)
        share = self.short_share
        if share is not None and not (isinstance(share, float | int) and 0.0 <= share <= 1.0):
            raise ValueError(f"CascadeConfig.short_share: expected None or [0, 1], got {share!r}")


@dataclass(frozen=True)
class CascadeResult:
    """ids (B, N) int64, scores (B, N) catalogue dtype, routes (B, N) int64 (PGIN rank 0..K-1 of
    the long-term route, SHORT_ROUTE, or PAD_ROUTE), valid (B, N) bool; quotas (B, K + 1) int64:
    the number of items each long-term route (by rank) and, last, the short-term route returned."""

    ids: Int64Array
    scores: Array
    routes: Int64Array
    valid: BoolArray
    quotas: Int64Array

    def __post_init__(self) -> None:
        shapes = Shapes()
        shapes.check_int("ids", self.ids, ("B", "N"))
        scores = require_array("scores", self.scores)
        if scores.dtype not in (np.float32, np.float64):
            raise TypeError(f"scores: expected float32 or float64, got {scores.dtype}")
        if scores.shape != self.ids.shape:
            raise ValueError(f"scores: expected shape (B, N) = {self.ids.shape} like ids, got {scores.shape}")
        if np.isnan(scores).any():
            raise ValueError("scores: expected no NaN (padding slots hold -inf)")
        shapes.check_int("routes", self.routes, ("B", "N"))
        shapes.check_bool("valid", self.valid, ("B", "N"))
        shapes.check_int("quotas", self.quotas, ("B", "R"))


def split_evenly(total: int, capacities: Sequence[int]) -> list[int]:
    """Max-min fair split of `total` over routes in priority order, each capped by its capacity.

    The level L is the largest integer with sum(min(cap, L)) <= total; each route gets min(cap, L)
    and the units left over go one each to the best-ranked routes whose capacity exceeds L.
    """
    total, caps = _check_split(total, capacities)
    if total >= sum(caps):
        return caps
    low, high = 0, max(caps)
    while low < high:
        middle = (low + high + 1) // 2
        if sum(min(c, middle) for c in caps) <= total:
            low = middle
        else:
            high = middle - 1
    quotas = [min(c, low) for c in caps]
    left = total - sum(quotas)
    for route, cap in enumerate(caps):
        if left and cap > low:
            quotas[route] += 1
            left -= 1
    return quotas


def split_weighted(total: int, capacities: Sequence[int], weights: Sequence[float]) -> list[int]:
    """Split of `total` over routes in priority order in proportion to `weights` (>= 0), each capped
    by its capacity: repeatedly give every open route floor(left * w / sum of open w) (at most its
    room); when that gives nothing, one unit to the open route with the largest share (ties to the
    better rank). Routes whose weights are all 0 share evenly."""
    total, caps = _check_split(total, capacities)
    if isinstance(weights, str) or not isinstance(weights, Sequence | np.ndarray) or len(weights) != len(caps):
        raise ValueError(f"weights: expected a sequence of {len(caps)} weights like capacities, got {weights!r}")
    for weight in weights:
        require_real("weights", weight, low=0.0)
    quotas = [0] * len(caps)
    left = min(total, sum(caps))
    while left > 0:
        room = [r for r, cap in enumerate(caps) if quotas[r] < cap]
        mass = sum(max(float(weights[r]), 0.0) for r in room)
        share = [
            left * (max(float(weights[r]), 0.0) / mass if mass > 0 else 1.0 / len(room))
            for r in room
        ]
        gives = [min(caps[r] - quotas[r], int(np.floor(x))) for r, x in zip(room, share, strict=True)]
        if sum(gives) == 0:
            gives[int(np.argmax(share))] = 1
        for r, give in zip(room, gives, strict=True):
            quotas[r] += give
        left -= sum(gives)
    return quotas


def _check_split(total: int, capacities: Sequence[int]) -> tuple[int, list[int]]:
    """total a non-negative int; capacities a sequence of non-negative ints."""
    count = require_int("total", total, low=0)
    if isinstance(capacities, str) or not isinstance(capacities, Sequence | np.ndarray):
        raise TypeError(f"capacities: expected a sequence of integers, got {type(capacities).__name__}")
    return count, [require_int("capacities", c, low=0) for c in capacities]


def live_routes(categories: IntArray, mask: BoolArray, category_sizes: Int64Array) -> BoolArray:
    """(B, K): masked in, first occurrence of its category in the row, and a non-empty category."""
    first = mask.copy()
    for rank in range(1, categories.shape[1]):
        earlier = mask[:, :rank] & (categories[:, :rank] == categories[:, rank : rank + 1])
        first[:, rank] &= ~earlier.any(axis=1)
    safe = np.where(mask, categories, 0)
    live: BoolArray = first & (category_sizes[safe] > 0)
    return live


def route_quotas(
    live: BoolArray, capacities: Int64Array, catalogue_size: int, cfg: CascadeConfig,
    weights: Array | None = None,
) -> Int64Array:
    """(B, K + 1) quotas: long-term routes by rank, then the short-term route (steps 2-4); with
    cfg.split "weighted" the long-term share follows `weights` (B, K); with "score" every live
    route, and the short-term one, may return up to N."""
    batch, k = live.shape
    if cfg.split == "score":
        quotas = np.where(live, np.minimum(capacities, cfg.n), 0)
        return np.concatenate([quotas, np.full((batch, 1), min(cfg.n, catalogue_size))], axis=1)
    quotas = np.zeros((batch, k + 1), dtype=np.int64)
    for row in range(batch):
        ranks = np.flatnonzero(live[row])
        if cfg.short_share is None:
            short = cfg.n // (ranks.size + 1)
        else:
            short = int(np.floor(cfg.short_share * cfg.n))
        caps = [int(c) for c in capacities[row, ranks]]
        if cfg.split == "weighted" and weights is not None:
            long_quotas = split_weighted(cfg.n - short, caps, [float(w) for w in weights[row, ranks]])
        else:
            long_quotas = split_evenly(cfg.n - short, caps)
        quotas[row, ranks] = long_quotas
        long_total = sum(long_quotas)
        quotas[row, k] = min(cfg.n - long_total, catalogue_size - long_total)
    return quotas


def cascade_retrieve(
    index: SearchIndex,
    categories: IntArray,
    long_vectors: Array,
    short_vectors: Array,
    cfg: CascadeConfig,
    long_mask: BoolArray | None = None,
    route_weights: Array | None = None,
) -> CascadeResult:
    """Cascaded retrieval for B users.

    categories (B, K) int: PGIN's top-K categories, best first; long_vectors (B, K, D): the
    long-term vector of each predicted category; short_vectors (B, D); long_mask (B, K) bool
    (True = valid; False for a category the user has no history in, or padding when K exceeds
    the number of categories: its category id is then ignored); route_weights (B, K) >= 0, what
    cfg.split "weighted" splits the long-term share by (PGIN's probabilities; required for it,
    ignored otherwise). Unknown category ids at valid
    positions raise ValueError naming them. Vectors must have the catalogue's width and dtype.
    """
    catalogue = index.catalogue
    shapes = Shapes(D=catalogue.dim)
    shapes.check_float("catalogue.vectors", catalogue.vectors, ("I", "D"))
    shapes.check_int("categories", categories, ("B", "K"))
    shapes.check_float("long_vectors", long_vectors, ("B", "K", "D"))
    shapes.check_float("short_vectors", short_vectors, ("B", "D"))
    mask = np.ones(categories.shape, dtype=bool) if long_mask is None else long_mask
    shapes.check_bool("long_mask", mask, ("B", "K"))
    catalogue.check_categories("categories", categories[mask])
    _check_finite("long_vectors", long_vectors[mask])
    _check_finite("short_vectors", short_vectors)
    if cfg.split == "weighted":
        if route_weights is None:
            raise ValueError("route_weights: required by CascadeConfig.split 'weighted', got None")
        shapes.check_float("route_weights", route_weights, ("B", "K"))
        if not np.all(np.isfinite(route_weights) & (route_weights >= 0)):
            raise ValueError("route_weights: expected finite weights >= 0")

    cats = categories.astype(np.int64)
    sizes = catalogue.category_sizes()
    live = live_routes(cats, mask, sizes)
    capacities = np.where(live, sizes[np.where(mask, cats, 0)], 0)
    quotas = route_quotas(live, capacities, catalogue.size, cfg, route_weights)
    picks = _long_term_picks(index, cats, long_vectors, quotas)
    if cfg.split == "score":
        _add_short_term_picks(index, short_vectors, quotas, [[] for _ in picks], picks)
        return _merge(_best_by_score(picks, cfg.n), quotas, cfg.n, catalogue.vectors.dtype)
    _add_short_term_picks(index, short_vectors, quotas, picks, picks)
    return _merge(picks, quotas, cfg.n, catalogue.vectors.dtype)


Pick = tuple[int, float, int]  # (item id, score, route)


def _check_finite(name: str, values: NDArray[Any]) -> None:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name}: every valid vector must be finite (found NaN or inf)")


def _long_term_picks(
    index: SearchIndex, categories: Int64Array, long_vectors: Array, quotas: Int64Array
) -> list[list[Pick]]:
    """Each long-term route's quota of its own category's best items, one search per category."""
    batch, k = categories.shape
    picks: list[list[Pick]] = [[] for _ in range(batch)]
    wanted = quotas[:, :k] > 0
    for category in np.unique(categories[wanted]):
        rows, ranks = np.nonzero(wanted & (categories == category))
        route_quota = quotas[rows, ranks]
        ids, scores = index.search(long_vectors[rows, ranks], int(route_quota.max()), category=int(category))
        for row, rank, quota, row_ids, row_scores in zip(rows, ranks, route_quota, ids, scores, strict=True):
            picks[row].extend(
                (int(i), float(s), int(rank)) for i, s in zip(row_ids[:quota], row_scores[:quota], strict=True)
            )
    return picks


def _add_short_term_picks(
    index: SearchIndex, short_vectors: Array, quotas: Int64Array, excluded: list[list[Pick]],
    picks: list[list[Pick]],
) -> None:
    """The short-term route's quota of the best whole-pool items not in `excluded`, added to
    `picks`."""
    rows = np.flatnonzero(quotas[:, -1] > 0)
    if rows.size == 0:
        return
    taken = quotas[rows, :-1].sum(axis=1)
    depth = int(min(index.catalogue.size, int((quotas[rows, -1] + taken).max())))
    ids, scores = index.search(short_vectors[rows], depth)
    for row, row_ids, row_scores in zip(rows, ids, scores, strict=True):
        already = {pick[0] for pick in excluded[row]}
        quota = int(quotas[row, -1])
        fresh = [(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if int(i) not in already]
        picks[row].extend((i, s, SHORT_ROUTE) for i, s in fresh[:quota])


def _best_by_score(picks: list[list[Pick]], n: int) -> list[list[Pick]]:
    """Split "score": each row's picks de-duplicated (an item keeps its best score, then the
    better route), the best n by score, ties to the lower item id."""
    result = []
    for row_picks in picks:
        best: dict[int, Pick] = {}
        for pick in row_picks:
            kept = best.get(pick[0])
            if kept is None or (pick[1], -_route_order(pick[2])) > (kept[1], -_route_order(kept[2])):
                best[pick[0]] = pick
        result.append(sorted(best.values(), key=lambda p: (-p[1], p[0]))[:n])
    return result


def _route_order(route: int) -> int:
    """Long-term routes by rank first, the short-term route last."""
    return route if route >= 0 else 1 << 30


def _merge(picks: list[list[Pick]], quotas: Int64Array, n: int, dtype: Any) -> CascadeResult:
    batch = len(picks)
    ids = np.full((batch, n), -1, dtype=np.int64)
    scores = np.full((batch, n), -np.inf, dtype=dtype)
    routes = np.full((batch, n), PAD_ROUTE, dtype=np.int64)
    valid = np.zeros((batch, n), dtype=bool)
    counts = np.zeros_like(quotas)
    short_column = quotas.shape[1] - 1
    for row, row_picks in enumerate(picks):
        ordered = sorted(row_picks, key=lambda pick: (-pick[1], pick[0]))
        width = len(ordered)
        ids[row, :width] = [pick[0] for pick in ordered]
        scores[row, :width] = [pick[1] for pick in ordered]
        routes[row, :width] = [pick[2] for pick in ordered]
        valid[row, :width] = True
        for pick in ordered:
            counts[row, short_column if pick[2] == SHORT_ROUTE else pick[2]] += 1
    return CascadeResult(ids=ids, scores=scores, routes=routes, valid=valid, quotas=counts)


def cascade_recall(approximate: CascadeResult, exact: CascadeResult) -> float:
    """Share of the exact cascade's items (over all users) that the approximate one also returned."""
    if approximate.ids.shape != exact.ids.shape:
        raise ValueError(
            f"approximate: expected ids of shape {exact.ids.shape} like exact, got {approximate.ids.shape}"
        )
    found = 0
    for approx_row, approx_valid, exact_row, exact_valid in zip(
        approximate.ids, approximate.valid, exact.ids, exact.valid, strict=True
    ):
        found += np.intersect1d(approx_row[approx_valid], exact_row[exact_valid]).size
    total = int(exact.valid.sum())
    return 1.0 if total == 0 else found / total
