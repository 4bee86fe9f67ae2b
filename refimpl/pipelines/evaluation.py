"""Hit-rate evaluation of retrieval models on a protocol's requests (spec/demo.md, spec/data_model.md).

A model's evaluation is one of two searches over an index of the catalogue vectors, for S samples
(refimpl.pipelines.inputs.request_samples) with one target each:

- `search_hit_rates`: K query vectors per sample (K = 1 for a single-vector model) each search the
  whole pool, the results merged by score (`merged_search`, UMI eq. 1 served);
- `Serving.hit_rates`: ULIM's cascade from routes (categories per sample, `Routes`) and their
  long-term vectors plus the short-term vector (refimpl.retrieval.cascade).

Progress: a search over many samples runs `EvalConfig.chunk` samples at a time under a progress bar
(refimpl.progress: drawn on a terminal only, and only once the search has taken `PROGRESS_DELAY`
seconds); the cascade draws its own.

HR@N per cut-off of `EvalConfig.cutoffs`. Seen items (`EvalConfig.seen`, default
`refimpl.data.protocols.DEFAULT_SEEN_POLICY` = "kept") stay in the ranked lists; with "excluded"
every search asks for N plus the most items any sample has seen, and the first N unseen ones
count (`drop_seen`), for the cascade as for the whole-pool search. A report says which was used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from refimpl._check import Array, BoolArray, IntArray, Shapes, require_choice, require_positive_int
from refimpl.data.protocols import DEFAULT_SEEN_POLICY, SEEN_POLICIES, SeenItems, drop_seen
from refimpl.metrics import hit_rate_at_n
from refimpl.nn.max_interest_score import merge_interest_candidates
from refimpl.progress import Bar, task
from refimpl.retrieval import CascadeConfig, Catalogue, ExactIndex, HnswConfig, HnswIndex, cascade_retrieve
from refimpl.retrieval.index import SearchIndex

__all__ = [
    "BACKENDS",
    "EvalConfig",
    "Routes",
    "Serving",
    "build_index",
    "hit_rate",
    "merged_search",
    "search_hit_rates",
]

BACKENDS = ("exact", "hnsw")
PROGRESS_DELAY = 2.0  # seconds before an evaluation's bar appears: quick evaluations stay silent


@dataclass(frozen=True)
class EvalConfig:
    """How trained models are evaluated: the HR@N cut-offs, the retrieval back end, whether seen
    items stay in the lists, and how many samples are encoded at once. Checked at construction."""

    cutoffs: tuple[int, ...] = (50, 100, 200)
    backend: str = "exact"  # or "hnsw"
    hnsw: HnswConfig = field(default_factory=HnswConfig)
    chunk: int = 256  # samples encoded (and searched) at once
    seen: str = DEFAULT_SEEN_POLICY  # "kept" or "excluded"

    def __post_init__(self) -> None:
        if not isinstance(self.cutoffs, tuple) or not self.cutoffs:
            raise ValueError(f"cfg.cutoffs: expected a non-empty tuple of cut-offs, got {self.cutoffs!r}")
        for n in self.cutoffs:
            require_positive_int("cfg.cutoffs", n)
        require_choice("cfg.backend", self.backend, BACKENDS)
        require_positive_int("cfg.chunk", self.chunk)
        require_choice("cfg.seen", self.seen, SEEN_POLICIES)


def build_index(vectors: Array, item_category: IntArray, ev: EvalConfig) -> SearchIndex:
    """The search index of ev.backend over the catalogue vectors (I, D) and their categories (I,)."""
    if not isinstance(ev, EvalConfig):
        raise TypeError(f"ev: expected an EvalConfig, got {type(ev).__name__}")
    if not isinstance(item_category, np.ndarray) or item_category.ndim != 1 or item_category.size == 0:
        raise ValueError(f"item_category: expected a non-empty (I,) array, got "
                         f"{getattr(item_category, 'shape', type(item_category).__name__)}")
    if not np.issubdtype(item_category.dtype, np.integer) or item_category.min() < 0:
        raise TypeError(f"item_category: expected non-negative integer ids, got {item_category.dtype}")
    Shapes(I=item_category.shape[0]).check_float("vectors", vectors, ("I", "D"))
    catalogue = Catalogue.build(vectors, item_category, num_categories=int(item_category.max()) + 1)
    if ev.backend == "hnsw":
        return HnswIndex(catalogue, ev.hnsw)
    return ExactIndex(catalogue)


def _targets(targets: IntArray, rows: int) -> IntArray:
    if not isinstance(targets, np.ndarray) or not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"targets: expected an integer numpy array, got {type(targets).__name__}")
    if targets.shape != (rows,):
        raise ValueError(f"targets: expected shape ({rows},), got {targets.shape}")
    return targets


def hit_rate(ids: IntArray, valid: BoolArray, targets: IntArray, cutoff: int) -> float:
    """HR@cutoff of the retrieved ids (S, n) at their valid positions against one target each (S,)."""
    if not isinstance(ids, np.ndarray) or ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids: expected an (S, n) integer array, got {getattr(ids, 'shape', ids)}")
    if not isinstance(valid, np.ndarray) or valid.dtype != np.bool_ or valid.shape != ids.shape:
        raise ValueError(f"valid: expected a bool array of shape {ids.shape}, got "
                         f"{getattr(valid, 'shape', type(valid).__name__)}")
    _targets(targets, ids.shape[0])
    require_positive_int("cutoff", cutoff)
    retrieved = [row[ok] for row, ok in zip(ids, valid, strict=True)]
    return hit_rate_at_n(retrieved, [[int(t)] for t in targets], cutoff)


def merged_search(index: SearchIndex, queries: Array, n: int) -> IntArray:
    """UMI eq. 1 served: the top-n of the union of each interest's top-n (queries (S, K, D)), by
    score, de-duplicated, ties to the lower item id, rows padded with -1 (spec/max_interest_score.md)."""
    _check_queries("queries", queries)
    n = require_positive_int("n", n)
    s, k, d = queries.shape
    ids, scores = index.search(queries.reshape(s * k, d), n)
    return merge_interest_candidates(ids.reshape(s, k, -1), scores.reshape(s, k, -1), n)


def _check_queries(name: str, queries: Array) -> None:
    """(S, K, D) finite float queries with K, D >= 1."""
    Shapes().check_float(name, queries, ("S", "K", "D"))
    if queries.shape[1] == 0 or queries.shape[2] == 0:
        raise ValueError(f"{name}: expected K >= 1 queries of width D >= 1 per sample, got shape {queries.shape}")


def _extra(seen: SeenItems | None, ev: EvalConfig, rows: int) -> int:
    """How many more items each search asks for so that N unseen ones remain."""
    if ev.seen == "kept":
        return 0
    if not isinstance(seen, SeenItems):
        raise ValueError("seen: required (the samples' SeenItems) when cfg.seen is 'excluded'")
    if seen.offsets.shape[0] != rows + 1:
        raise ValueError(f"seen: expected the seen items of {rows} samples, got {seen.offsets.shape[0] - 1}")
    return int(np.diff(seen.offsets).max(initial=0))


def _cut(ids: IntArray, valid: BoolArray, seen: SeenItems | None, n: int) -> tuple[IntArray, BoolArray]:
    """The ranked lists as counted: the first n (unseen, when `seen` is given) valid ids."""
    if seen is None:
        return ids[:, :n], valid[:, :n]
    kept = drop_seen(np.where(valid, ids, -1), seen, n)
    return kept, kept >= 0


def search_hit_rates(
    index: SearchIndex, vectors: Array, targets: IntArray, ev: EvalConfig, seen: SeenItems | None = None
) -> dict[int, float]:
    """HR@N per cut-off of `merged_search` with the query vectors (S, K, D) against one target per
    sample (S,); `seen` (the samples' SeenItems) is required when ev.seen is "excluded"."""
    _check_queries("vectors", vectors)
    rows = vectors.shape[0]
    _targets(targets, rows)
    extra = _extra(seen, ev, rows)
    result = {}
    with task("evaluation (search)", total=len(ev.cutoffs) * rows, unit="sample", delay=PROGRESS_DELAY) as bar:
        for n in ev.cutoffs:
            ids = _merged_search_in_chunks(index, vectors, n + extra, ev.chunk, bar)
            ids, valid = _cut(ids, ids >= 0, seen if ev.seen == "excluded" else None, n)
            result[n] = hit_rate(ids, valid, targets, n)
    return result


def _merged_search_in_chunks(index: SearchIndex, vectors: Array, n: int, chunk: int, bar: Bar) -> IntArray:
    """`merged_search` of `chunk` samples at a time (samples do not interact), moving the bar on."""
    parts = []
    for start in range(0, max(1, vectors.shape[0]), chunk):  # an empty batch is searched once too
        parts.append(merged_search(index, vectors[start : start + chunk], n))
        bar.advance(parts[-1].shape[0])
    return np.concatenate(parts)


@dataclass(frozen=True)
class Routes:
    """The cascade's routes for S samples: categories (S, K) best first, weights (S, K) >= 0 (what a
    "weighted" split shares N by: PGIN's probabilities, or category counts), mask (S, K) (False:
    no route)."""

    categories: IntArray
    weights: Array
    mask: BoolArray

    def __post_init__(self) -> None:
        if not isinstance(self.categories, np.ndarray) or not np.issubdtype(self.categories.dtype, np.integer):
            raise TypeError("categories: expected an integer numpy array")
        if self.categories.ndim != 2:
            raise ValueError(f"categories: expected shape (S, K), got {self.categories.shape}")
        if self.categories.size and self.categories.min() < 0:
            raise ValueError(f"categories: expected category ids >= 0, got {self.categories.min()}")
        if not isinstance(self.weights, np.ndarray) or self.weights.dtype not in (np.float32, np.float64):
            raise TypeError("weights: expected a float32 or float64 numpy array")
        if self.weights.shape != self.categories.shape:
            raise ValueError(f"weights: expected shape {self.categories.shape}, got {self.weights.shape}")
        if not np.all(np.isfinite(self.weights)) or np.any(self.weights < 0):
            raise ValueError("weights: expected finite weights >= 0")
        if not isinstance(self.mask, np.ndarray) or self.mask.dtype != np.bool_:
            raise TypeError("mask: expected a bool numpy array")
        if self.mask.shape != self.categories.shape:
            raise ValueError(f"mask: expected shape {self.categories.shape}, got {self.mask.shape}")

    @classmethod
    def equal(cls, categories: IntArray) -> Routes:
        """Routes to the given categories (S, K), equally weighted, none masked."""
        if not isinstance(categories, np.ndarray):
            raise TypeError(f"categories: expected a numpy array, got {type(categories).__name__}")
        return cls(categories, np.ones(categories.shape), np.ones(categories.shape, dtype=bool))

    def top(self, k: int) -> Routes:
        """The first k routes of every sample."""
        k = require_positive_int("k", k)
        return Routes(self.categories[:, :k], self.weights[:, :k], self.mask[:, :k])


@dataclass(frozen=True)
class Serving:
    """What the cascade reads for S samples: the index, the routes and their vectors (computed
    once; a smaller K is a prefix of the routes)."""

    index: SearchIndex
    routes: Routes
    long_vectors: Array  # (S, K, D)
    short_vectors: Array  # (S, D)
    present: BoolArray  # (S, K) the sample has history in the route's category

    def hit_rates(self, targets: IntArray, ev: EvalConfig, k: int | None = None, split: str = "even",
                  seen: SeenItems | None = None) -> dict[int, float]:
        """HR@N per cut-off of the cascade over the first k routes with the given split, against one
        target per sample (S,); `seen` is required when ev.seen is "excluded"."""
        rows = self.routes.categories.shape[0]
        _targets(targets, rows)
        k = self.routes.categories.shape[1] if k is None else require_positive_int("k", k)
        routes = self.routes.top(k)
        extra = _extra(seen, ev, rows)
        result = {}
        for n in ev.cutoffs:
            out = cascade_retrieve(
                self.index, routes.categories, self.long_vectors[:, :k], self.short_vectors,
                CascadeConfig(n=n + extra, split=split), long_mask=routes.mask & self.present[:, :k],
                route_weights=routes.weights,
            )
            ids, valid = _cut(out.ids, out.valid, seen if ev.seen == "excluded" else None, n)
            result[n] = hit_rate(ids, valid, targets, n)
        return result
