"""The vectors a trained ULIM serves, on a large planted catalogue, for tools/bench_retrieval.py.

Generates the ULIM demo's planted data (refimpl.demos.ulim.DEFAULT.data) with `--items` items in
`--categories` categories, trains ULIM under the demo's training rule (leave-last-out; it stops by
the rule or at `--steps`; `--optimizer lazy_adam` updates only the batch's item rows, so that a
step does not grow with the catalogue), and writes what the cascade reads for every held-out user
to one .npz: `item_vectors` (I, D) float32, ULIM's item tower over the catalogue; `item_category` (I,);
`categories` (B, K) the user's K most frequent categories (the frequency router: no PGIN is
trained, since the routes only choose which category pools the long-term vectors search);
`long_vectors` (B, K, D) v_l per route; `short_vectors` (B, D) v_s. Rows with fewer than K
categories in their history are dropped. `tools/bench_retrieval.py --vectors FILE` benchmarks them.

Usage: python tools/ulim_trained_vectors.py --items 100000 --out /tmp/ulim_1e5.npz
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from refimpl import baselines
from refimpl.data.interactions import from_synthetic
from refimpl.data.protocols import leave_last_out
from refimpl.data.synthetic import generate
from refimpl.demos.ulim import DEFAULT
from refimpl.models import ulim as ulim_model
from refimpl.pipelines.inputs import request_samples
from refimpl.pipelines.ulim import train_ulim, ulim_vectors
from refimpl.threads import blas_threads
from refimpl.train import OPTIMIZERS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--categories", type=int, default=50)
    p.add_argument("--users", type=int, default=DEFAULT.data.num_users)
    p.add_argument("--k", type=int, default=5, help="routes (categories) per user, as bench_retrieval's --k")
    p.add_argument("--steps", type=int, default=DEFAULT.train.steps, help="training cap")
    p.add_argument("--eval-every", type=int, default=DEFAULT.train.eval_every,
                   help="steps between validation measurements (the rule's clock)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULT.train.optimizer,
                   help="lazy_adam: only the batch's rows of the item table update (spec/optim.md#lazy-adam); "
                        "a step then costs the same at 10^6 items as at 10^5")
    p.add_argument("--out", required=True, help="the .npz to write")
    args = p.parse_args(argv)
    # refused by name before the data is generated and the model trained (minutes at 10^6 items)
    for flag in ("items", "categories", "users", "k", "steps", "eval_every"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')}: expected a positive integer, got {getattr(args, flag)}")
    if args.seed < 0:
        p.error(f"--seed: expected an integer >= 0, got {args.seed}")
    if args.k > args.categories:
        p.error(f"--k: expected at most --categories ({args.categories}) routes, got {args.k}")
    out = Path(args.out)
    if out.suffix != ".npz":  # numpy would write OUT.npz, not the file named
        p.error(f"--out: expected a path ending in .npz, got {args.out!r}")
    if not out.parent.is_dir():
        p.error(f"--out: no folder {out.parent} to write into")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cpu, clock = time.process_time(), time.perf_counter()
    data = replace(DEFAULT.data, num_items=args.items, num_categories=args.categories, num_users=args.users,
                   seed=args.seed)
    log = from_synthetic(generate(data)).interactions
    split = leave_last_out(log)
    train = replace(DEFAULT.train, steps=args.steps, seed=args.seed, optimizer=args.optimizer,
                    eval_every=args.eval_every)
    with blas_threads(1):
        model = train_ulim(log, split, DEFAULT.seq, train, stream=sys.stderr)
        held = request_samples(log, split.test)
        routes = baselines.frequency_routes(log, held, args.k)
        full = routes.mask.all(axis=1)
        short, long, _ = ulim_vectors(model, log, held, routes.categories, DEFAULT.seq)
        items = ulim_model.catalogue_vectors(model.params, log.item_category)
    np.savez_compressed(
        args.out,
        item_vectors=items.astype(np.float32),
        item_category=log.item_category,
        categories=routes.categories[full],
        long_vectors=long[full].astype(np.float32),
        short_vectors=short[full].astype(np.float32),
    )
    curve = model.curve
    print(f"ULIM on {args.items:,} items, {args.categories} categories, {args.users} users: "
          f"best validation {curve.best_valid:.3f} (learned nothing: {curve.chance:.3f}) at step {curve.best_step}, "
          f"stopped by the rule: {curve.stopped_early} (cap {args.steps}, a measurement every {args.eval_every}), "
          f"{args.optimizer}, "
          f"{len(curve.train)} steps; "
          f"{int(full.sum())} users with {args.k} routes written to {args.out}; "
          f"{time.process_time() - cpu:.0f} s CPU, {time.perf_counter() - clock:.0f} s wall")


if __name__ == "__main__":
    main()
