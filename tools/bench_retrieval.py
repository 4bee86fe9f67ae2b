"""Benchmark of cascaded retrieval: the hnswlib cascade, the exact cascade and a plain NumPy brute force.

For each catalogue size (`--sizes`, D = 32, 50 categories of lognormal sizes) and each vector
workload (`--workloads`), one run measures, single-threaded:
- hnswlib: the build CPU time (per-category indexes and the global index), the recall of its
  cascade against the exact cascade (same users, same quotas), overall and by route, its
  throughput (all users in one batched call), its per-user latency (one user per call): median and
  p99, and where the CPU time goes (long-term searches / the short-term search / the rest: checks,
  quotas, merge), per user, batched and one user per call;
- the exact cascade (`ExactIndex`, refimpl's own cascade code): throughput and per-user latency;
- a brute force written the fastest plain way a user would: float32 NumPy, the same quotas, one
  matmul per category block over all the users that predicted it, one matmul over the whole
  catalogue for the short-term route (users in chunks, to bound memory), `argpartition` of the
  scores at n - k for the top items (not of their negated copy, which at 10^6 items costs more
  than the partition: the bar is no slower than it need be); its throughput is the bar: the table
  gives hnswlib's throughput as a ratio to it.
`--sweep-ef`, `--sweep-global-ef`, `--sweep-exact-scan` and `--spaces` add rows at other query
beams, scan thresholds and spaces (same graphs); `--cache-dir` keeps built graphs for later runs
(a run that changes only the global graph's M or ef_construction rebuilds only that graph).

Workloads:
- `clustered`: items around their category's centroid (noise 0.7 against unit centroids); a user's
  long-term vectors near the centroids of its K predicted categories, its short-term vector near a
  random category's centroid. Easy for a graph: well separated clusters.
- `ulim`: item and user vectors with the statistics of a trained ULIM (measured on the default demo,
  5,000 items, 20 categories, D = 32, 600 steps, seed 0; the measurements are in ULIM_STATS): a
  low effective rank (participation ratio 9 of 32 for the items, 6 for the user vectors), spread
  norms, items of a category hardly clustered (3.5% of the variance between categories: ULIM's
  long-term vectors are trained against in-category negatives only), and user vectors whose mean
  points away from the items' mean. Emulated (Gaussian with those statistics), not trained at
  each size: a trained ULIM at 10^6 items is beyond this machine.
- `--vectors FILE.npz`: the vectors a ULIM actually serves after training on a catalogue of that
  size (tools/ulim_trained_vectors.py writes them; its users' K most frequent categories as routes).

Timings are wall clock and the measuring thread's CPU time (`time.thread_time`; everything runs on
that thread): on a shared machine the wall time includes waiting for a core, so the committed
table's ratios and latencies are CPU time.
Usage: python tools/bench_retrieval.py [--sizes 10000,100000] [--workloads clustered,ulim]
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
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
from refimpl.retrieval.cascade import SHORT_ROUTE, live_routes, route_quotas
from refimpl.retrieval.index import SearchIndex
from refimpl.threads import blas_threads

DIM = 32

ULIM_STATS = {
    # measured on the trained ULIM above (items: its item tower over the catalogue; users: the
    # held-out users' v_s and v_l for their 4 most frequent categories)
    "item_participation_ratio": 9.2,
    "user_participation_ratio": 6.1,
    "item_mean_share": 0.069,  # |mean|^2 / mean |e|^2
    "user_mean_share": 0.17,
    "category_share": 0.035,  # variance of the category means / total variance (items)
    "user_item_mean_cosine": -0.85,  # cos(mean user vector, mean item vector)
}


@dataclass(frozen=True)
class Workload:
    name: str
    catalogue: Catalogue
    categories: Any  # (B, K)
    long_vectors: Any  # (B, K, D)
    short_vectors: Any  # (B, D)


@dataclass(frozen=True)
class Row:
    workload: str
    items: int
    space: str
    graphs: str
    ef: int
    global_ef: int
    exact_scan: float
    build_s: float
    recall: float
    recall_long_scanned: float
    recall_long_graph: float
    recall_short: float
    users_per_s: float
    ratio_to_brute_force: float
    ratio_to_brute_force_cpu: float
    latency_median_ms: float
    latency_p99_ms: float
    cpu_median_ms: float
    cpu_p99_ms: float
    batch_long_ms: float
    batch_short_ms: float
    batch_other_ms: float
    user_long_ms: float
    user_short_ms: float
    user_other_ms: float
    exact_users_per_s: float
    exact_latency_median_ms: float
    exact_latency_p99_ms: float
    brute_users_per_s: float
    brute_recall: float
    brute_latency_median_ms: float
    brute_latency_p99_ms: float


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _category_sizes(rng: np.random.Generator, items: int, categories: int) -> tuple[Any, Any]:
    weights = rng.lognormal(0.0, 0.8, size=categories)
    weights /= weights.sum()
    return rng.choice(categories, size=items, p=weights), weights


def _predicted(rng: np.random.Generator, users: int, k: int, weights: Any) -> Any:
    return np.stack([rng.choice(weights.size, size=k, replace=False, p=weights) for _ in range(users)])


def clustered_workload(items: int, categories: int, users: int, k: int, seed: int) -> Workload:
    rng = np.random.default_rng(seed)
    item_categories, weights = _category_sizes(rng, items, categories)
    centroids = rng.standard_normal((categories, DIM))
    vectors = (centroids[item_categories] + 0.7 * rng.standard_normal((items, DIM))).astype(np.float32)
    predicted = _predicted(rng, users, k, weights)
    long_vectors = centroids[predicted] + 0.7 * rng.standard_normal((users, k, DIM))
    short_vectors = centroids[rng.integers(0, categories, users)] + rng.standard_normal((users, DIM))
    catalogue = Catalogue.build(vectors, item_categories, num_categories=categories)
    return Workload("clustered", catalogue, predicted, long_vectors.astype(np.float32),
                    short_vectors.astype(np.float32))


def _spectrum(participation_ratio: float) -> Any:
    """Eigenvalues exp(-j / tau), tau chosen so that (sum l)^2 / sum l^2 is the given ratio."""
    j = np.arange(DIM)
    taus = np.linspace(0.5, 30.0, 2000)
    ratios = [np.exp(-j / t).sum() ** 2 / (np.exp(-j / t) ** 2).sum() for t in taus]
    tau = taus[int(np.argmin(np.abs(np.array(ratios) - participation_ratio)))]
    return np.exp(-j / tau)


def _gaussian(rng: np.random.Generator, count: int, basis: Any, spectrum: Any) -> Any:
    return (rng.standard_normal((count, DIM)) * np.sqrt(spectrum)) @ basis.T


def ulim_workload(items: int, categories: int, users: int, k: int, seed: int) -> Workload:
    """Vectors with ULIM_STATS (see the module docstring); variances in one random basis."""
    s = ULIM_STATS
    rng = np.random.default_rng(seed)
    item_categories, weights = _category_sizes(rng, items, categories)
    basis, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    item_spectrum = _spectrum(s["item_participation_ratio"])
    user_spectrum = _spectrum(s["user_participation_ratio"])
    spread = item_spectrum.sum()  # the items' total variance
    item_mean = rng.standard_normal(DIM)
    item_mean *= np.sqrt(s["item_mean_share"] / (1 - s["item_mean_share"]) * spread) / np.linalg.norm(item_mean)
    centres = _gaussian(rng, categories, basis, item_spectrum * s["category_share"])
    noise = _gaussian(rng, items, basis, item_spectrum * (1 - s["category_share"]))
    vectors = (item_mean + centres[item_categories] + noise).astype(np.float32)
    # The users' mean: at the measured angle to the items' mean, with the measured share.
    side = rng.standard_normal(DIM)
    side -= side @ item_mean / (item_mean @ item_mean) * item_mean
    cosine = s["user_item_mean_cosine"]
    direction = cosine * item_mean / np.linalg.norm(item_mean) + np.sqrt(1 - cosine**2) * side / np.linalg.norm(side)
    user_spread = user_spectrum.sum()
    user_mean = direction * np.sqrt(s["user_mean_share"] / (1 - s["user_mean_share"]) * user_spread)
    predicted = _predicted(rng, users, k, weights)
    long_vectors = user_mean + _gaussian(rng, users * k, basis, user_spectrum).reshape(users, k, DIM)
    short_vectors = user_mean + _gaussian(rng, users, basis, user_spectrum)
    catalogue = Catalogue.build(vectors, item_categories, num_categories=categories)
    return Workload("ulim", catalogue, predicted, long_vectors.astype(np.float32), short_vectors.astype(np.float32))


def trained_workload(path: str, users: int) -> Workload:
    """The vectors a trained ULIM serves, as tools/ulim_trained_vectors.py writes them; its first
    `users` users."""
    with np.load(path) as f:
        catalogue = Catalogue.build(f["item_vectors"], f["item_category"])
        return Workload(f"trained {Path(path).name}", catalogue, f["categories"][:users],
                        f["long_vectors"][:users], f["short_vectors"][:users])


WORKLOADS: dict[str, Callable[[int, int, int, int, int], Workload]] = {
    "clustered": clustered_workload,
    "ulim": ulim_workload,
}


def brute_force(w: Workload, n: int, rows: Any = slice(None), chunk: int = 64) -> Any:
    """The cascade's item sets by plain float32 NumPy: the same quotas, one matmul per category
    block over every user predicting it, one over the whole catalogue for the short-term route.
    Returns ids (B, N) (-1 padding), unordered inside a row."""
    cat = w.catalogue
    categories, long_vectors, short_vectors = w.categories[rows], w.long_vectors[rows], w.short_vectors[rows]
    batch, k = categories.shape
    sizes = cat.category_sizes()
    live = live_routes(categories, np.ones(categories.shape, bool), sizes)
    quotas = route_quotas(live, np.where(live, sizes[categories], 0), cat.size, CascadeConfig(n=n))
    ids = np.full((batch, n), -1, dtype=np.int64)
    filled = np.zeros(batch, dtype=np.int64)
    for category in np.unique(categories):
        users, ranks = np.nonzero((categories == category) & (quotas[:, :k] > 0))
        if users.size == 0:
            continue
        start, stop = cat.starts[category], cat.starts[category + 1]
        scores = long_vectors[users, ranks] @ cat.vectors[start:stop].T
        top = int(quotas[users, ranks].max())
        best = np.argpartition(scores, scores.shape[1] - top, axis=1)[:, -top:] if top < scores.shape[1] else \
            np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        best = np.take_along_axis(best, np.argsort(-np.take_along_axis(scores, best, 1), axis=1), 1)
        for user, quota, found in zip(users, quotas[users, ranks], best, strict=True):
            ids[user, filled[user]:filled[user] + quota] = cat.item_ids[start + found[:quota]]
            filled[user] += quota
    for first in range(0, batch, chunk):
        block = slice(first, min(first + chunk, batch))
        scores = short_vectors[block] @ cat.vectors.T
        depth = int(min(cat.size, quotas[block].sum(axis=1).max()))
        best = np.argpartition(scores, cat.size - depth, axis=1)[:, -depth:] if depth < cat.size else \
            np.broadcast_to(np.arange(cat.size), scores.shape)
        best = np.take_along_axis(best, np.argsort(-np.take_along_axis(scores, best, 1), axis=1), 1)
        for offset, found in enumerate(best):
            user = first + offset
            fresh = cat.item_ids[found][~np.isin(cat.item_ids[found], ids[user, :filled[user]])]
            quota = int(quotas[user, k])
            ids[user, filled[user]:filled[user] + quota] = fresh[:quota]
            filled[user] += quota
    return ids


def recall_of_sets(ids: Any, exact: CascadeResult) -> float:
    found = sum(np.intersect1d(row[row >= 0], e[v]).size for row, e, v in zip(ids, exact.ids, exact.valid, strict=True))
    return found / max(1, int(exact.valid.sum()))


def recall_by_route(approximate: CascadeResult, exact: CascadeResult, w: Workload, cfg: HnswConfig) -> dict[str, float]:
    """Recall of the exact cascade's items split by the route that picked them: the long-term routes
    into pools the back end scans exactly (at most exact_scan * ef * M items), the long-term routes
    into pools searched on the graph, and the short-term route (a graph search of the whole catalogue)."""
    rows = np.broadcast_to(np.arange(exact.ids.shape[0])[:, None], exact.ids.shape)
    found = np.zeros(exact.ids.shape, dtype=bool)
    for row in range(exact.ids.shape[0]):
        found[row] = np.isin(exact.ids[row], approximate.ids[row][approximate.valid[row]])
    routes = np.where(exact.routes >= 0, exact.routes, 0)
    pool = w.catalogue.category_sizes()[w.categories[rows, routes]]
    scanned = pool <= cfg.exact_scan * cfg.ef * cfg.M
    long_route = exact.valid & (exact.routes >= 0)
    parts = {"long_scanned": long_route & scanned, "long_graph": long_route & ~scanned,
             "short": exact.valid & (exact.routes == SHORT_ROUTE)}
    return {name: float(found[mask].mean()) if mask.any() else float("nan") for name, mask in parts.items()}


def cascade(index: SearchIndex, w: Workload, n: int, rows: Any = slice(None)) -> CascadeResult:
    return cascade_retrieve(index, w.categories[rows], w.long_vectors[rows], w.short_vectors[rows], CascadeConfig(n=n))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def cpu_timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """fn's value, wall seconds and this thread's CPU seconds (everything runs on this thread)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    value = fn()
    return value, time.perf_counter() - wall, time.thread_time() - cpu


class RouteTimer:
    """A SearchIndex that passes every search to `index` and adds its CPU time (this thread's) to
    `seconds["long"]` (a category's search: a long-term route) or `seconds["short"]` (the whole
    catalogue: the short-term route). The cascade's time outside the searches is its bookkeeping."""

    def __init__(self, index: SearchIndex) -> None:
        self.index, self.name, self.catalogue = index, index.name, index.catalogue
        self.seconds = {"long": 0.0, "short": 0.0}

    def search(self, queries: Any, k: int, category: int | None = None) -> Any:
        start = time.thread_time()
        found = self.index.search(queries, k, category)
        self.seconds["short" if category is None else "long"] += time.thread_time() - start
        return found

    def free_depth(self, category: int | None = None) -> int:
        return self.index.free_depth(category)


def route_split_ms(index: SearchIndex, w: Workload, n: int, rows: Any, calls: int) -> tuple[float, float, float]:
    """CPU ms per call spent in long-term searches, the short-term search and the rest (validation,
    quotas, merge), averaged over `calls` calls of the cascade on `rows` (all users, or one each)."""
    timer = RouteTimer(index)
    total = 0.0
    for call in range(calls):
        start = time.thread_time()
        cascade(timer, w, n, rows(call))
        total += time.thread_time() - start
    long_s, short_s = timer.seconds["long"], timer.seconds["short"]
    return long_s * 1e3 / calls, short_s * 1e3 / calls, (total - long_s - short_s) * 1e3 / calls


def per_user_ms(fn: Callable[[slice], Any], users: int) -> tuple[float, float, float, float]:
    """Median and p99 (ms) of fn over `users` single-user calls: wall time, then the calling
    thread's CPU time. On a loaded machine the wall time includes waiting for a core; the CPU time
    is what one call costs a core of its own (every call runs on this one thread)."""
    wall, cpu = [], []
    for u in range(users):
        wall_start, cpu_start = time.perf_counter(), time.thread_time()
        fn(slice(u, u + 1))
        cpu.append((time.thread_time() - cpu_start) * 1e3)
        wall.append((time.perf_counter() - wall_start) * 1e3)
    return (float(np.median(wall)), float(np.percentile(wall, 99)),
            float(np.median(cpu)), float(np.percentile(cpu, 99)))


def built_index(w: Workload, cfg: HnswConfig, args: argparse.Namespace, tag: str) -> tuple[HnswIndex, float]:
    """The hnswlib index of the workload, and its build CPU seconds; with --cache-dir the built
    graphs are kept on disk (pickled) and reused by a later run with the same data and build
    parameters; when only the global graph's parameters differ, the category graphs are reused
    and the global graph alone is built."""
    category_key = (f"{w.name}-{w.catalogue.size}-{args.categories}-{args.seed}-{cfg.space}"
                    f"-M{cfg.M}-efc{cfg.ef_construction}")
    global_m, global_efc, _ = global_settings(cfg)
    directory = Path(args.cache_dir) if args.cache_dir else None
    path = directory / f"{category_key}-global-M{global_m}-efc{global_efc}.pkl" if directory else None
    if directory is not None and path is not None:
        for candidate in [path, *sorted(directory.glob(f"{category_key}-global-*.pkl"))]:
            if not candidate.exists():
                continue
            with candidate.open("rb") as f:
                hnsw = pickle.load(f)
            if not np.array_equal(hnsw.catalogue.vectors, w.catalogue.vectors):
                continue
            log(f"{tag} graphs from {candidate} (built in {hnsw.build_cpu_seconds} CPU s)")
            if candidate != path:
                log(f"{tag} building the global graph (M={global_m}, ef_construction={global_efc}) ...")
                hnsw = hnsw.with_global_graph(cfg.global_M, cfg.global_ef_construction)
                _save(path, hnsw)
            return _query_view(hnsw, cfg), sum(hnsw.build_cpu_seconds.values())
    log(f"{tag} building hnswlib ({cfg.space}, M={cfg.M}, ef_construction={cfg.ef_construction}, "
        f"global M={global_m}, ef_construction={global_efc}) ...")
    hnsw = HnswIndex(w.catalogue, cfg)
    log(f"{tag} built in {hnsw.build_cpu_seconds} CPU s")
    if path is not None:
        _save(path, hnsw)
    return hnsw, sum(hnsw.build_cpu_seconds.values())


def global_settings(cfg: HnswConfig) -> tuple[int, int, int]:
    """The global index's M, ef_construction and ef (a None global setting takes the categories')."""
    return (cfg.M if cfg.global_M is None else cfg.global_M,
            cfg.ef_construction if cfg.global_ef_construction is None else cfg.global_ef_construction,
            cfg.ef if cfg.global_ef is None else cfg.global_ef)


def _save(path: Path, hnsw: HnswIndex) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(hnsw, f, protocol=pickle.HIGHEST_PROTOCOL)


def _query_view(hnsw: HnswIndex, cfg: HnswConfig) -> HnswIndex:
    return hnsw.with_query_settings(ef=cfg.ef, exact_scan=cfg.exact_scan, global_ef=global_settings(cfg)[2])


def bench(w: Workload, args: argparse.Namespace) -> list[Row]:
    items, users, n = w.catalogue.size, w.categories.shape[0], args.n
    tag = f"[{w.name} {items:,}]"
    log(f"{tag} exact cascade ...")
    exact_index = ExactIndex(w.catalogue)
    exact, exact_s = timed(lambda: cascade(exact_index, w, n))
    exact_lat = per_user_ms(lambda r: cascade(exact_index, w, n, r), args.exact_latency_users)
    log(f"{tag} brute force ...")
    brute_ids, brute_s, brute_cpu_s = cpu_timed(lambda: brute_force(w, n))
    brute_lat = per_user_ms(lambda r: brute_force(w, n, r), args.exact_latency_users)
    brute_recall = recall_of_sets(brute_ids, exact)
    rows = []
    for space in args.spaces.split(","):
        cfg = HnswConfig(space=space, M=args.M, ef_construction=args.ef_construction, ef=args.ef, seed=args.seed,
                         exact_scan=args.exact_scan, global_M=args.global_M,
                         global_ef_construction=args.global_ef_construction, global_ef=args.global_ef)
        hnsw, build_s = built_index(w, cfg, args, tag)
        global_m, global_efc, global_ef = global_settings(cfg)
        graphs = f"M {cfg.M}, efc {cfg.ef_construction}; global M {global_m}, efc {global_efc}"
        settings = [(args.ef, global_ef, args.exact_scan)]
        settings += [(int(e), global_ef, args.exact_scan) for e in args.sweep_ef.split(",") if e]
        settings += [(args.ef, int(e), args.exact_scan) for e in args.sweep_global_ef.split(",") if e]
        settings += [(args.ef, global_ef, float(x)) for x in args.sweep_exact_scan.split(",") if x]
        for ef, beam, exact_scan in settings:
            view = hnsw.with_query_settings(ef=ef, exact_scan=exact_scan, global_ef=beam)
            result, seconds, cpu_seconds = cpu_timed(lambda v=view: cascade(v, w, n))
            latency = per_user_ms(lambda r, v=view: cascade(v, w, n, r), args.latency_users)
            batch_split = route_split_ms(view, w, n, lambda _: slice(None), 1)
            user_split = route_split_ms(view, w, n, lambda u: slice(u, u + 1), args.latency_users)
            by_route = recall_by_route(result, exact, w, view.config)
            row = Row(
                workload=w.name, items=items, space=space, graphs=graphs, ef=ef, global_ef=beam,
                exact_scan=exact_scan, build_s=build_s,
                recall=cascade_recall(result, exact), recall_long_scanned=by_route["long_scanned"],
                recall_long_graph=by_route["long_graph"], recall_short=by_route["short"], users_per_s=users / seconds,
                ratio_to_brute_force=brute_s / seconds, ratio_to_brute_force_cpu=brute_cpu_s / cpu_seconds,
                latency_median_ms=latency[0], latency_p99_ms=latency[1],
                cpu_median_ms=latency[2], cpu_p99_ms=latency[3],
                batch_long_ms=batch_split[0] / users, batch_short_ms=batch_split[1] / users,
                batch_other_ms=batch_split[2] / users,
                user_long_ms=user_split[0], user_short_ms=user_split[1], user_other_ms=user_split[2],
                exact_users_per_s=users / exact_s, exact_latency_median_ms=exact_lat[0],
                exact_latency_p99_ms=exact_lat[1], brute_users_per_s=users / brute_s, brute_recall=brute_recall,
                brute_latency_median_ms=brute_lat[0], brute_latency_p99_ms=brute_lat[1],
            )
            log(f"{tag} {row}")
            rows.append(row)
    return rows


def table(rows: list[Row]) -> str:
    head = (
        "| vectors | items | graphs | ef / global ef | exact scan | recall | recall long scanned / long graph / short "
        "| hnswlib users/s | x brute force (wall / CPU) "
        "| hnswlib wall median / p99 ms | hnswlib CPU median / p99 ms "
        "| CPU ms per user, batch: long / short / rest | CPU ms, one user per call: long / short / rest "
        "| exact users/s | exact median / p99 ms | brute force users/s | brute force median / p99 ms | build CPU s |"
    )
    lines = [head, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r.workload} | {r.items:,} | {r.space}, {r.graphs} | {r.ef} / {r.global_ef} | {r.exact_scan:g} "
            f"| {r.recall:.3f} | {r.recall_long_scanned:.3f} / {r.recall_long_graph:.3f} / {r.recall_short:.3f} "
            f"| {r.users_per_s:,.0f} | {r.ratio_to_brute_force:.1f} / {r.ratio_to_brute_force_cpu:.1f} "
            f"| {r.latency_median_ms:.2f} / {r.latency_p99_ms:.2f} | {r.cpu_median_ms:.2f} / {r.cpu_p99_ms:.2f} "
            f"| {r.batch_long_ms:.2f} / {r.batch_short_ms:.2f} / {r.batch_other_ms:.2f} "
            f"| {r.user_long_ms:.2f} / {r.user_short_ms:.2f} / {r.user_other_ms:.2f} "
            f"| {r.exact_users_per_s:,.0f} | {r.exact_latency_median_ms:.1f} / {r.exact_latency_p99_ms:.1f} "
            f"| {r.brute_users_per_s:,.0f} | {r.brute_latency_median_ms:.1f} / {r.brute_latency_p99_ms:.1f} "
            f"| {r.build_s:.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = HnswConfig()
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--sizes", default="10000,100000", help="catalogue sizes, e.g. 10000,100000,1000000")
    p.add_argument("--workloads", default="clustered,ulim", help=f"any of {','.join(WORKLOADS)}")
    p.add_argument("--vectors", default="",
                   help="also a trained ULIM's vectors: .npz files of tools/ulim_trained_vectors.py, comma-separated")
    p.add_argument("--categories", type=int, default=50)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--latency-users", type=int, default=200, help="single-user calls timed (hnswlib)")
    p.add_argument("--exact-latency-users", type=int, default=30, help="single-user calls timed (exact, brute)")
    p.add_argument("--k", type=int, default=5, help="PGIN top-K categories per user")
    p.add_argument("--n", type=int, default=500, help="items retrieved per user")
    p.add_argument("--spaces", default=defaults.space, help="hnswlib spaces, e.g. ip,l2_augmented")
    p.add_argument("--M", type=int, default=defaults.M)
    p.add_argument("--ef-construction", type=int, default=defaults.ef_construction)
    p.add_argument("--ef", type=int, default=defaults.ef, help="query beam of the category indexes")
    p.add_argument("--global-M", type=int, default=defaults.global_M, help="degree of the global graph")
    p.add_argument("--global-ef-construction", type=int, default=defaults.global_ef_construction)
    p.add_argument("--global-ef", type=int, default=defaults.global_ef, help="query beam of the global index")
    p.add_argument("--exact-scan", type=float, default=defaults.exact_scan,
                   help="pools of at most exact_scan * ef * M items are scanned exactly (0: off)")
    p.add_argument("--sweep-ef", default="", help="more query beams on the same graphs, e.g. 100,400")
    p.add_argument("--sweep-global-ef", default="", help="more global query beams on the same graphs")
    p.add_argument("--sweep-exact-scan", default="", help="more exact-scan thresholds at --ef, e.g. 0,8")
    p.add_argument("--cache-dir", default=None, help="keep built graphs here and reuse them in later runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the rows to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows: list[Row] = []
    with blas_threads(1):
        for items in [int(float(s)) for s in args.sizes.split(",") if s]:
            for name in args.workloads.split(","):
                workload = WORKLOADS[name](items, args.categories, args.users, args.k, args.seed)
                rows.extend(bench(workload, args))
        for path in [p for p in args.vectors.split(",") if p]:
            rows.extend(bench(trained_workload(path, args.users), args))
    print(
        f"Cascade: K={args.k} categories + the short-term route, N={args.n}, D={DIM}, {args.users} users, "
        f"{args.categories} categories; one thread everywhere; throughput: all users in one call (its ratio to "
        "the brute force in wall and in CPU time); "
        "latency: one user per call."
    )
    print(table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"rows": [asdict(r) for r in rows], "args": vars(args)}, out, indent=2)


if __name__ == "__main__":
    main()
