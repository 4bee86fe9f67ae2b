"""Benchmark of cascaded retrieval: hnswlib (one index per category + global) against exact NumPy.

For each catalogue size (D=32, about 50 categories of uneven sizes, items clustered around their
category's centroid) it measures, in one run:
- the hnswlib build time (per-category indexes and the global index);
- the recall of the hnswlib cascade against the exact cascade (same users, same quotas);
- the per-user latency of the hnswlib cascade (one user per call, one query thread): median, p99;
- the throughput of the hnswlib cascade (all users in one batched call, `--threads` query threads);
- the time of the exact NumPy cascade (grouped by category, batched matmul + argpartition), per
  user (one user per call) and batched;
for each hnswlib space (`ip`, and the `l2_augmented` MIPS reduction: see refimpl/retrieval/hnsw.py).
Then, once, at `--filter-size` items, it compares hnswlib's `filter=` callback on the global index with
one index per category for the long-term searches (single-threaded, as a Python filter requires).

After the listed sizes, `--grow` keeps doubling the catalogue while the projected build time
(2.2x the last one) stays under `--max-build-seconds`, to find the largest size that builds in time.

Timings are wall-clock and single-shot: on a shared machine they are noisy; read them as orders of
magnitude. Usage: python tools/bench_retrieval.py [--sizes 10000,100000,200000] [--grow]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from refimpl.retrieval import (
    CascadeConfig,
    CascadeResult,
    Catalogue,
    ExactIndex,
    HnswConfig,
    HnswIndex,
    cascade_recall,
    cascade_retrieve,
)
from refimpl.retrieval.index import SearchIndex

DIM = 32


@dataclass(frozen=True)
class Workload:
    catalogue: Catalogue
    centroids: Any  # (C, D)
    categories: Any  # (B, K)
    long_vectors: Any  # (B, K, D)
    short_vectors: Any  # (B, D)


@dataclass(frozen=True)
class Row:
    items: int
    space: str
    build_s: float
    recall: float
    latency_median_ms: float
    latency_p99_ms: float
    throughput_users_per_s: float
    exact_latency_median_ms: float
    exact_users_per_s: float
    exact_fallbacks: int
    ef_sweep: tuple[tuple[int, float, float], ...] = ()  # (ef, recall, batched users/s)


@dataclass(frozen=True)
class ExactTimes:
    result: CascadeResult
    latency_median_ms: float
    users_per_s: float


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_workload(items: int, categories: int, users: int, k: int, seed: int) -> Workload:
    """Clustered items in categories of lognormal sizes; users with K distinct predicted
    categories (drawn by popularity), long-term vectors near their category's centroid and a
    short-term vector near a random category's centroid."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 0.8, size=categories)
    weights /= weights.sum()
    item_categories = rng.choice(categories, size=items, p=weights)
    centroids = rng.standard_normal((categories, DIM))
    vectors = centroids[item_categories] + 0.7 * rng.standard_normal((items, DIM))
    catalogue = Catalogue.build(vectors, item_categories, num_categories=categories)
    predicted = np.stack([rng.choice(categories, size=k, replace=False, p=weights) for _ in range(users)])
    long_vectors = centroids[predicted] + 0.7 * rng.standard_normal((users, k, DIM))
    short_vectors = centroids[rng.integers(0, categories, users)] + rng.standard_normal((users, DIM))
    return Workload(catalogue, centroids, predicted, long_vectors, short_vectors)


def run_cascade(index: SearchIndex, w: Workload, cfg: CascadeConfig, rows: Any = slice(None)) -> CascadeResult:
    return cascade_retrieve(index, w.categories[rows], w.long_vectors[rows], w.short_vectors[rows], cfg)


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def latencies_ms(index: SearchIndex, w: Workload, cfg: CascadeConfig, users: int) -> list[float]:
    """Wall time of the cascade for one user per call."""
    times = []
    for user in range(users):
        _, seconds = timed(lambda u=user: run_cascade(index, w, cfg, slice(u, u + 1)))
        times.append(seconds * 1e3)
    return times


def bench_exact(w: Workload, cfg: CascadeConfig, args: argparse.Namespace) -> ExactTimes:
    index = ExactIndex(w.catalogue)
    result, seconds = timed(lambda: run_cascade(index, w, cfg))
    single = latencies_ms(index, w, cfg, min(args.latency_users, args.users))
    return ExactTimes(result, float(np.median(single)), args.users / seconds)


def bench_space(w: Workload, space: str, exact: ExactTimes, args: argparse.Namespace) -> tuple[Row, HnswIndex]:
    items = w.catalogue.size
    cfg = CascadeConfig(n=args.n)
    build_cfg = HnswConfig(
        space=space,
        M=args.M,
        ef_construction=args.ef_construction,
        ef=args.ef,
        seed=args.seed,
        build_threads=args.threads,
        query_threads=1,
    )
    log(f"[{items} {space}] building hnswlib indexes ...")
    hnsw, build_s = timed(lambda: HnswIndex(w.catalogue, build_cfg))
    log(f"[{items} {space}] built in {build_s:.1f} s; per-user latency ...")
    single = latencies_ms(hnsw, w, cfg, min(args.latency_users, args.users))
    log(f"[{items} {space}] batched hnswlib cascade ...")
    batched = hnsw.with_query_settings(query_threads=args.threads)
    approximate, batch_s = timed(lambda: run_cascade(batched, w, cfg))
    sweep = [(args.ef, cascade_recall(approximate, exact.result), args.users / batch_s)]
    for ef in [int(e) for e in args.sweep_ef.split(",") if e]:
        log(f"[{items} {space}] batched hnswlib cascade at ef={ef} ...")
        view = hnsw.with_query_settings(ef=ef, query_threads=args.threads)
        result, seconds = timed(lambda v=view: run_cascade(v, w, cfg))
        sweep.append((ef, cascade_recall(result, exact.result), args.users / seconds))
    row = Row(
        items=items,
        space=space,
        build_s=build_s,
        recall=cascade_recall(approximate, exact.result),
        latency_median_ms=float(np.median(single)),
        latency_p99_ms=float(np.percentile(single, 99)),
        throughput_users_per_s=args.users / batch_s,
        exact_latency_median_ms=exact.latency_median_ms,
        exact_users_per_s=exact.users_per_s,
        exact_fallbacks=hnsw.stats["exact_row_fallbacks"],
        ef_sweep=tuple(sweep),
    )
    log(f"[{items} {space}] {row}")
    return row, hnsw


def bench_size(items: int, args: argparse.Namespace) -> tuple[list[Row], Workload, dict[str, HnswIndex]]:
    w = make_workload(items, args.categories, args.users, args.k, args.seed)
    log(f"[{items}] exact cascade ...")
    exact = bench_exact(w, CascadeConfig(n=args.n), args)
    rows, indexes = [], {}
    for space in args.spaces.split(","):
        row, indexes[space] = bench_space(w, space, exact, args)
        rows.append(row)
    return rows, w, indexes


def bench_filter(w: Workload, hnsw: HnswIndex, args: argparse.Namespace) -> dict[str, float]:
    """Long-term searches (k = an even share of N) through the global index with a category filter
    callback, against the category's own index: raw `knn_query`, same ef, one thread, recall
    against exact search. Every category where the cascade would use hnswlib (k below half its
    size) gets the same number of queries (near its centroid), because the filter's cost grows as
    the category's share of the catalogue shrinks."""
    k = args.n // (args.k + 1)
    ef = max(args.ef, k)
    sizes = w.catalogue.category_sizes()
    eligible = np.flatnonzero(sizes >= 2 * k)
    eligible = eligible[np.argsort(sizes[eligible], kind="stable")]
    reps = max(1, args.filter_queries // eligible.size)
    rng = np.random.default_rng(args.seed + 1)
    times, found, total = time_filter_queries(w, hnsw, eligible, reps, k, ef, rng)
    count = eligible.size * reps
    tenth = max(1, eligible.size // 10)
    return {
        "items": float(w.catalogue.size),
        "queries": float(count),
        "categories": float(eligible.size),
        "k": float(k),
        "ef": float(ef),
        "per_category_ms": 1e3 * times[:, 0].sum() / count,
        "filter_ms": 1e3 * times[:, 1].sum() / count,
        "slowdown": times[:, 1].sum() / times[:, 0].sum(),
        "slowdown_smallest_tenth": times[:tenth, 1].sum() / times[:tenth, 0].sum(),
        "slowdown_largest_tenth": times[-tenth:, 1].sum() / times[-tenth:, 0].sum(),
        "smallest_share": float(sizes[eligible[0]] / w.catalogue.size),
        "largest_share": float(sizes[eligible[-1]] / w.catalogue.size),
        "per_category_recall": found[0] / total,
        "filter_recall": found[1] / total,
    }


def time_filter_queries(
    w: Workload, hnsw: HnswIndex, eligible: Any, reps: int, k: int, ef: int, rng: np.random.Generator
) -> tuple[Any, Any, int]:
    """`reps` queries near each eligible category's centroid, each searched by the category's own
    index and by the global index with a filter callback: the seconds of each (E, 2), the exact
    top-k items each found (2,) and the number of exact top-k items in all."""
    lookup = np.zeros(int(w.catalogue.item_ids.max()) + 1, dtype=np.int64)
    lookup[w.catalogue.item_ids] = w.catalogue.item_categories
    exact = ExactIndex(w.catalogue)
    hnsw.global_index.set_ef(ef)
    times = np.zeros((eligible.size, 2))
    found = np.zeros(2)
    total = 0
    for position, category in enumerate(eligible):
        own = hnsw.category_indexes[category]
        own.set_ef(ef)
        vectors = w.centroids[category] + 0.7 * rng.standard_normal((reps, DIM))
        for vector in vectors:
            truth, _ = exact.search(vector[None], k, int(category))
            data = hnsw.index_queries(vector[None])
            own_ids, own_s = timed(lambda i=own, d=data: i.knn_query(d, k=k, num_threads=1)[0])
            filtered_ids, filter_s = timed(
                lambda c=category, d=data: hnsw.global_index.knn_query(
                    d, k=k, num_threads=1, filter=lambda label: bool(lookup[label] == c)
                )[0]
            )
            times[position] += (own_s, filter_s)
            found += (np.intersect1d(own_ids, truth).size, np.intersect1d(filtered_ids, truth).size)
            total += truth.size
    return times, found, total


def table(rows: list[Row]) -> str:
    head = (
        "| items | hnswlib space | build (s) | recall vs exact | latency median (ms) "
        "| latency p99 (ms) | batched users/s | exact latency median (ms) | exact batched users/s |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r.items:,} | {r.space} | {r.build_s:.1f} | {r.recall:.4f} "
            f"| {r.latency_median_ms:.2f} | {r.latency_p99_ms:.2f} "
            f"| {r.throughput_users_per_s:,.0f} | {r.exact_latency_median_ms:.2f} "
            f"| {r.exact_users_per_s:,.0f} |"
        )
    return "\n".join(lines)


def sweep_table(rows: list[Row]) -> str:
    lines = ["| items | hnswlib space | ef | recall vs exact | batched users/s |", "|---|---|---|---|---|"]
    for r in rows:
        for ef, recall, users_per_s in r.ef_sweep:
            lines.append(f"| {r.items:,} | {r.space} | {ef} | {recall:.4f} | {users_per_s:,.0f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10000,100000,200000")
    p.add_argument("--grow", action="store_true", help="double past the last size while it fits")
    p.add_argument("--max-build-seconds", type=float, default=300.0)
    p.add_argument("--categories", type=int, default=50)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--latency-users", type=int, default=200)
    p.add_argument("--k", type=int, default=5, help="PGIN top-K categories per user")
    p.add_argument("--n", type=int, default=500, help="items retrieved per user")
    p.add_argument("--M", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=100)
    p.add_argument("--ef", type=int, default=200)
    p.add_argument("--sweep-ef", default="", help="more query ef values to measure recall at, e.g. 400,800")
    p.add_argument("--threads", type=int, default=2, help="build and batched-query threads")
    p.add_argument("--filter-queries", type=int, default=200)
    p.add_argument("--filter-size", type=int, default=100000, help="catalogue size of the filter test")
    p.add_argument("--spaces", default="ip,l2_augmented", help="hnswlib spaces to compare")
    p.add_argument("--filter-space", default="ip", help="space of the filter test's indexes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this file")
    return p.parse_args(argv)


def filter_summary(f: dict[str, float], space: str) -> str:
    """One paragraph of bench_filter's numbers."""
    return (
        f"filter= callback on the global index vs one index per category "
        f"({space} space, ef={int(f['ef'])}), {int(f['items']):,} items, k={int(f['k'])}, "
        f"{int(f['queries'])} long-term queries spread evenly over {int(f['categories'])} categories, "
        f"1 thread: per-category {f['per_category_ms']:.2f} ms/query (recall "
        f"{f['per_category_recall']:.4f}), filter {f['filter_ms']:.2f} ms/query (recall "
        f"{f['filter_recall']:.4f}): {f['slowdown']:.1f}x slower overall, "
        f"{f['slowdown_smallest_tenth']:.1f}x in the smallest tenth of the categories "
        f"({100 * f['smallest_share']:.2f}% of the items and up), "
        f"{f['slowdown_largest_tenth']:.1f}x in the largest tenth (up to {100 * f['largest_share']:.1f}%)."
    )


def build_seconds(rows: list[Row], items: int) -> float:
    """The longest build among the spaces at one catalogue size."""
    return max(r.build_s for r in rows if r.items == items)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    rows: list[Row] = []
    filter_report: dict[str, float] = {}
    for items in sizes:
        size_rows, w, indexes = bench_size(items, args)
        rows.extend(size_rows)
        if items == args.filter_size:
            log(f"[{items}] filter= callback against per-category indexes ...")
            filter_report = bench_filter(w, indexes[args.filter_space], args)
    while args.grow and build_seconds(rows, rows[-1].items) * 2.2 < args.max_build_seconds:
        log(f"growing: {rows[-1].items * 2} items")
        rows.extend(bench_size(rows[-1].items * 2, args)[0])
    print(
        f"Cascade: K={args.k} categories + short-term route, N={args.n}, D={DIM}, "
        f"{args.users} users; hnswlib M={args.M}, ef_construction={args.ef_construction}, "
        f"ef={args.ef} (raised to k per search), {args.threads} build/batch threads; "
        "latency: one user per call, one thread. Single run on a shared 2-core machine: noisy."
    )
    print(table(rows))
    if args.sweep_ef:
        print("\nRecall against the query beam ef (same graphs; ef is raised to k per search):")
        print(sweep_table(rows))
    if filter_report:
        print("\n" + filter_summary(filter_report, args.filter_space))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"rows": [asdict(r) for r in rows], "filter": filter_report, "args": vars(args)}, out, indent=2)


if __name__ == "__main__":
    main()
