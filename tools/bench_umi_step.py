"""Measure the CPU cost of one training step of every model of the UMI demo, and where it goes.

At the demo's default shapes and precision (`refimpl.demos.umi.DEFAULT`: its data config, seed 0;
T = 20, K = 3, batch 128, N = 50 negatives, D = 32, float32; `--dtype float64` for the other), for
each model of `refimpl.pipelines.umi.MODEL_NAMES`, one training step is what `refimpl.train.fit` runs
per step: the model's loss and gradients (forward, readout, backward) then `refimpl.optim.adam_step`.
The params are drawn in float64 and cast, as the pipeline does; the batches (histories, profiles,
routing-logit initialisation, positives, negatives) are drawn as the pipeline draws them, before timing.

- Time: CPU seconds of the process (`time.process_time`) per step, median and min of interleaved
  repeats (one repeat runs one step of every model, so a noisy moment hits all of them), BLAS
  limited to one thread (`refimpl.threads.blas_threads`).
- Where it goes: `--profile` adds, per model, the functions with the largest own time (cProfile
  over `--profile-steps` steps), as a share of the profiled time.
- `--curve STEPS`: instead of timing, train every model STEPS steps from the seed (the pipeline's
  step: batch drawing, loss and gradients, Adam) and print each step's loss and a digest of the
  final params, exactly (float.hex): two code versions that print the same lines compute the same
  numbers, bit for bit.
- `--against REV`: run this script on git revision REV (its `refimpl` exported to a temporary
  directory) and on the worktree, alternately `--rounds` times, and print both side by side with
  the ratio; with `--curve` it compares the two versions' curves line by line instead.

    python tools/bench_umi_step.py [--repeats 21] [--profile] [--against main] [--curve 30]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

# the code measured: this checkout, or the revision `--against` exported (its child runs name it)
CODE = Path(os.environ.get("BENCH_UMI_STEP_CODE", Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(CODE))

from refimpl.data.synthetic_profiles import generate_profile_data  # noqa: E402
from refimpl.demos.umi import DEFAULT  # noqa: E402
from refimpl.models._params import Params  # noqa: E402
from refimpl.models.umi import UserBatch  # noqa: E402
from refimpl.optim import AdamConfig, AdamState, adam_init, adam_step  # noqa: E402
from refimpl.pipelines.umi import MODEL_NAMES, Prepared, _build, _Model, _user_batch, prepare  # noqa: E402
from refimpl.threads import blas_threads  # noqa: E402

Batch = tuple[UserBatch, np.ndarray, np.ndarray]


PIPELINE = DEFAULT.pipeline
"""The pipeline config measured: the demo's, with `--dtype` applied (set by `main`)."""


def _setup(seed: int) -> Prepared:
    log = generate_profile_data(DEFAULT.data).interactions
    return prepare(log, replace(PIPELINE, seed=seed))


def _draw(prepared: Prepared, rng: np.random.Generator) -> Batch:
    """One training batch as `refimpl.pipelines.umi.train_model`'s step draws it."""
    cfg = PIPELINE
    log = prepared.interactions
    rows = rng.choice(prepared.train_ends.shape[0], size=min(cfg.batch_size, prepared.train_ends.shape[0]),
                      replace=False)
    ends = prepared.train_ends[rows]
    users = log.event_users()[ends]
    batch = _user_batch(prepared, users, log.user_offsets[users], ends, cfg, rng)
    negatives = rng.choice(log.num_items, size=min(cfg.num_negatives, log.num_items), replace=False)
    return batch, log.items[ends], negatives.astype(np.int64)


class _Runner:
    """One model's params, Adam state and pre-drawn batches."""

    def __init__(self, name: str, prepared: Prepared, batches: list[Batch]) -> None:
        rng = np.random.Generator(np.random.PCG64(0))
        self.model: _Model = _build(name, prepared, PIPELINE, rng)
        # drawn in float64 and cast, as refimpl.pipelines.umi.train_model does
        self.params: Params = {n: p.astype(PIPELINE.dtype) for n, p in self.model.params.items()}
        self.state: AdamState = adam_init(self.params)
        self.adam = AdamConfig(lr=PIPELINE.lr)
        self.batches = batches
        self.taken = 0

    def step(self) -> float:
        batch, positives, negatives = self.batches[self.taken % len(self.batches)]
        loss, grads = self.model.loss(self.params, batch, positives, negatives)
        self.params, self.state = adam_step(self.params, grads, self.state, self.adam)
        self.taken += 1
        return loss


def timings(repeats: int, models: tuple[str, ...]) -> dict[str, list[float]]:
    """Per model, the CPU milliseconds of each of `repeats` interleaved steps (after one warm-up)."""
    prepared = _setup(0)
    rng = np.random.Generator(np.random.PCG64(1))
    batches = [_draw(prepared, rng) for _ in range(8)]
    runners = {name: _Runner(name, prepared, batches) for name in models}
    for runner in runners.values():
        runner.step()
    result: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, runner in runners.items():
            start = time.process_time()
            runner.step()
            result[name].append(1e3 * (time.process_time() - start))
    return result


def profile(models: tuple[str, ...], steps: int, top: int) -> dict[str, list[tuple[str, float]]]:
    """Per model, the `top` functions by own time over `steps` steps, as a share (%) of the total."""
    prepared = _setup(0)
    rng = np.random.Generator(np.random.PCG64(1))
    batches = [_draw(prepared, rng) for _ in range(8)]
    out: dict[str, list[tuple[str, float]]] = {}
    for name in models:
        runner = _Runner(name, prepared, batches)
        runner.step()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(steps):
            runner.step()
        profiler.disable()
        stats = pstats.Stats(profiler)
        entries = stats.stats  # type: ignore[attr-defined]
        total = sum(v[2] for v in entries.values())
        ranked = sorted(entries.items(), key=lambda kv: -kv[1][2])[:top]
        out[name] = [(f"{Path(f).stem}:{fn}" if f != "~" else fn, 100.0 * v[2] / total) for (f, _, fn), v in ranked]
    return out


def curves(steps: int, models: tuple[str, ...]) -> dict[str, list[str]]:
    """Per model, the exact loss of each of `steps` pipeline steps and a digest of the final params."""
    prepared = _setup(0)
    out: dict[str, list[str]] = {}
    for name in models:
        rng = np.random.Generator(np.random.PCG64(1))
        runner = _Runner(name, prepared, [])
        lines = []
        for _ in range(steps):
            runner.batches = [_draw(prepared, rng)]
            runner.taken = 0
            lines.append(float(runner.step()).hex())
        digest = hashlib.sha256()
        for key in sorted(runner.params):
            digest.update(key.encode())
            digest.update(np.ascontiguousarray(runner.params[key]).tobytes())
        lines.append(digest.hexdigest()[:16])
        out[name] = lines
    return out


def _run_json(args: argparse.Namespace, models: tuple[str, ...]) -> dict[str, Any]:
    import refimpl

    if not Path(refimpl.__file__).resolve().is_relative_to(CODE.resolve()):
        raise RuntimeError(f"measuring {refimpl.__file__}, expected the code under {CODE}")
    with blas_threads(1):
        if args.curve:
            return {"curves": curves(args.curve, models)}
        return {"timings": timings(args.repeats, models)}


def _export(rev: str, into: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(root), "archive", rev, "refimpl"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)


def _child(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "BENCH_UMI_STEP_CODE": str(path), "OPENBLAS_NUM_THREADS": "1"}
    command = [sys.executable, __file__, "--json", "--repeats", str(args.repeats), "--dtype", args.dtype,
               "--models", *args.models]
    if args.curve:
        command += ["--curve", str(args.curve)]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES, metavar="NAME")
    parser.add_argument("--profile", action="store_true", help="add the top functions per model (cProfile)")
    parser.add_argument("--profile-steps", type=int, default=20)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--curve", type=int, default=0, metavar="STEPS", help="exact loss curves, not timings")
    parser.add_argument("--against", metavar="REV", help="also run git revision REV and compare")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per version with --against")
    parser.add_argument("--dtype", choices=("float32", "float64"), default=DEFAULT.pipeline.dtype,
                        help=f"the params' and arrays' precision (default the demo's, {DEFAULT.pipeline.dtype})")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global PIPELINE
    PIPELINE = replace(DEFAULT.pipeline, dtype=args.dtype)
    for flag, value, low in (("--repeats", args.repeats, 1), ("--profile-steps", args.profile_steps, 1),
                             ("--top", args.top, 1), ("--rounds", args.rounds, 1), ("--curve", args.curve, 0)):
        if value < low:  # a median of no repeats, a share of no profiled time
            parser.error(f"{flag}: expected an integer >= {low}, got {value}")
    if args.against and subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse",
                                        "--verify", "--quiet", f"{args.against}^{{commit}}"],
                                       capture_output=True).returncode:
        parser.error(f"--against: no git revision {args.against!r} in this repository")
    models = tuple(args.models)
    if args.json:
        print(json.dumps(_run_json(args, models)))
        return 0
    if args.against:
        here = Path(__file__).resolve().parents[1]
        with tempfile.TemporaryDirectory() as tmp:
            _export(args.against, Path(tmp))
            runs: dict[str, list[dict[str, Any]]] = {args.against: [], "worktree": []}
            for _ in range(1 if args.curve else args.rounds):
                runs[args.against].append(_child(Path(tmp), args))
                runs["worktree"].append(_child(here, args))
        if args.curve:
            before, after = runs[args.against][0]["curves"], runs["worktree"][0]["curves"]
            print(f"{'model':<15} {'steps':>5} {'identical losses':>16} {'params digest':>14} max rel diff")
            for name in models:
                a, b = before[name], after[name]
                same = sum(x == y for x, y in zip(a[:-1], b[:-1], strict=True))
                rel = max(abs(float.fromhex(x) - float.fromhex(y)) / abs(float.fromhex(x))
                          for x, y in zip(a[:-1], b[:-1], strict=True))
                print(f"{name:<15} {len(a) - 1:>5} {same:>16} {'same' if a[-1] == b[-1] else 'DIFFERENT':>14} "
                      f"{rel:.1e}")
            return 0
        merged = {label: {name: [t for run in result for t in run["timings"][name]] for name in models}
                  for label, result in runs.items()}
        print(f"CPU ms per training step (loss + gradients + Adam), {args.dtype}, 1 thread, median (min) of "
              f"{args.repeats * args.rounds} interleaved repeats in {args.rounds} alternating runs")
        print(f"{'model':<15} {args.against:>16} {'worktree':>16} {'ratio':>6}")
        for name in models:
            a, b = merged[args.against][name], merged["worktree"][name]
            print(f"{name:<15} {statistics.median(a):>8.2f} ({min(a):6.2f}) {statistics.median(b):>8.2f} "
                  f"({min(b):6.2f}) {statistics.median(b) / statistics.median(a):>6.2f}")
        return 0
    with blas_threads(1):
        if args.curve:
            for name, lines in curves(args.curve, models).items():
                print(name, " ".join(lines))
            return 0
        times = timings(args.repeats, models)
        print(f"CPU ms per training step (loss + gradients + Adam), {args.dtype}, 1 thread, {args.repeats} "
              "interleaved repeats")
        print(f"{'model':<15} {'median':>8} {'min':>8}")
        for name in models:
            print(f"{name:<15} {statistics.median(times[name]):>8.2f} {min(times[name]):>8.2f}")
        if args.profile:
            for name, rows in profile(models, args.profile_steps, args.top).items():
                print(f"\n{name}: top functions by own time ({args.profile_steps} steps, cProfile)")
                for label, share in rows:
                    print(f"  {share:5.1f}%  {label}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
