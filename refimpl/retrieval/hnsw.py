"""Approximate search on hnswlib: one index per category plus one global index
(spec/retrieval.md#back-ends).

Spaces. `space="l2_augmented"` (the default) indexes the standard MIPS-to-nearest-neighbour
reduction (Bachrach et al. 2014): per pool, with R the largest item norm, an item e becomes
[e, sqrt(R^2 - |e|^2)] and a query q becomes [q, 0], so |q' - e'|^2 = |q|^2 + R^2 - 2 <q, e> and
the L2 neighbours are exactly the inner-product ones, on a metric graph. `space="ip"` indexes the
item vectors in hnswlib's inner-product space. Which to pick (measured in spec/retrieval.md#benchmark):
l2_augmented on clustered vectors and on vectors like a trained ULIM's; ip when the item
directions are spread over every dimension and the norms vary (there l2_augmented's extra
coordinate dominates every distance and the graph walk gets lost).
Scores. hnswlib computes in float32; the back end only takes the ids from it and recomputes every
score exactly, <q, e> in the catalogue's dtype, and orders each row by score descending then lower
item id (as the exact back end does).
Three hnswlib behaviours are hidden here:
- `knn_query` raises when asked for more neighbours than the index holds: k is clipped to the
  pool size, so a small category returns what it has and an empty one returns (Q, 0);
- it finds fewer than k neighbours (and then raises) when ef < k: every query runs with
  ef = max(config.ef, k);
- in inner-product space the graph does not reach every node (an item of small norm is nobody's
  nearest neighbour, so neighbour pruning leaves it without in-edges): asking for most of a pool
  raises even with ef = pool size, and recall stalls below 1 however large ef is. A search whose
  k is at least `exact_fraction` (default 0.5) of its pool is answered by exact NumPy search (no
  slower over so few items), and a query row for which hnswlib still comes short is answered
  exactly too. `stats` counts both.
Small pools are scanned. A graph walk with beam ef visits about ef * 2M nodes, one by one; a BLAS
scan of the pool is far cheaper per item and has recall 1. A search over a pool of at most
`exact_scan * ef * M` items (that index's ef and M; default 16 * 400 * 16 = 102,400 for a category,
16 * 800 * 32 = 409,600 for the global index) is answered exactly: measured at 10^6 items, a walk
at ef = 400 over a 40,000-67,000-item category costs about what a batched scan of 10^5 items does,
and finds 0.96-0.97 of the exact items. `exact_scan=0` switches it off.
The global index has its own degree, build beam and query beam (`global_M`,
`global_ef_construction`, `global_ef`; default 32, 200, 800 against 16, 100, 400 for the
categories): the short-term route's whole-catalogue search is where a graph loses recall (on
clustered vectors its best items lie in several clusters, which a sparse graph connects poorly).
Determinism: `seed` fixes hnswlib's level draws, and a build with `build_threads=1` inserts in id
order, so the graph (and every result) is reproducible. With more build threads the insertion
order, hence the graph, depends on scheduling. Query threads do not change results.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from typing import Any

import hnswlib
import numpy as np
from numpy.typing import NDArray

from refimpl._check import Array, Shapes, require_choice, require_positive_int, require_real
from refimpl.progress import Bar, task
from refimpl.retrieval.catalogue import Catalogue, Int64Array
from refimpl.retrieval.exact import ExactIndex, score_order
from refimpl.retrieval.index import check_category, check_search_args

__all__ = [
    "HnswConfig",
    "HnswIndex",
]

SPACES = ("ip", "l2_augmented")
_BUILD_CHUNK = 20_000  # items per add_items call (the progress bar's step)


@dataclass(frozen=True)
class HnswConfig:
    """hnswlib parameters: the space (see the module docstring), graph degree M, build beam
    ef_construction, query beam ef (raised to k per query), the level seed, the threads used to
    build and to query, the share of a pool from which k is answered by exact search, and the
    pool size (in units of ef * M) up to which a search is an exact scan.

    global_M, global_ef_construction and global_ef are the same settings for the global index
    only (the short-term route's whole-catalogue search); None takes the category indexes' value.
    hnswlib's beam belongs to an index, and the whole-catalogue search is where a graph loses
    recall (spec/retrieval.md#which-space-which-ef), so it gets its own graph density and beam."""

    space: str = "l2_augmented"
    M: int = 16
    ef_construction: int = 100
    ef: int = 400
    seed: int = 0
    build_threads: int = 1
    query_threads: int = 1
    exact_fraction: float = 0.5
    exact_scan: float = 16.0
    global_M: int | None = 32
    global_ef_construction: int | None = 200
    global_ef: int | None = 800

    def __post_init__(self) -> None:
        require_choice("HnswConfig.space", self.space, SPACES)
        for name in ("M", "ef_construction", "ef", "build_threads", "query_threads"):
            require_positive_int(f"HnswConfig.{name}", getattr(self, name))
        for name in ("global_M", "global_ef_construction", "global_ef"):
            if getattr(self, name) is not None:
                require_positive_int(f"HnswConfig.{name}", getattr(self, name))
        if not 0.0 < self.exact_fraction <= 1.0:
            raise ValueError(f"HnswConfig.exact_fraction: expected (0, 1], got {self.exact_fraction!r}")
        require_real("HnswConfig.exact_scan", self.exact_scan, low=0.0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"HnswConfig.seed: expected an int >= 0, got {self.seed!r}")

    def _graph(self, category: int | None) -> tuple[int, int, int]:
        """(M, ef_construction, ef) of a category's index, or of the global one (category None)."""
        if category is not None:
            return self.M, self.ef_construction, self.ef
        return (
            self.M if self.global_M is None else self.global_M,
            self.ef_construction if self.global_ef_construction is None else self.global_ef_construction,
            self.ef if self.global_ef is None else self.global_ef,
        )


class HnswIndex:
    """hnswlib indexes of a catalogue: `category_indexes[c]` (None for an empty category) and
    `global_index` (None for an empty catalogue), labelled by item id.

    Not thread-safe: `search` sets the index's ef before querying (views made by
    `with_query_settings` share the graphs, hence this state, and `stats`).
    """

    name = "hnsw"

    def __init__(self, catalogue: Catalogue, config: HnswConfig | None = None) -> None:
        self.catalogue = catalogue
        self.config = config if config is not None else HnswConfig()
        # Every item is inserted twice: into its category's graph and into the global one.
        with task("hnswlib index", total=2 * catalogue.size, unit="item") as bar:
            start = time.process_time()
            self.category_indexes: list[Any] = [
                self._build(*catalogue.category_block(c), bar, c) for c in range(catalogue.num_categories)
            ]
            middle = time.process_time()
            self.global_index: Any = self._build(catalogue.item_ids, catalogue.vectors, bar, None)
        self.build_cpu_seconds = {"category": middle - start, "global": time.process_time() - middle}
        self._exact = ExactIndex(catalogue)
        self.stats: dict[str, int] = {"exact_pool_searches": 0, "exact_row_fallbacks": 0}

    def with_query_settings(
        self, ef: int | None = None, query_threads: int | None = None, exact_scan: float | None = None,
        global_ef: int | None = None,
    ) -> HnswIndex:
        """A view of the same built graphs with another query beam (of the category indexes and/or
        of the global one), query thread count and/or exact-scan threshold (the settings that do not
        change a graph). A None keeps the current setting."""
        view = copy.copy(self)
        view.config = replace(
            self.config,
            ef=self.config.ef if ef is None else ef,
            query_threads=self.config.query_threads if query_threads is None else query_threads,
            exact_scan=self.config.exact_scan if exact_scan is None else exact_scan,
            global_ef=self.config.global_ef if global_ef is None else global_ef,
        )
        return view

    def with_global_graph(self, global_M: int | None, global_ef_construction: int | None) -> HnswIndex:
        """A view of the same category graphs with the global graph built again with another
        degree and build beam (None: the category indexes' value), the cheap way to tune the
        short-term route's graph (the global graph is half the build)."""
        view = copy.copy(self)
        view.config = replace(self.config, global_M=global_M, global_ef_construction=global_ef_construction)
        with task("hnswlib global index", total=self.catalogue.size, unit="item") as bar:
            start = time.process_time()
            view.global_index = view._build(self.catalogue.item_ids, self.catalogue.vectors, bar, None)
        view.build_cpu_seconds = {**self.build_cpu_seconds, "global": time.process_time() - start}
        return view

    def _build(self, ids: Int64Array, vectors: Array, bar: Bar, category: int | None) -> Any:
        if ids.size == 0:
            return None
        degree, ef_construction, _ = self.config._graph(category)
        data = np.asarray(vectors, dtype=np.float32)
        space, dim = "ip", self.catalogue.dim
        if self.config.space == "l2_augmented":
            squared = np.einsum("id,id->i", data, data)
            data = np.hstack([data, np.sqrt(np.maximum(squared.max() - squared, 0.0))[:, None]])
            space, dim = "l2", dim + 1
        index = hnswlib.Index(space=space, dim=dim)
        index.init_index(
            max_elements=int(ids.size),
            M=degree,
            ef_construction=ef_construction,
            random_seed=self.config.seed,
        )
        labels = ids.astype(np.uint64)
        data = np.ascontiguousarray(data)
        # In chunks, only to move the progress bar: chunks are inserted in order, so with one
        # build thread the graph is the one a single call builds.
        for start in range(0, ids.size, _BUILD_CHUNK):
            chunk = slice(start, start + _BUILD_CHUNK)
            index.add_items(data[chunk], labels[chunk], num_threads=self.config.build_threads)
            bar.advance(labels[chunk].size)
        return index

    def search(self, queries: Array, k: int, category: int | None = None) -> tuple[Int64Array, Array]:
        """Approximate top-k, same contract as `SearchIndex.search`."""
        check_search_args(self.catalogue, queries, k, category)
        index = self.global_index if category is None else self.category_indexes[category]
        pool = 0 if index is None else int(index.get_current_count())
        width = min(k, pool)
        if width == 0:
            dtype = self.catalogue.vectors.dtype
            return np.empty((queries.shape[0], 0), np.int64), np.empty((queries.shape[0], 0), dtype)
        degree, _, beam = self.config._graph(category)
        ef = max(beam, width)
        if width >= self.config.exact_fraction * pool or pool <= self.config.exact_scan * ef * degree:
            self.stats["exact_pool_searches"] += 1
            return self._exact.search(queries, width, category)
        index.set_ef(ef)
        try:
            ids = self._query(index, queries, width)
        except RuntimeError:
            ids = self._row_by_row(index, queries, width, category)
        return self._rescore(queries, ids)

    def free_depth(self, category: int | None = None) -> int:
        """The query beam of the pool's index when its searches walk the graph (a walk for any
        k <= ef costs the same), 0 when they scan it (SearchIndex)."""
        check_category(self.catalogue, category)
        index = self.global_index if category is None else self.category_indexes[category]
        pool = 0 if index is None else int(index.get_current_count())
        degree, _, beam = self.config._graph(category)
        return 0 if pool <= self.config.exact_scan * beam * degree else beam

    def index_queries(self, queries: Array) -> NDArray[np.float32]:
        """The queries (Q, D) as the graphs take them: contiguous float32, with the augmented L2
        space's zero coordinate appended (Q, D + 1)."""
        Shapes(D=self.catalogue.dim).check_float("queries", queries, ("Q", "D"))
        data = np.asarray(queries, dtype=np.float32)
        if self.config.space == "l2_augmented":
            data = np.hstack([data, np.zeros((data.shape[0], 1), np.float32)])
        return np.ascontiguousarray(data)

    def _query(self, index: Any, queries: Array, width: int) -> Int64Array:
        labels, _ = index.knn_query(self.index_queries(queries), k=width, num_threads=self.config.query_threads)
        ids: Int64Array = labels.astype(np.int64)
        return ids

    def _row_by_row(self, index: Any, queries: Array, width: int, category: int | None) -> Int64Array:
        """hnswlib found fewer than `width` neighbours for some query (the graph does not reach
        every node): those rows are answered exactly, the others by hnswlib."""
        ids = np.empty((queries.shape[0], width), np.int64)
        for row in range(queries.shape[0]):
            try:
                ids[row] = self._query(index, queries[row : row + 1], width)[0]
            except RuntimeError:
                self.stats["exact_row_fallbacks"] += 1
                ids[row] = self._exact.search(queries[row : row + 1], width, category)[0][0]
        return ids

    def _rescore(self, queries: Array, ids: Int64Array) -> tuple[Int64Array, Array]:
        """Exact scores <q, e> in the catalogue's dtype; rows by score descending, then id."""
        vectors = self.catalogue.vectors[self.catalogue.positions(ids)]
        scores: Array = np.einsum("qd,qkd->qk", queries, vectors)
        order = score_order(scores, ids)
        return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)
