"""Measure IFA's cost claim: M candidates against a lifelong sequence of L behaviours.

IFA (section 4.5) claims its linear attention processes the M candidates of a request against L
behaviours in O((M + L) d^2), where softmax target attention of every candidate over the whole
sequence (DIN over the entire sequence) costs O(M L d). This script times one request (B = 1) of

- IFA:  `refimpl.nn.linear_attention` (IFA's FSM: the M candidates attend to the L behaviours),
- DIN:  `refimpl.nn.attention.attention_forward` with the M candidates as queries over the L
        behaviours: softmax target attention of each candidate over the entire sequence (the
        queries never mix, so each row is one candidate's target attention),
- TWIN: `refimpl.nn.top_k_attention` (score "attention": the ESU's head-0 score picks the top k = 100
        behaviours per candidate, then target attention over them),

forward alone and forward + backward, at M = 200 and L = 1,000 .. 20,000, width D = 16 and H = 2
heads, float32 (the IFA demo's RankerConfig defaults: refimpl/pipelines/ifa.py), every behaviour
valid. Time: median and min of interleaved repeats (one repeat runs every method once, so a noisy
moment hits all of them); BLAS limited to one thread (`refimpl.threads.blas_threads`). Memory:
the peak of NumPy's allocations during one call (tracemalloc, in a separate untimed call; the
inputs are allocated before). It prints a table per mode and the log-log slopes of time and memory
against L (least squares over the sizes), and the slope of time against M at one L (`--m-sweep`):
IFA's per-candidate cost is a constant O(d^2), DIN's and TWIN's grow with L.

    python tools/bench_ifa.py [--quick] [--sizes 1000 2000 ...] [--candidates 200] [--repeats 5]

`--quick` runs small sizes in seconds (a smoke run, not numbers to publish).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refimpl.nn.attention import (  # noqa: E402
    PARAM_NAMES,
    AttentionConfig,
    AttentionParams,
    attention_backward,
    attention_forward,
)
from refimpl.nn.linear_attention import (  # noqa: E402
    LinearAttentionConfig,
    linear_attention_backward,
    linear_attention_forward,
)
from refimpl.nn.top_k_attention import (  # noqa: E402
    TopKAttentionConfig,
    top_k_attention_backward,
    top_k_attention_forward,
)
from refimpl.threads import blas_threads  # noqa: E402
from tools.bench_linear_attention import peak_memory  # noqa: E402

WIDTH = 16
HEADS = 2
TOP_K = 100  # TWIN's (and SIM's) number of behaviours kept by the GSU
CANDIDATES = 200
SIZES = (1000, 2000, 5000, 10000, 20000)
M_SWEEP = (50, 100, 200, 400)
M_SWEEP_LENGTH = 5000
QUICK_SIZES = (200, 400, 800)
QUICK_CANDIDATES = 20
QUICK_M_SWEEP = (10, 20, 40)
METHODS = ("IFA", "DIN", "TWIN")


@dataclass(frozen=True)
class Request:
    """One request's tensors: M candidates, L behaviours (all valid), upstream gradient, params."""

    params: AttentionParams
    candidates: np.ndarray[Any, Any]  # (1, M, D)
    seq: np.ndarray[Any, Any]  # (1, L, D)
    seq_mask: np.ndarray[Any, Any]  # (1, L)
    d_out: np.ndarray[Any, Any]  # (1, M, D)


def make_request(m: int, length: int, width: int = WIDTH, seed: int = 0, dtype: Any = np.float32) -> Request:
    rng = np.random.default_rng(seed)
    params = AttentionParams(**{
        name: (rng.standard_normal((width, width)) / np.sqrt(width) if name.startswith("W")
               else 0.1 * rng.standard_normal(width)).astype(dtype)
        for name in PARAM_NAMES
    })
    return Request(
        params=params,
        candidates=(0.5 * rng.standard_normal((1, m, width))).astype(dtype),
        seq=(0.5 * rng.standard_normal((1, length, width))).astype(dtype),
        seq_mask=np.ones((1, length), dtype=bool),
        d_out=rng.standard_normal((1, m, width)).astype(dtype),
    )


def run(method: str, request: Request, heads: int, backward: bool) -> np.ndarray[Any, Any]:
    """One forward (and backward) of `method` on the request; returns its output (B, M, D)."""
    p, c, s, mask = request.params, request.candidates, request.seq, request.seq_mask
    if method == "IFA":
        out, linear_cache = linear_attention_forward(p, c, s, mask, LinearAttentionConfig(num_heads=heads))
        if backward:
            linear_attention_backward(linear_cache, request.d_out)
    elif method == "DIN":
        out, softmax_cache = attention_forward(p, c, s, mask, AttentionConfig(num_heads=heads))
        if backward:
            attention_backward(softmax_cache, request.d_out)
    elif method == "TWIN":
        cfg = TopKAttentionConfig(k=TOP_K, num_heads=heads, score="attention")
        out, top_k_cache = top_k_attention_forward(p, c, s, mask, cfg)
        if backward:
            top_k_attention_backward(top_k_cache, request.d_out)
    else:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    return out


@dataclass(frozen=True)
class Timing:
    median: float
    best: float
    peak: int


def measure(request: Request, heads: int, backward: bool, repeats: int) -> dict[str, Timing]:
    """Interleaved repeats: each round runs every method once (after one untimed warm-up each)."""
    times: dict[str, list[float]] = {method: [] for method in METHODS}
    for method in METHODS:
        run(method, request, heads, backward)
    for _ in range(repeats):
        for method in METHODS:
            start = time.perf_counter()
            run(method, request, heads, backward)
            times[method].append(time.perf_counter() - start)
    return {
        method: Timing(statistics.median(t), min(t), peak_memory(lambda m=method: run(m, request, heads, backward)))
        for method, t in times.items()
    }


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log(y) against log(x)."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


def table(title: str, axis: str, points: Sequence[int], rows: Sequence[dict[str, Timing]]) -> list[str]:
    mb = 1024.0**2
    header = "| " + axis + " | " + " | ".join(
        f"{m} ms median (min)" for m in METHODS) + " | DIN / IFA | TWIN / IFA | " + " | ".join(
        f"{m} MiB" for m in METHODS) + " |"
    lines = [title, "", header, "|" + "---:|" * (1 + 2 * len(METHODS) + 2)]
    for point, row in zip(points, rows, strict=True):
        lines.append(
            f"| {point} | "
            + " | ".join(f"{row[m].median * 1e3:.1f} ({row[m].best * 1e3:.1f})" for m in METHODS)
            + f" | {row['DIN'].median / row['IFA'].median:.1f}x | {row['TWIN'].median / row['IFA'].median:.1f}x | "
            + " | ".join(f"{row[m].peak / mb:.2f}" for m in METHODS)
            + " |"
        )
    if len(points) >= 2:
        lines += [
            "",
            f"log-log slope against {axis}: time (of the medians) "
            + ", ".join(f"{m} {slope(points, [r[m].median for r in rows]):.2f}" for m in METHODS)
            + "; time (of the minima) "
            + ", ".join(f"{m} {slope(points, [r[m].best for r in rows]):.2f}" for m in METHODS)
            + "; memory "
            + ", ".join(f"{m} {slope(points, [max(r[m].peak, 1) for r in rows]):.2f}" for m in METHODS),
        ]
    return lines


def benchmark(sizes: Sequence[int], m: int, m_sweep: Sequence[int], sweep_length: int,
              heads: int, width: int, repeats: int) -> list[str]:
    lines = [
        f"one request, B = 1, D = {width}, H = {heads}, float32, TWIN k = {TOP_K}, every behaviour valid, "
        f"BLAS 1 thread, {repeats} interleaved repeats (numpy {np.__version__})",
    ]
    for backward in (False, True):
        mode = "forward + backward" if backward else "forward"
        rows = [measure(make_request(m, n, width), heads, backward, repeats) for n in sizes]
        lines += ["", *table(f"{mode}, M = {m}, L varies:", "L", sizes, rows)]
    if m_sweep:
        rows = [measure(make_request(mm, sweep_length, width), heads, True, repeats) for mm in m_sweep]
        lines += ["", *table(f"forward + backward, L = {sweep_length}, M varies:", "M", m_sweep, rows)]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds (a smoke run)")
    parser.add_argument("--sizes", type=int, nargs="+", help=f"sequence lengths L (default {SIZES})")
    parser.add_argument("--candidates", type=int, help=f"M (default {CANDIDATES})")
    parser.add_argument("--m-sweep", type=int, nargs="*", help=f"M values at L = {M_SWEEP_LENGTH} "
                        f"(default {M_SWEEP}; none to skip)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timed repeats (default 7)")
    parser.add_argument("--width", type=int, default=WIDTH, help=f"D (default {WIDTH})")
    parser.add_argument("--heads", type=int, default=HEADS, help=f"H (default {HEADS})")
    args = parser.parse_args(argv)
    sizes = args.sizes if args.sizes is not None else (QUICK_SIZES if args.quick else SIZES)
    m = args.candidates if args.candidates is not None else (QUICK_CANDIDATES if args.quick else CANDIDATES)
    m_sweep = args.m_sweep if args.m_sweep is not None else (QUICK_M_SWEEP if args.quick else M_SWEEP)
    sweep_length = min(M_SWEEP_LENGTH, max(sizes))
    repeats = 1 if args.quick and args.repeats == 7 else args.repeats
    for name, value in (("--candidates", m), ("--repeats", repeats), ("--width", args.width),
                        ("--heads", args.heads), *((f"--sizes {n}", n) for n in sizes),
                        *((f"--m-sweep {n}", n) for n in m_sweep)):
        if value < 1:
            parser.error(f"{name}: expected a positive integer, got {value}")
    if args.width % args.heads:
        parser.error(f"--heads: {args.heads} heads do not divide --width {args.width}")
    with blas_threads(1):
        print("\n".join(benchmark(sizes, m, m_sweep, sweep_length, args.heads, args.width, repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
