"""Benchmark IFA's linear attention against its explicit form (spec/linear_attention.md#cost).

For M = L = n in --sizes (default 256 .. 4096) and width D = 64 (one head, D_h = 64, B = 1, float64,
softplus, every key valid) it measures, in one run:
- the wall time of forward + backward of `linear_attention` (the plain definition), of its tuned
  path `linear_attention_fast` and of `linear_attention_explicit` (best of several repeats; a
  repeat is one forward and one backward), and the plain / tuned time ratio,
- their peak memory (tracemalloc traces NumPy's allocations; the inputs are allocated before),
- the time and memory ratios, and the log-log slope of time and memory against n (least squares),
- the achieved GFLOP/s of the linear form (its matmul FLOPs, `linear_matmuls`) against the measured
  matmul peak of this machine (best of a few 2048 x 2048 float64 products, timed in the same run),
  and the time of the same matmuls alone (the rest of the linear form's time is element-wise work).

    python tools/bench_linear_attention.py [--sizes 256 512 ...] [--profile N]

`--profile N` also prints a cProfile of the linear form at n = N (where the time goes).
Timings on a shared machine are noisy: run it on a quiet one for numbers you publish. With other
processes competing for the cores, OPENBLAS_NUM_THREADS=1 gives far steadier numbers (a two-thread
BLAS spins while its partner thread is descheduled); the peak is then the one-core peak.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refimpl.nn.attention import PARAM_NAMES, AttentionParams  # noqa: E402
from refimpl.nn.linear_attention import (  # noqa: E402
    LinearAttentionConfig,
    linear_attention_backward,
    linear_attention_explicit_backward,
    linear_attention_explicit_forward,
    linear_attention_forward,
)
from refimpl.nn.linear_attention_fast import (  # noqa: E402
    linear_attention_fast_backward,
    linear_attention_fast_forward,
)

WIDTH = 64
PEAK_SIZE = 2048


@dataclass(frozen=True)
class Problem:
    params: AttentionParams
    q_in: np.ndarray
    kv_in: np.ndarray
    key_mask: np.ndarray
    query_mask: np.ndarray
    d_out: np.ndarray
    cfg: LinearAttentionConfig


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_bytes: int


def make_problem(n: int, width: int = WIDTH, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    params = AttentionParams(
        **{
            name: rng.standard_normal((width, width)) / np.sqrt(width)
            if name.startswith("W")
            else 0.1 * rng.standard_normal(width)
            for name in PARAM_NAMES
        }
    )
    return Problem(
        params=params,
        q_in=rng.standard_normal((1, n, width)),
        kv_in=rng.standard_normal((1, n, width)),
        key_mask=np.ones((1, n), dtype=bool),
        query_mask=np.ones((1, n), dtype=bool),
        d_out=rng.standard_normal((1, n, width)),
        cfg=LinearAttentionConfig(num_heads=1),
    )


def run_linear(p: Problem) -> None:
    _, cache = linear_attention_forward(p.params, p.q_in, p.kv_in, p.key_mask, p.cfg, p.query_mask)
    linear_attention_backward(cache, p.d_out)


def run_tuned(p: Problem) -> None:
    _, cache = linear_attention_fast_forward(p.params, p.q_in, p.kv_in, p.key_mask, p.cfg, p.query_mask)
    linear_attention_fast_backward(cache, p.d_out)


def run_explicit(p: Problem) -> None:
    _, cache = linear_attention_explicit_forward(
        p.params, p.q_in, p.kv_in, p.key_mask, p.cfg, p.query_mask
    )
    linear_attention_explicit_backward(cache, p.d_out)


def linear_matmuls(m: int, length: int, d: int) -> list[tuple[int, int, int]]:
    """The (rows, inner, cols) of every matmul in one forward + backward of the linear form, one
    head (D_h = D): the FLOP count and the matmul-only timing both come from this list.

    Forward: the q, k, v projections, S = K'^T V, Q' S, the output projection.
    Backward: d_Wo = ctx^T g, d_ctx = g Wo^T, d_Q' = d_n S^T, d_S = Q'^T d_n, d_K' = V d_S^T,
    d_V = K' d_S, d_Wq, d_Wk, d_Wv, d_q_in = d_q Wq^T, d_kv_in = d_k Wk^T + d_v Wv^T."""
    forward = [(m, d, d), (length, d, d), (length, d, d), (d, length, d), (m, d, d), (m, d, d)]
    backward = [
        (d, m, d), (m, d, d), (m, d, d), (d, m, d), (length, d, d), (length, d, d),
        (d, m, d), (d, length, d), (d, length, d), (m, d, d), (length, d, d), (length, d, d),
    ]
    return forward + backward


def linear_flops(m: int, length: int, d: int) -> int:
    """2 * rows * inner * cols summed over `linear_matmuls` (36 n D^2 for M = L = n)."""
    return sum(2 * rows * inner * cols for rows, inner, cols in linear_matmuls(m, length, d))


def matmul_only_seconds(n: int, d: int = WIDTH) -> float:
    """Best time of the linear form's matmuls alone, on random operands of the same shapes."""
    rng = np.random.default_rng(2)
    operands = [
        (rng.standard_normal((inner, rows)).T, rng.standard_normal((inner, cols)))
        if rows == d and cols == d and inner != d
        else (rng.standard_normal((rows, inner)), rng.standard_normal((inner, cols)))
        for rows, inner, cols in linear_matmuls(n, n, d)
    ]

    def run() -> None:
        for left, right in operands:
            left @ right

    return best_time(run)


def best_time(fn: Callable[[], Any], budget: float = 1.5, max_repeats: int = 40) -> float:
    """The fastest of repeated runs: at least 3 (1 if a run takes over 2 s), until `budget` seconds
    are spent. The minimum is the run least disturbed by other processes."""
    times: list[float] = []
    while len(times) < max_repeats:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if times[-1] > 2.0 or (len(times) >= 3 and sum(times) > budget):
            break
    return min(times)


def peak_memory(fn: Callable[[], Any]) -> int:
    """Peak bytes NumPy allocates during one call (inputs allocated before are not counted)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    baseline = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - baseline


def matmul_peak_gflops(size: int = PEAK_SIZE, repeats: int = 5) -> float:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((size, size))
    b = rng.standard_normal((size, size))
    seconds = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * size**3 / seconds / 1e9


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def slope(sizes: Sequence[int], values: Sequence[float]) -> float:
    """Least-squares slope of log(value) against log(n)."""
    fitted = np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(values, float)), 1)
    return float(fitted[0])


def measure(fn: Callable[[Problem], None], problem: Problem) -> Measurement:
    return Measurement(best_time(lambda: fn(problem)), peak_memory(lambda: fn(problem)))


def benchmark(sizes: Sequence[int]) -> list[str]:
    """Run every size and return the table's lines."""
    peak = matmul_peak_gflops()
    rows: list[tuple[int, Measurement, Measurement, float, float]] = []
    for n in sizes:
        problem = make_problem(n)
        tuned, explicit = measure(run_tuned, problem), measure(run_explicit, problem)
        plain = measure(run_linear, problem).seconds
        rows.append((n, tuned, explicit, matmul_only_seconds(n), plain))
    peak_after = matmul_peak_gflops()
    return format_table(rows, max(peak, peak_after), (peak, peak_after))


def format_table(
    rows: Sequence[tuple[int, Measurement, Measurement, float, float]],
    peak: float,
    peaks: tuple[float, float],
) -> list[str]:
    mb = 1024.0**2
    lines = [
        f"linear attention, D = {WIDTH}, one head, B = 1, float64, forward + backward "
        f"(numpy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')})",
        f"matmul peak ({PEAK_SIZE}^2 float64): {peak:.1f} GFLOP/s "
        f"(measured before {peaks[0]:.1f} and after {peaks[1]:.1f})",
        "",
        "The linear columns are the tuned path; plain ms is the plain definition (the component).",
        "",
        "| M = L | plain ms | plain / tuned | linear ms | explicit ms | time ratio | linear MiB | explicit MiB "
        "| memory ratio | linear GFLOP/s | share of peak | its matmuls alone ms (GFLOP/s) | element-wise share |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, lin, exp, matmul_seconds, plain in rows:
        flops = linear_flops(n, n, WIDTH)
        gflops = flops / lin.seconds / 1e9
        lines.append(
            f"| {n} | {plain * 1e3:.2f} | {plain / lin.seconds:.2f}x | "
            f"{lin.seconds * 1e3:.2f} | {exp.seconds * 1e3:.1f} | "
            f"{exp.seconds / lin.seconds:.1f}x | {lin.peak_bytes / mb:.2f} | "
            f"{exp.peak_bytes / mb:.1f} | {exp.peak_bytes / lin.peak_bytes:.1f}x | "
            f"{gflops:.1f} | {gflops / peak:.0%} | "
            f"{matmul_seconds * 1e3:.2f} ({flops / matmul_seconds / 1e9:.1f}) | "
            f"{max(0.0, 1 - matmul_seconds / lin.seconds):.0%} |"
        )
    sizes = [row[0] for row in rows]
    if len(sizes) >= 2:
        lines += [
            "",
            "log-log slope against n: "
            f"time linear {slope(sizes, [r[1].seconds for r in rows]):.2f}, "
            f"explicit {slope(sizes, [r[2].seconds for r in rows]):.2f}; "
            f"memory linear {slope(sizes, [r[1].peak_bytes for r in rows]):.2f}, "
            f"explicit {slope(sizes, [r[2].peak_bytes for r in rows]):.2f}",
        ]
    return lines


def profile(n: int, top: int = 15) -> None:
    problem = make_problem(n)
    run_tuned(problem)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(5):
        run_tuned(problem)
    profiler.disable()
    print(f"\ncProfile of 5 x tuned linear forward + backward at M = L = {n} (tottime, top {top}):")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--profile", type=int, default=0, help="also profile the linear form at this n")
    args = parser.parse_args(argv)
    print("\n".join(benchmark(args.sizes)))
    if args.profile:
        profile(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
