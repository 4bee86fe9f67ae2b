"""Cascaded category-to-item retrieval (spec/retrieval.md): the category invariant, the short-term
route's reach, hnswlib against exact, quotas, edge cases, determinism, errors; each invariant with a
negative control showing that a broken variant is caught."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import hnswlib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refimpl.retrieval import (
    PAD_ROUTE,
    SHORT_ROUTE,
    CascadeConfig,
    CascadeResult,
    Catalogue,
    ExactIndex,
    HnswConfig,
    HnswIndex,
    cascade_recall,
    cascade_retrieve,
    split_evenly,
    split_weighted,
)
from refimpl.retrieval.cascade import split_evenly_rows
from refimpl.retrieval.exact import top_k_inner_product
from refimpl.retrieval.index import SearchIndex

# ---------------------------------------------------------------------------------------------
# helpers


@dataclass(frozen=True)
class Query:
    categories: Any  # (B, K) int64
    long_vectors: Any  # (B, K, D)
    short_vectors: Any  # (B, D)
    mask: Any  # (B, K) bool


def _catalogue(rng: np.random.Generator, items: int, categories: int, dim: int) -> Catalogue:
    item_categories = rng.integers(0, categories, size=items)
    return Catalogue.build(rng.standard_normal((items, dim)), item_categories, num_categories=categories)


def _query(rng: np.random.Generator, catalogue: Catalogue, batch: int, k: int) -> Query:
    return Query(
        categories=rng.integers(0, catalogue.num_categories, size=(batch, k)),
        long_vectors=rng.standard_normal((batch, k, catalogue.dim)),
        short_vectors=rng.standard_normal((batch, catalogue.dim)),
        mask=rng.random((batch, k)) < 0.8,
    )


def _run(index: SearchIndex, query: Query, cfg: CascadeConfig) -> CascadeResult:
    return cascade_retrieve(index, query.categories, query.long_vectors, query.short_vectors, cfg, long_mask=query.mask)


def cascade_problems(result: CascadeResult, catalogue: Catalogue, query: Query, n: int) -> list[str]:
    """Every violation of the cascade's contract (spec/retrieval.md#guarantees)."""
    problems: list[str] = []
    for row in range(result.ids.shape[0]):
        ids = result.ids[row][result.valid[row]]
        routes = result.routes[row][result.valid[row]]
        if ids.size != min(n, catalogue.size):
            problems.append(f"row {row}: {ids.size} items, expected {min(n, catalogue.size)}")
        if np.unique(ids).size != ids.size:
            problems.append(f"row {row}: duplicate items")
        if np.any(result.routes[row][~result.valid[row]] != PAD_ROUTE):
            problems.append(f"row {row}: padding slot with a route")
        item_categories = catalogue.categories_of(ids)
        for item, route, category in zip(ids, routes, item_categories, strict=True):
            if route == SHORT_ROUTE:
                continue
            if not query.mask[row, route]:
                problems.append(f"row {row}: item {item} from masked route {route}")
            if category != query.categories[row, route]:
                problems.append(
                    f"row {row}: route {route} (category {query.categories[row, route]}) "
                    f"returned item {item} of category {category}"
                )
        counts = [int(np.sum(routes == r)) for r in range(query.categories.shape[1])]
        counts.append(int(np.sum(routes == SHORT_ROUTE)))
        if counts != list(result.quotas[row]):
            problems.append(f"row {row}: quotas {list(result.quotas[row])} but counts {counts}")
    return problems


class GlobalForLongTerm:
    """A broken back end: every search, long-term ones included, runs over the whole catalogue."""

    name = "broken-global"

    def __init__(self, inner: SearchIndex) -> None:
        self.inner = inner
        self.catalogue = inner.catalogue

    def search(self, queries: Any, k: int, category: int | None = None) -> Any:
        return self.inner.search(queries, k, None)

    def free_depth(self, category: int | None = None) -> int:
        return self.inner.free_depth(category)


class ShortTermInCategoryZero:
    """A broken back end: the whole-pool search only sees category 0."""

    name = "broken-short"

    def __init__(self, inner: SearchIndex) -> None:
        self.inner = inner
        self.catalogue = inner.catalogue

    def search(self, queries: Any, k: int, category: int | None = None) -> Any:
        return self.inner.search(queries, k, 0 if category is None else category)

    def free_depth(self, category: int | None = None) -> int:
        return self.inner.free_depth(category)


@st.composite
def catalogue_and_query(draw: st.DrawFn) -> tuple[Catalogue, Query, int]:
    """Small catalogues (empty categories allowed), K possibly above C, duplicates, masks; small
    integer-valued vectors, so that ties are frequent."""
    categories = draw(st.integers(1, 5))
    items = draw(st.integers(1, 30))
    dim = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    item_categories = rng.integers(0, categories, size=items)
    vectors = rng.integers(-2, 3, size=(items, dim)).astype(np.float64)
    catalogue = Catalogue.build(vectors, item_categories, num_categories=categories)
    batch = draw(st.integers(1, 3))
    k = draw(st.integers(1, categories + 2))
    query = Query(
        categories=rng.integers(0, categories, size=(batch, k)),
        long_vectors=rng.integers(-2, 3, size=(batch, k, dim)).astype(np.float64),
        short_vectors=rng.integers(-2, 3, size=(batch, dim)).astype(np.float64),
        mask=rng.random((batch, k)) < 0.75,
    )
    n = draw(st.integers(1, items + 5))
    return catalogue, query, n


# ---------------------------------------------------------------------------------------------
# the category invariant, on both back ends, with its negative control


@settings(max_examples=25)
@given(case=catalogue_and_query(), share=st.sampled_from([None, 0.0, 0.3, 1.0]))
def test_long_term_vectors_retrieve_only_their_own_category(
    case: tuple[Catalogue, Query, int], share: float | None
) -> None:
    catalogue, query, n = case
    cfg = CascadeConfig(n=n, short_share=share)
    indexes = (
        ExactIndex(catalogue),
        # exact_fraction=1: hnswlib answers every search short of a whole pool, even tiny ones
        HnswIndex(catalogue, HnswConfig(M=4, ef=16, exact_fraction=1.0, exact_scan=0)),
        HnswIndex(catalogue, HnswConfig(space="l2_augmented", M=4, ef=16, exact_fraction=1.0, exact_scan=0)),
    )
    for index in indexes:
        assert cascade_problems(_run(index, query, cfg), catalogue, query, n) == []


def test_negative_control_global_search_for_long_term_vectors_is_caught() -> None:
    rng = np.random.default_rng(1)
    catalogue = _catalogue(rng, 300, 6, 4)
    query = _query(rng, catalogue, 4, 3)
    broken = _run(GlobalForLongTerm(ExactIndex(catalogue)), query, CascadeConfig(n=40))
    problems = cascade_problems(broken, catalogue, query, 40)
    assert any("returned item" in p for p in problems)


# ---------------------------------------------------------------------------------------------
# the short-term route reaches every item


def _short_term_reach(index: SearchIndex) -> set[int]:
    """The items the short-term vector retrieves at N=1 when aimed at each unit item vector,
    while the long-term routes predict category 0."""
    catalogue = index.catalogue
    size = catalogue.size
    result = cascade_retrieve(
        index,
        np.zeros((size, 1), dtype=np.int64),
        np.zeros((size, 1, catalogue.dim)),
        catalogue.vectors.copy(),
        CascadeConfig(n=2, short_share=0.5),
    )
    return {int(i) for i in result.ids[result.routes == SHORT_ROUTE]}


@settings(max_examples=10)
@given(seed=st.integers(0, 2**32 - 1), categories=st.integers(2, 6))
def test_short_term_vector_can_retrieve_any_item(seed: int, categories: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((40, 5))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    catalogue = Catalogue.build(vectors, rng.integers(0, categories, size=40))
    outside_zero = set(catalogue.item_ids[catalogue.item_categories != 0].tolist())
    reach = _short_term_reach(ExactIndex(catalogue))
    # an item of category 0 may be taken by the long-term route first; every other item is reached
    assert outside_zero <= reach


def test_negative_control_short_term_restricted_to_one_category_is_caught() -> None:
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((40, 5))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    catalogue = Catalogue.build(vectors, rng.integers(0, 4, size=40))
    outside_zero = set(catalogue.item_ids[catalogue.item_categories != 0].tolist())
    assert not outside_zero <= _short_term_reach(ShortTermInCategoryZero(ExactIndex(catalogue)))


# ---------------------------------------------------------------------------------------------
# hnswlib against exact


@pytest.mark.parametrize("space", ["ip", "l2_augmented"])
def test_hnsw_cascade_agrees_with_exact_at_recall_099(space: str) -> None:
    rng = np.random.default_rng(3)
    catalogue = _catalogue(rng, 2000, 20, 16)
    query = _query(rng, catalogue, 40, 4)
    cfg = CascadeConfig(n=100)
    exact = _run(ExactIndex(catalogue), query, cfg)
    hnsw_config = HnswConfig(space=space, ef_construction=100, ef=400, exact_scan=0)
    approximate = _run(HnswIndex(catalogue, hnsw_config), query, cfg)
    assert cascade_recall(approximate, exact) >= 0.99
    assert np.array_equal(approximate.quotas, exact.quotas)


def test_negative_control_recall_detects_a_poor_index() -> None:
    rng = np.random.default_rng(3)
    catalogue = _catalogue(rng, 2000, 20, 16)
    query = _query(rng, catalogue, 40, 4)
    cfg = CascadeConfig(n=100)
    exact = _run(ExactIndex(catalogue), query, cfg)
    shifted = Query(query.categories, query.long_vectors, -query.short_vectors, query.mask)
    assert cascade_recall(_run(ExactIndex(catalogue), shifted, cfg), exact) < 0.99


@pytest.mark.parametrize("space", ["ip", "l2_augmented"])
def test_hnsw_scores_are_exact_inner_products_in_order(space: str) -> None:
    rng = np.random.default_rng(4)
    catalogue = _catalogue(rng, 500, 3, 8)
    queries = rng.standard_normal((5, 8))
    ids, scores = HnswIndex(catalogue, HnswConfig(space=space, exact_scan=0)).search(queries, 10, category=1)
    vectors = catalogue.vectors[catalogue.positions(ids)]
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, vectors), rtol=1e-12)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_rows_hnswlib_cannot_answer_fall_back_to_exact() -> None:
    """In 'ip' space some nodes are unreachable: asking for all but one item of a pool makes
    hnswlib raise; those rows are answered exactly (exact_fraction=1 keeps hnswlib in charge)."""
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((400, 8)) * rng.lognormal(0.0, 1.0, (400, 1))
    catalogue = Catalogue.build(vectors, np.zeros(400, dtype=np.int64))
    index = HnswIndex(catalogue, HnswConfig(space="ip", exact_fraction=1.0, ef=10, exact_scan=0, global_M=None,
                                            global_ef_construction=None, global_ef=None))
    queries = rng.standard_normal((20, 8))
    ids, _ = index.search(queries, 399)
    assert index.stats["exact_row_fallbacks"] > 0
    assert all(np.unique(row).size == 399 for row in ids)


def test_small_pools_are_scanned_exactly_large_ones_walked() -> None:
    """A pool of at most exact_scan * ef * M items is answered by exact search (recall 1);
    negative control: with exact_scan=0 the same search walks the graph."""
    rng = np.random.default_rng(17)
    catalogue = _catalogue(rng, 600, 1, 8)
    queries = rng.standard_normal((4, 8))
    truth, _ = ExactIndex(catalogue).search(queries, 10)
    same = {"global_M": None, "global_ef": None}  # the global index as the categories'
    scanned = HnswIndex(catalogue, HnswConfig(M=4, ef=10, exact_scan=15.0, **same))  # 15 * 10 * 4 = 600 items
    assert np.array_equal(scanned.search(queries, 10)[0], truth)
    assert scanned.stats["exact_pool_searches"] == 1
    walked = HnswIndex(catalogue, HnswConfig(M=4, ef=10, exact_scan=14.0, **same))  # 560 < 600
    walked.search(queries, 10)
    assert walked.stats["exact_pool_searches"] == 0


class GlobalSearchLog:
    """The exact back end, claiming a free depth of `depth`, recording every whole-pool search's k."""

    name = "exact-logged"

    def __init__(self, inner: ExactIndex, depth: int) -> None:
        self.inner, self.catalogue, self.depth = inner, inner.catalogue, depth
        self.global_ks: list[int] = []

    def search(self, queries: Any, k: int, category: int | None = None) -> Any:
        if category is None:
            self.global_ks.append(k)
        return self.inner.search(queries, k, category)

    def free_depth(self, category: int | None = None) -> int:
        return self.depth


def test_short_term_route_asks_for_the_free_depth_first() -> None:
    """With a free depth covering the taken items the short-term route searches once, with the
    same result; negative control: without it (0), the taken items its first answer meets force a
    second, deeper search."""
    rng = np.random.default_rng(26)
    catalogue = _catalogue(rng, 800, 4, 6)
    query = _query(rng, catalogue, 6, 3)
    # Short-term vectors equal to a long-term one: the long-term route's items top its ranking.
    query = replace(query, short_vectors=query.long_vectors[:, 0].copy(), mask=np.ones((6, 3), bool))
    cfg = CascadeConfig(n=60)
    shallow, deep = GlobalSearchLog(ExactIndex(catalogue), 0), GlobalSearchLog(ExactIndex(catalogue), 300)
    first, second = _run(shallow, query, cfg), _run(deep, query, cfg)
    assert np.array_equal(first.ids, second.ids)
    assert deep.global_ks == [300]
    assert len(shallow.global_ks) >= 2 and shallow.global_ks[0] == int(first.quotas[:, -1].max())


def test_hnsw_free_depth_is_the_beam_of_walked_pools_only() -> None:
    rng = np.random.default_rng(27)
    catalogue = _catalogue(rng, 600, 2, 8)
    assert HnswIndex(catalogue, HnswConfig(M=4, ef=10, global_ef=25, exact_scan=0)).free_depth(None) == 25
    assert HnswIndex(catalogue, HnswConfig(M=4, ef=10, exact_scan=0)).free_depth(0) == 10
    assert HnswIndex(catalogue, HnswConfig(M=4, ef=10, exact_scan=15.0)).free_depth(None) == 0  # scanned
    assert ExactIndex(catalogue).free_depth(None) == 0


def test_global_index_has_its_own_degree_build_beam_and_query_beam() -> None:
    """global_M / global_ef_construction build the global graph, global_ef is its query beam; the
    category indexes keep M, ef_construction and ef. Negative control: without the global_*
    settings the global index takes the category indexes' values."""
    rng = np.random.default_rng(23)
    catalogue = _catalogue(rng, 600, 2, 8)
    queries = rng.standard_normal((3, 8))
    split = HnswIndex(catalogue, HnswConfig(M=4, ef_construction=20, ef=30, exact_scan=0, global_M=12,
                                            global_ef_construction=60, global_ef=90))
    split.search(queries, 5)
    split.search(queries, 5, category=0)
    assert (split.global_index.M, split.global_index.ef_construction, split.global_index.ef) == (12, 60, 90)
    category = split.category_indexes[0]
    assert (category.M, category.ef_construction, category.ef) == (4, 20, 30)
    same = HnswIndex(catalogue, HnswConfig(M=4, ef_construction=20, ef=30, exact_scan=0, global_M=None,
                                           global_ef_construction=None, global_ef=None))
    same.search(queries, 5)
    assert (same.global_index.M, same.global_index.ef_construction, same.global_index.ef) == (4, 20, 30)


def test_query_view_changes_the_global_beam_only_when_asked() -> None:
    rng = np.random.default_rng(24)
    catalogue = _catalogue(rng, 600, 2, 8)
    index = HnswIndex(catalogue, HnswConfig(M=4, ef=30, exact_scan=0, global_ef=90))
    queries = rng.standard_normal((2, 8))
    index.with_query_settings(ef=40).search(queries, 5)
    assert index.global_index.ef == 90  # ef alone leaves the global beam
    index.with_query_settings(global_ef=70).search(queries, 5)
    assert index.global_index.ef == 70


def test_with_global_graph_rebuilds_the_global_graph_only() -> None:
    """The view shares the category graphs and answers category searches identically; its global
    graph has the new degree and the original index keeps its own (negative control)."""
    rng = np.random.default_rng(25)
    catalogue = _catalogue(rng, 600, 2, 8)
    queries = rng.standard_normal((4, 8))
    index = HnswIndex(catalogue, HnswConfig(M=4, exact_scan=0, global_M=None))
    dense = index.with_global_graph(global_M=10, global_ef_construction=80)
    assert dense.category_indexes is index.category_indexes
    assert (dense.global_index.M, dense.global_index.ef_construction) == (10, 80)
    assert index.global_index.M == 4
    assert np.array_equal(dense.search(queries, 7, category=1)[0], index.search(queries, 7, category=1)[0])
    assert set(dense.build_cpu_seconds) == {"category", "global"}


@pytest.mark.parametrize("name", ["global_M", "global_ef_construction", "global_ef"])
def test_global_settings_are_validated_by_name(name: str) -> None:
    with pytest.raises(ValueError, match=f"HnswConfig.{name}"):
        HnswConfig(**{name: 0})


# ---------------------------------------------------------------------------------------------
# small categories and hnswlib's own limits


def test_small_category_returns_what_it_has_on_both_back_ends() -> None:
    rng = np.random.default_rng(5)
    catalogue = Catalogue.build(rng.standard_normal((6, 3)), np.array([0, 0, 0, 0, 1, 1]), num_categories=3)
    queries = rng.standard_normal((2, 3))
    for index in (ExactIndex(catalogue), HnswIndex(catalogue)):
        ids, scores = index.search(queries, 5, category=1)
        assert ids.shape == scores.shape == (2, 2)
        assert set(ids[0].tolist()) == {4, 5}
        empty_ids, empty_scores = index.search(queries, 5, category=2)
        assert empty_ids.shape == empty_scores.shape == (2, 0)


def test_raw_hnswlib_raises_where_we_return_what_there_is() -> None:
    """Why the wrapper clips k: hnswlib itself refuses k above the index's size."""
    raw = hnswlib.Index(space="ip", dim=3)
    raw.init_index(max_elements=2, random_seed=0)
    raw.add_items(np.ones((2, 3), dtype=np.float32), np.arange(2))
    with pytest.raises(RuntimeError):
        raw.knn_query(np.ones((1, 3), dtype=np.float32), k=5)


def test_hnsw_returns_k_results_even_when_ef_is_below_k() -> None:
    rng = np.random.default_rng(6)
    catalogue = _catalogue(rng, 400, 2, 8)
    ids, _ = HnswIndex(catalogue, HnswConfig(ef=1, exact_scan=0)).search(rng.standard_normal((3, 8)), 150)
    assert ids.shape == (3, 150)
    assert all(np.unique(row).size == 150 for row in ids)


# ---------------------------------------------------------------------------------------------
# exact search: ties and the definition


def _reference_top_k(queries: Any, vectors: Any, ids: Any, k: int) -> Any:
    scores = queries @ vectors.T
    return np.array([ids[np.lexsort((ids, -row))][:k] for row in scores])


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 25), k=st.integers(1, 30))
def test_exact_top_k_is_score_descending_then_lowest_id(seed: int, n: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.integers(-1, 2, size=(n, 2)).astype(np.float64)  # many ties
    queries = rng.integers(-1, 2, size=(6, 2)).astype(np.float64)
    ids = np.sort(rng.choice(1000, size=n, replace=False)).astype(np.int64)
    got, _ = top_k_inner_product(queries, vectors, ids, k)
    assert np.array_equal(got, _reference_top_k(queries, vectors, ids, k))


def test_negative_control_argpartition_without_tie_repair_is_caught() -> None:
    """argpartition alone keeps an arbitrary member of a tie at the k-th score."""
    vectors = np.array([[1.0]] * 7 + [[2.0]])
    ids = np.arange(8, dtype=np.int64)
    queries = np.array([[1.0]])
    scores = queries @ vectors.T
    naive = np.argpartition(-scores, 2, axis=1)[:, :3]
    naive = np.take_along_axis(naive, np.argsort(-np.take_along_axis(scores, naive, 1), 1), 1)
    expected = _reference_top_k(queries, vectors, ids, 3)
    assert not np.array_equal(ids[naive], expected)
    assert np.array_equal(top_k_inner_product(queries, vectors, ids, 3)[0], expected)


# ---------------------------------------------------------------------------------------------
# quotas and the worked example of the spec


def test_split_evenly_examples() -> None:
    assert split_evenly(7, [50, 2]) == [5, 2]
    assert split_evenly(10, [3, 3, 3]) == [3, 3, 3]
    assert split_evenly(10, [100, 100, 100]) == [4, 3, 3]
    assert split_evenly(10, [0, 100, 1, 100]) == [0, 5, 1, 4]
    assert split_evenly(0, [5]) == [0]
    assert split_evenly(5, []) == []


def split_problems(total: int, capacities: list[int], quotas: list[int]) -> list[str]:
    """Max-min fairness: all placed that can be, no cap exceeded, and a route below its cap has at
    least as much as any other route, less one (the remainder)."""
    problems = []
    if sum(quotas) != min(total, sum(capacities)):
        problems.append(f"placed {sum(quotas)} of {total} (capacity {sum(capacities)})")
    if any(q > c or q < 0 for q, c in zip(quotas, capacities, strict=True)):
        problems.append(f"quotas {quotas} exceed capacities {capacities}")
    for q, c in zip(quotas, capacities, strict=True):
        if q < c and any(other > q + 1 for other in quotas):
            problems.append(f"a route with room got {q} while another got more than {q + 1}")
    return problems


@given(total=st.integers(0, 60), capacities=st.lists(st.integers(0, 30), max_size=6))
def test_split_evenly_is_max_min_fair(total: int, capacities: list[int]) -> None:
    assert split_problems(total, capacities, split_evenly(total, capacities)) == []


def level_problems(total: int, caps: Any, row: Any) -> list[str]:
    """The definition (spec/retrieval.md, step 3): min(cap, L) with L the largest integer such that
    sum(min(cap, L)) <= total (found here by trying every L), plus one unit each to the best-ranked
    routes above L until all that fits is placed."""
    level = max((x for x in range(int(caps.max(initial=0)) + 1) if np.minimum(caps, x).sum() <= total), default=0)
    extra = np.asarray(row) - np.minimum(caps, level)
    problems = []
    if not (set(extra.tolist()) <= {0, 1} and np.all(caps[extra == 1] > level)):
        problems.append(f"quotas {row} are not min(cap, {level}) plus single units above the level")
    if np.any(np.diff(extra[caps > level]) > 0):
        problems.append(f"the remainder of {row} does not go to the best ranks first")
    if int(np.sum(row)) != min(total, int(caps.sum())):
        problems.append(f"placed {int(np.sum(row))} of {total}")
    return problems


@given(totals=st.lists(st.integers(0, 80), min_size=1, max_size=4), routes=st.integers(0, 6), seed=st.integers(0, 99))
def test_split_evenly_rows_is_the_definition(totals: list[int], routes: int, seed: int) -> None:
    """Every row of the batched split (water-filling) is the definition; rows do not interact."""
    capacities = np.random.default_rng(seed).integers(0, 30, size=(len(totals), routes))
    quotas = split_evenly_rows(np.array(totals, dtype=np.int64), capacities)
    for total, caps, row in zip(totals, capacities, quotas, strict=True):
        assert level_problems(total, caps, row) == []


def test_negative_control_split_one_level_low_is_caught() -> None:
    caps = np.array([2, 9, 9])
    assert level_problems(14, caps, [2, 6, 6]) == []
    assert level_problems(14, caps, [2, 5, 5]) != []  # level 5 instead of 6, remainder not placed
    assert level_problems(14, caps, [2, 5, 7]) != []  # the remainder on the worse rank


def test_negative_control_split_without_redistribution_is_caught() -> None:
    capacities = [1, 30, 30]
    naive = [min(10, c) for c in capacities]  # an even split of 30, no second round
    assert split_problems(30, capacities, naive) != []


def _worked_example() -> tuple[Catalogue, Query]:
    """spec/retrieval.md#worked-example: 12 items in 3 categories, D=2, one user."""
    vectors = np.array(
        [[1, 0], [2, 0], [3, 0], [4, 0], [5, 0], [6, 0], [0, 1], [0, 2], [0, 3], [1, 1], [2, 2], [3, 3]],
        dtype=np.float64,
    )
    categories = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    catalogue = Catalogue.build(vectors, categories, item_ids=np.arange(100, 112))
    query = Query(
        categories=np.array([[1, 0, 1, 2]]),
        long_vectors=np.array([[[0.0, 1.0], [1.0, 0.0], [5.0, 5.0], [1.0, 1.0]]]),
        short_vectors=np.array([[1.0, 0.5]]),
        mask=np.array([[True, True, True, False]]),
    )
    return catalogue, query


def test_worked_example_of_the_spec() -> None:
    catalogue, query = _worked_example()
    result = _run(ExactIndex(catalogue), query, CascadeConfig(n=8))
    assert result.quotas.tolist() == [[3, 3, 0, 0, 2]]
    assert result.ids.tolist() == [[105, 104, 111, 103, 102, 108, 107, 106]]
    assert result.routes.tolist() == [[1, 1, SHORT_ROUTE, 1, SHORT_ROUTE, 0, 0, 0]]
    assert result.scores.tolist() == [[6.0, 5.0, 4.5, 4.0, 3.0, 3.0, 2.0, 1.0]]


def test_masked_route_gives_its_quota_to_the_other_routes() -> None:
    rng = np.random.default_rng(7)
    catalogue = _catalogue(rng, 600, 4, 6)
    query = _query(rng, catalogue, 1, 3)
    query = Query(np.array([[0, 1, 2]]), query.long_vectors, query.short_vectors, np.array([[True, False, True]]))
    result = _run(ExactIndex(catalogue), query, CascadeConfig(n=30))
    assert result.quotas.tolist() == [[10, 0, 10, 10]]
    assert not np.any(result.routes == 1)


def test_duplicate_predicted_category_keeps_the_best_rank_only() -> None:
    rng = np.random.default_rng(8)
    catalogue = _catalogue(rng, 600, 4, 6)
    base = _query(rng, catalogue, 1, 3)
    query = Query(np.array([[2, 2, 3]]), base.long_vectors, base.short_vectors, np.ones((1, 3), dtype=bool))
    result = _run(ExactIndex(catalogue), query, CascadeConfig(n=30))
    assert result.quotas.tolist() == [[10, 0, 10, 10]]


def test_k_larger_than_the_number_of_categories() -> None:
    rng = np.random.default_rng(9)
    catalogue = _catalogue(rng, 200, 2, 4)
    base = _query(rng, catalogue, 2, 5)
    categories = np.array([[1, 0, 1, 0, 1], [0, -1, -1, -1, -1]])
    mask = np.array([[True] * 5, [True, False, False, False, False]])
    query = Query(categories, base.long_vectors, base.short_vectors, mask)
    result = _run(ExactIndex(catalogue), query, CascadeConfig(n=30))
    assert result.quotas.tolist() == [[10, 10, 0, 0, 0, 10], [15, 0, 0, 0, 0, 15]]
    assert cascade_problems(result, catalogue, query, 30) == []


def test_small_category_quota_goes_to_the_other_long_term_routes_then_short() -> None:
    vectors = np.eye(3)[np.array([0, 0, 0, 0, 0, 0, 1, 2, 2, 2])]
    catalogue = Catalogue.build(vectors, np.array([0, 0, 0, 0, 0, 0, 1, 2, 2, 2]))
    query = Query(np.array([[1, 2], [1, 1]]), np.ones((2, 2, 3)), np.ones((2, 3)), np.ones((2, 2), dtype=bool))
    result = _run(ExactIndex(catalogue), query, CascadeConfig(n=9, short_share=1 / 3))
    # row 0: long 6 over categories of 1 and 3 items -> 1 + 3, the 2 left go to the short route
    # row 1: the duplicate is dropped, category 1 holds one item, the short route takes the rest
    assert result.quotas.tolist() == [[1, 3, 5], [1, 0, 8]]


def test_catalogue_smaller_than_n_pads() -> None:
    rng = np.random.default_rng(10)
    catalogue = _catalogue(rng, 5, 2, 3)
    query = _query(rng, catalogue, 2, 2)
    result = _run(HnswIndex(catalogue), query, CascadeConfig(n=9))
    assert result.valid.sum(axis=1).tolist() == [5, 5]
    assert np.all(result.ids[~result.valid] == -1)
    assert np.all(np.isneginf(result.scores[~result.valid]))


def test_short_share_one_and_zero() -> None:
    rng = np.random.default_rng(11)
    catalogue = _catalogue(rng, 400, 4, 4)
    query = _query(rng, catalogue, 3, 2)
    only_short = _run(ExactIndex(catalogue), query, CascadeConfig(n=20, short_share=1.0))
    assert np.all(only_short.routes == SHORT_ROUTE)
    no_short = _run(
        ExactIndex(catalogue),
        Query(query.categories, query.long_vectors, query.short_vectors, np.ones((3, 2), bool)),
        CascadeConfig(n=20, short_share=0.0),
    )
    assert np.all(no_short.routes != SHORT_ROUTE) or np.any(query.categories[:, 0] == query.categories[:, 1])


# ---------------------------------------------------------------------------------------------
# determinism


def test_results_are_deterministic_and_exact_is_batch_independent() -> None:
    rng = np.random.default_rng(12)
    catalogue = _catalogue(rng, 800, 5, 8)
    query = _query(rng, catalogue, 6, 3)
    cfg = CascadeConfig(n=50)
    # a sloppy graph (M=4, ef=1) is the one most sensitive to any nondeterminism
    hnsw_config = HnswConfig(seed=5, M=4, ef_construction=8, ef=1, exact_scan=0)
    first = _run(HnswIndex(catalogue, hnsw_config), query, cfg)
    second = _run(HnswIndex(catalogue, hnsw_config), query, cfg)
    assert np.array_equal(first.ids, second.ids)
    # negative control: the comparison does see a different graph (another seed)
    other = _run(HnswIndex(catalogue, replace(hnsw_config, seed=6)), query, cfg)
    assert not np.array_equal(first.ids, other.ids)
    exact = _run(ExactIndex(catalogue), query, cfg)
    alone = _run(
        ExactIndex(catalogue),
        Query(query.categories[2:3], query.long_vectors[2:3], query.short_vectors[2:3], query.mask[2:3]),
        cfg,
    )
    assert np.array_equal(alone.ids[0], exact.ids[2])


# ---------------------------------------------------------------------------------------------
# errors


def test_unknown_category_ids_are_named() -> None:
    rng = np.random.default_rng(13)
    catalogue = _catalogue(rng, 50, 3, 4)
    query = _query(rng, catalogue, 2, 2)
    bad = Query(np.array([[0, 7], [-3, 1]]), query.long_vectors, query.short_vectors, np.ones((2, 2), bool))
    with pytest.raises(ValueError, match=r"categories: unknown category ids \[-3, 7\]"):
        _run(ExactIndex(catalogue), bad, CascadeConfig(n=5))
    masked = Query(bad.categories, bad.long_vectors, bad.short_vectors, np.array([[True, False], [False, True]]))
    assert _run(ExactIndex(catalogue), masked, CascadeConfig(n=5)).valid.all()
    with pytest.raises(ValueError, match="category: unknown category ids"):
        ExactIndex(catalogue).search(np.zeros((1, 4)), 3, category=3)


def test_unknown_and_repeated_item_ids_are_named() -> None:
    catalogue = Catalogue.build(np.eye(3), np.array([0, 1, 1]), item_ids=np.array([10, 20, 30]))
    assert catalogue.categories_of(np.array([[30, 10]])).tolist() == [[1, 0]]
    with pytest.raises(ValueError, match=r"unknown item ids \[11, 40\]"):
        catalogue.positions(np.array([10, 11, 40]))
    with pytest.raises(ValueError, match=r"repeated \[4\]"):
        Catalogue.build(np.eye(3), np.array([0, 1, 1]), item_ids=np.array([4, 4, 5]))
    with pytest.raises(ValueError, match=r"items \[2\] have category ids \[5\] outside \[0, 2\)"):
        Catalogue.build(np.eye(3), np.array([0, 1, 5]), num_categories=2)


def test_positions_with_dense_and_sparse_ids_agree() -> None:
    """Dense ids are looked up in a table, sparse ones by binary search: same positions, same
    refusal of unknown ids on both paths."""
    rng = np.random.default_rng(16)
    vectors, categories = rng.standard_normal((50, 2)), rng.integers(0, 3, 50)
    dense_ids = rng.permutation(60)[:50]
    for factor, tabled in ((1, True), (10**9, False)):  # ids 10^9 apart are far too sparse for a table
        ids = dense_ids * factor
        catalogue = Catalogue.build(vectors, categories, item_ids=ids)
        asked = ids[rng.permutation(50)[:20]]
        assert np.array_equal(catalogue.item_ids[catalogue.positions(asked)], asked)
        assert (catalogue._position_table is not None) == tabled
        missing = np.setdiff1d(np.arange(61), dense_ids)[:1] * factor
        with pytest.raises(ValueError, match="unknown item ids"):
            catalogue.positions(np.concatenate([asked, missing, [-1]]))


def test_bad_shapes_dtypes_and_values_are_refused() -> None:
    rng = np.random.default_rng(14)
    catalogue = _catalogue(rng, 50, 3, 4)
    index = ExactIndex(catalogue)
    query = _query(rng, catalogue, 2, 2)
    cfg = CascadeConfig(n=5)
    with pytest.raises(ValueError, match="long_vectors"):
        cascade_retrieve(index, query.categories, query.long_vectors[:, :, :3], query.short_vectors, cfg)
    with pytest.raises(TypeError, match="short_vectors"):
        cascade_retrieve(index, query.categories, query.long_vectors, query.short_vectors.astype(np.float32), cfg)
    with pytest.raises(TypeError, match="long_mask"):
        cascade_retrieve(
            index, query.categories, query.long_vectors, query.short_vectors, cfg, long_mask=np.ones((2, 2))
        )
    nan = query.short_vectors.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="short_vectors"):
        cascade_retrieve(index, query.categories, query.long_vectors, nan, cfg)
    with pytest.raises(ValueError, match="k"):
        index.search(np.zeros((1, 4)), 0)
    with pytest.raises(ValueError, match="n"):
        CascadeConfig(n=0)
    with pytest.raises(ValueError, match="short_share"):
        CascadeConfig(n=3, short_share=1.5)


def test_float32_catalogue_keeps_float32() -> None:
    rng = np.random.default_rng(15)
    catalogue = Catalogue.build(rng.standard_normal((60, 4)).astype(np.float32), rng.integers(0, 3, 60))
    query = _query(rng, catalogue, 2, 2)
    q32 = Query(
        query.categories, query.long_vectors.astype(np.float32), query.short_vectors.astype(np.float32), query.mask
    )
    for index in (ExactIndex(catalogue), HnswIndex(catalogue)):
        assert _run(index, q32, CascadeConfig(n=10)).scores.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# quota policies (spec/retrieval.md#quota-policies)


def test_weighted_split_follows_the_weights_and_the_capacities() -> None:
    assert split_weighted(10, [100, 100, 100], [0.5, 0.3, 0.2]) == [5, 3, 2]
    assert split_weighted(10, [2, 100, 100], [0.8, 0.1, 0.1]) == [2, 4, 4]  # the cap frees 6
    assert split_weighted(7, [100, 100], [0.0, 0.0]) == [4, 3]  # no weight: even
    assert split_weighted(10, [3, 3], [0.5, 0.5]) == [3, 3]  # capacity bounds the total
    assert split_weighted(4, [100, 100, 100], [0.34, 0.33, 0.33]) == [2, 1, 1]


def _best_score_reference(catalogue: Catalogue, query: Query, row: int, n: int) -> list[int]:
    """Split "score" by brute force: every item's best score over the routes that may return it
    (a live long-term route of its category, or the short-term route), the top n, ties to the
    lower id."""
    best: dict[int, float] = {}
    cats = catalogue.item_categories
    seen: set[int] = set()
    for k in range(query.categories.shape[1]):
        category = int(query.categories[row, k])
        if not query.mask[row, k] or category in seen:
            continue
        seen.add(category)
        for pos in np.flatnonzero(cats == category):
            score = float(catalogue.vectors[pos] @ query.long_vectors[row, k])
            item = int(catalogue.item_ids[pos])
            best[item] = max(best.get(item, -np.inf), score)
    for pos in range(catalogue.size):
        item = int(catalogue.item_ids[pos])
        best[item] = max(best.get(item, -np.inf), float(catalogue.vectors[pos] @ query.short_vectors[row]))
    return [item for item, _ in sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def test_score_split_is_the_top_n_of_the_union_by_best_score() -> None:
    rng = np.random.default_rng(5)
    catalogue = _catalogue(rng, 60, 4, 3)
    query = _query(rng, catalogue, 6, 3)
    result = _run(ExactIndex(catalogue), query, CascadeConfig(n=9, split="score"))
    for row in range(6):
        assert list(result.ids[row]) == _best_score_reference(catalogue, query, row, 9)
    # Negative control: the same reference without the short-term route differs on some row.
    no_short = replace(query, short_vectors=np.full_like(query.short_vectors, 0.0))
    assert any(
        list(result.ids[row]) != _best_score_reference(catalogue, no_short, row, 9) for row in range(6)
    )


def test_weighted_split_gives_the_heavier_route_more_and_needs_weights() -> None:
    rng = np.random.default_rng(6)
    catalogue = _catalogue(rng, 200, 2, 3)
    query = Query(np.array([[0, 1]]), rng.standard_normal((1, 2, 3)), rng.standard_normal((1, 3)),
                  np.ones((1, 2), dtype=bool))
    weights = np.array([[0.9, 0.1]])
    out = cascade_retrieve(ExactIndex(catalogue), query.categories, query.long_vectors, query.short_vectors,
                           CascadeConfig(n=30, split="weighted"), route_weights=weights)
    assert list(out.quotas[0]) == [18, 2, 10]  # short-term keeps N / (R + 1); 20 split 9:1
    even = _run(ExactIndex(catalogue), query, CascadeConfig(n=30))
    assert list(even.quotas[0]) == [10, 10, 10]
    with pytest.raises(ValueError, match="route_weights"):
        _run(ExactIndex(catalogue), query, CascadeConfig(n=30, split="weighted"))
    with pytest.raises(ValueError, match="CascadeConfig.split"):
        CascadeConfig(n=30, split="merged")
