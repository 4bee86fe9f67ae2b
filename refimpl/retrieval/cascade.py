"""Cascaded category-to-item retrieval (ULIM 2.2.2).

PGIN predicts a user's top-K categories; the long-term vector of each predicted category searches
only that category's items, the short-term vector the whole pool; the results are merged,
de-duplicated and cut to N. The rules (which routes are live, how N is shared, what the
short-term route skips, the merge order, padding) are defined once, in spec/retrieval.md#the-cascade
(steps 1-5) and #quota-policies; this module follows them step by step:

    step 1 (live routes)                 live_routes
    steps 2-3 (shares; "even" split)     route_quotas, split_evenly_rows (split_evenly: one row)
    "weighted" split                     route_quotas, split_weighted
    long-term searches                   _long_term_picks (one search per category for the batch)
    step 4 (short-term route)            _short_term_picks (asks for the quota, deeper only if needed)
    "score" split (no quotas)            _best_by_score
    step 5 (merge order, padding)        _merge

The bookkeeping is array work over the whole batch: every route writes its items into its own
slots of a (B, W) `Picks` (W = the largest row total), so no Python code runs per retrieved item
(only per predicted category and per search round).
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
from refimpl.progress import track
from refimpl.retrieval.catalogue import Int64Array
from refimpl.retrieval.exact import score_order
from refimpl.retrieval.index import SearchIndex, catalogue_shapes

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
    quotas = split_evenly_rows(np.array([total]), np.array([caps], dtype=np.int64).reshape(1, len(caps)))
    return [int(q) for q in quotas[0]]


def split_evenly_rows(totals: Int64Array, capacities: Int64Array) -> Int64Array:
    """`split_evenly` for every row at once: totals (B,) >= 0, capacities (B, R) >= 0 in priority
    order -> quotas (B, R).

    The level of every row by water-filling: with the capacities sorted, c_0 <= ... <= c_{R-1},
    and S_j the sum of the j smallest, sum(min(cap, L)) = S_j + (R - j) L for L in [c_{j-1}, c_j]
    (c_{-1} = 0), so the largest level of segment j is min(c_j, floor((total - S_j) / (R - j))),
    valid when at least c_{j-1}; the row's level is the largest valid one (segment 0 always is).
    A fixed number of array operations, whatever the capacities (one user's call stays cheap)."""
    batch, routes = capacities.shape
    if routes == 0:
        return np.zeros(capacities.shape, dtype=np.int64)
    ordered = np.sort(capacities, axis=1)
    below = np.concatenate([np.zeros((batch, 1), np.int64), ordered[:, :-1]], axis=1)  # c_{j-1}
    smaller_sum = np.cumsum(below, axis=1)  # S_j
    level = np.minimum(ordered, (totals[:, None] - smaller_sum) // (routes - np.arange(routes)))
    level = np.where(level >= below, level, 0).max(axis=1)
    quotas: Int64Array = np.minimum(capacities, level[:, None]).astype(np.int64)
    left = np.minimum(totals, capacities.sum(axis=1)) - quotas.sum(axis=1)
    # The remainder (fewer units than routes above the level) goes one each, best rank first.
    above = capacities > level[:, None]
    quotas += above & (np.cumsum(above, axis=1) <= left[:, None])
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
    batch = live.shape[0]
    if cfg.split == "score":
        quotas = np.where(live, np.minimum(capacities, cfg.n), 0)
        return np.concatenate([quotas, np.full((batch, 1), min(cfg.n, catalogue_size))], axis=1)
    if cfg.short_share is None:
        short = cfg.n // (live.sum(axis=1) + 1)
    else:
        short = np.full(batch, int(np.floor(cfg.short_share * cfg.n)))
    long_share = (cfg.n - short).astype(np.int64)
    # A route that is not live has capacity 0, so it never receives a unit.
    if cfg.split == "weighted" and weights is not None:
        long_quotas = np.zeros(live.shape, dtype=np.int64)
        for row in range(batch):  # the weighted split's rounds differ per row
            ranks = np.flatnonzero(live[row])
            long_quotas[row, ranks] = split_weighted(
                int(long_share[row]), [int(c) for c in capacities[row, ranks]],
                [float(w) for w in weights[row, ranks]],
            )
    else:
        long_quotas = split_evenly_rows(long_share, capacities)
    long_total = long_quotas.sum(axis=1)
    short_quota = np.minimum(cfg.n, catalogue_size) - long_total
    return np.concatenate([long_quotas, short_quota[:, None]], axis=1).astype(np.int64)


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
    shapes = catalogue_shapes(catalogue)
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
    # Every route writes its items into its own slots of the row: long-term routes by rank, then
    # the short-term route.
    starts = np.concatenate([np.zeros((quotas.shape[0], 1), np.int64), np.cumsum(quotas, axis=1)], axis=1)
    picks = Picks.allocate(quotas.shape[0], int(starts[:, -1].max(initial=0)), catalogue.vectors.dtype)
    _long_term_picks(index, cats, long_vectors, quotas, starts, picks)
    _short_term_picks(index, short_vectors, quotas, starts, picks, exclude_taken=cfg.split != "score")
    if cfg.split == "score":
        picks = _best_by_score(picks)
    return _merge(picks, cfg.n, cats.shape[1])


@dataclass(frozen=True)
class Picks:
    """The items the routes retrieved for a batch, (B, W) slots per user row: ids, scores (the
    inner product with the vector of the route that retrieved the item), routes (the PGIN rank of
    that route, SHORT_ROUTE, or PAD_ROUTE on an unused slot). Filled in place by the routes."""

    ids: Int64Array
    scores: Array
    routes: Int64Array

    @staticmethod
    def allocate(batch: int, width: int, dtype: Any) -> Picks:
        return Picks(
            np.full((batch, width), -1, dtype=np.int64),
            np.full((batch, width), -np.inf, dtype=dtype),
            np.full((batch, width), PAD_ROUTE, dtype=np.int64),
        )

    def put(self, rows: Int64Array, columns: Int64Array, ids: Int64Array, scores: Array, route: Any) -> None:
        self.ids[rows, columns] = ids
        self.scores[rows, columns] = scores
        self.routes[rows, columns] = route

    def take(self, order: Int64Array) -> Picks:
        """Every row's slots in the row's own order (B, W') of slot indexes."""
        return Picks(
            np.take_along_axis(self.ids, order, axis=1),
            np.take_along_axis(self.scores, order, axis=1),
            np.take_along_axis(self.routes, order, axis=1),
        )


def _check_finite(name: str, values: NDArray[Any]) -> None:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name}: every valid vector must be finite (found NaN or inf)")


def _long_term_picks(
    index: SearchIndex, categories: Int64Array, long_vectors: Array, quotas: Int64Array, starts: Int64Array,
    picks: Picks,
) -> None:
    """Each long-term route's quota of its own category's best items, one search per category
    (for every row that predicts it, with k = the largest quota among them), into its slots."""
    k = categories.shape[1]
    wanted = quotas[:, :k] > 0
    # A bar only when a batch takes long (an evaluation over many users), never for one user's call.
    for category in track(np.unique(categories[wanted]), "cascade retrieval", unit="category", delay=2.0):
        rows, ranks = np.nonzero(wanted & (categories == category))
        route_quota = quotas[rows, ranks]
        ids, scores = index.search(long_vectors[rows, ranks], int(route_quota.max()), category=int(category))
        # Each row keeps the first `quota` columns of its result (a category holds at least its quota).
        where, column = np.nonzero(np.arange(ids.shape[1]) < route_quota[:, None])
        picks.put(rows[where], starts[rows[where], ranks[where]] + column, ids[where, column],
                  scores[where, column], ranks[where])


def _short_term_picks(
    index: SearchIndex, short_vectors: Array, quotas: Int64Array, starts: Int64Array, picks: Picks,
    exclude_taken: bool,
) -> None:
    """The short-term route's quota (last column of `quotas`) of the best whole-pool items, those
    the row's long-term routes took skipped when `exclude_taken` (step 4), into its slots.

    The search asks for what a row needs, not N: first its quota (or the depth the back end
    reaches at the same cost, `SearchIndex.free_depth`, when larger); a row whose result holds fewer
    fresh items than its quota (its long-term routes took some) is searched again, deeper by the
    number of taken items it met, until it has enough. With the exact back end a shallower search
    is a prefix of a deeper one (scores descending, ties to the lower id), so the result is that
    of one search of depth N."""
    catalogue = index.catalogue
    rows = np.flatnonzero(quotas[:, -1] > 0)
    need = quotas[rows, -1]
    # The first search may go as deep as the back end goes anyway (hnswlib: its beam): the taken
    # items it meets then rarely force a second one.
    depth = np.minimum(np.maximum(need, index.free_depth(None)), catalogue.size)
    short_start = starts[:, -2]
    taken_rows, taken_columns = np.nonzero((picks.routes >= 0) if exclude_taken else np.zeros((0, 0), bool))
    taken_keys = taken_rows * catalogue.size + catalogue.positions(picks.ids[taken_rows, taken_columns])
    pending = np.arange(rows.size)
    while pending.size:
        searched = rows[pending]
        ids, scores = index.search(short_vectors[searched], int(depth[pending].max()))
        keys = searched[:, None] * catalogue.size + catalogue.positions(ids)
        fresh = ~_contains(keys, taken_keys)
        fresh_rank = np.cumsum(fresh, axis=1)
        done = fresh_rank[:, -1] >= need[pending]
        where, column = np.nonzero(fresh & (fresh_rank <= need[pending][:, None]) & done[:, None])
        picks.put(searched[where], short_start[searched[where]] + fresh_rank[where, column] - 1,
                  ids[where, column], scores[where, column], SHORT_ROUTE)
        # A row short of fresh items met (width - fresh) taken ones: it needs at least that much deeper.
        depth[pending] = np.minimum(need[pending] + (~fresh).sum(axis=1), catalogue.size)
        pending = pending[~done]


def _contains(keys: Int64Array, members: Int64Array) -> BoolArray:
    """For distinct `keys` (any shape): which of them occur in `members` (M,). Sorts the keys,
    not the members (the members of a batch outnumber one short-term search's keys)."""
    flat = keys.reshape(-1)
    found = np.zeros(flat.shape, dtype=bool)
    if flat.size and members.size:
        order = np.argsort(flat)
        slot = np.minimum(np.searchsorted(flat[order], members), flat.size - 1)
        hit = flat[order][slot] == members
        found[order[slot[hit]]] = True
    return found.reshape(keys.shape)


def _best_by_score(picks: Picks) -> Picks:
    """Split "score": each row's items de-duplicated, an item keeping its best score (ties to the
    better route: long-term by rank, then short-term). An item occurs at most twice in a row
    (its category's long-term route and the short-term route), so after sorting a row by id the
    worse of two equal neighbours is dropped."""
    by_id = picks.take(np.argsort(np.where(picks.routes == PAD_ROUTE, np.iinfo(np.int64).max, picks.ids), axis=1))
    order = np.where(by_id.routes >= 0, by_id.routes, np.iinfo(np.int64).max)
    twin = (by_id.ids[:, 1:] == by_id.ids[:, :-1]) & (by_id.routes[:, 1:] != PAD_ROUTE)
    later_better = (by_id.scores[:, 1:] > by_id.scores[:, :-1]) | (
        (by_id.scores[:, 1:] == by_id.scores[:, :-1]) & (order[:, 1:] < order[:, :-1])
    )
    drop = np.zeros(by_id.ids.shape, dtype=bool)
    drop[:, :-1] |= twin & later_better
    drop[:, 1:] |= twin & ~later_better
    by_id.ids[drop] = -1
    by_id.scores[drop] = -np.inf
    by_id.routes[drop] = PAD_ROUTE
    return by_id


def _merge(picks: Picks, n: int, k: int) -> CascadeResult:
    """Each row's items by score descending, ties to the lower id (step 5), the first n of them,
    padded past the end; the result's `quotas` (B, k + 1) count its items per route."""
    batch, width = picks.ids.shape
    # Padding (id -1, score -inf) sorts last: its id is raised above every real one.
    sort_ids = np.where(picks.routes == PAD_ROUTE, np.iinfo(np.int64).max, picks.ids)
    ranked = picks.take(score_order(picks.scores, sort_ids))
    if width < n:
        ranked = _pad(ranked, n - width)
    ids, scores, routes = ranked.ids[:, :n], ranked.scores[:, :n], ranked.routes[:, :n]
    valid = routes != PAD_ROUTE
    route_column = np.where(routes == SHORT_ROUTE, k, routes)
    rows = np.broadcast_to(np.arange(batch)[:, None], routes.shape)
    counts = np.bincount((rows * (k + 1) + route_column)[valid], minlength=batch * (k + 1))
    return CascadeResult(ids=ids.copy(), scores=scores.copy(), routes=routes.copy(), valid=valid,
                         quotas=counts.reshape(batch, k + 1).astype(np.int64))


def _pad(picks: Picks, extra: int) -> Picks:
    filler = Picks.allocate(picks.ids.shape[0], extra, picks.scores.dtype)
    return Picks(*(np.concatenate([a, b], axis=1) for a, b in zip(
        (picks.ids, picks.scores, picks.routes), (filler.ids, filler.scores, filler.routes), strict=True)))


def cascade_recall(approximate: CascadeResult, exact: CascadeResult) -> float:
    """Share of the exact cascade's items (over all users) that the approximate one also returned."""
    if approximate.ids.shape != exact.ids.shape:
        raise ValueError(
            f"approximate: expected ids of shape {exact.ids.shape} like exact, got {approximate.ids.shape}"
        )
    # Within a result a row holds each item once, so a (row, id) pair seen twice was found by both.
    rows = np.broadcast_to(np.arange(exact.ids.shape[0])[:, None], exact.ids.shape)
    pair_rows = np.concatenate([rows[approximate.valid], rows[exact.valid]])
    pair_ids = np.concatenate([approximate.ids[approximate.valid], exact.ids[exact.valid]])
    order = np.lexsort((pair_ids, pair_rows))
    pair_rows, pair_ids = pair_rows[order], pair_ids[order]
    found = int(np.sum((pair_rows[1:] == pair_rows[:-1]) & (pair_ids[1:] == pair_ids[:-1])))
    total = int(exact.valid.sum())
    return 1.0 if total == 0 else found / total
