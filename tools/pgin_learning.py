"""PGIN against the non-learned next-category predictors, mean +- std over seeds (spec/pgin.md).

    python tools/pgin_learning.py                 # the demo's data, 3 seeds (minutes)
    python tools/pgin_learning.py --quick         # the demo's --quick data
    python tools/pgin_learning.py --beta 0 --jump 1   # the process without sequential structure

Each seed draws its own data, user split and PGIN init (refimpl.pipelines.pgin.run_pgin_experiment).
Prints the top-k accuracy table, PGIN's margin over each baseline (per seed, then mean +- std)
and PGIN's validation loss beside ln C and the loss of the training users' category frequencies.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import numpy as np

from refimpl.demos.ulim import DEFAULT, QUICK
from refimpl.pipelines.pgin import (
    POINTER_HISTORIES,
    PGINExperiment,
    PGINResult,
    PGINTrainConfig,
    run_pgin_experiment,
)


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):5.1f} +- {np.std(values):3.1f}"


def report(results: list[PGINResult], ks: tuple[int, ...]) -> str:
    names = list(results[0].accuracy)
    lines = ["top-k accuracy (%) of the next category on the test users' targets, mean +- std over "
             f"{len(results)} seeds ({results[0].test_targets} targets in seed 0)",
             f"{'predictor':<28}" + "".join(f"{'top-' + str(k):>16}" for k in ks)]
    for name in names:
        lines.append(f"{name:<28}" + "".join(
            f"{_mean_std([r.accuracy[name][k] for r in results]):>16}" for k in ks))
    lines.append("PGIN's margin (points) over:")
    for name in names[1:]:
        lines.append(f"  {name:<26}" + "".join(
            f"{_mean_std([r.accuracy['PGIN'][k] - r.accuracy[name][k] for r in results]):>16}" for k in ks))
    curves = [r.curve for r in results]
    best = [c.best_valid for c in curves]
    lines.append(
        f"PGIN validation loss {np.mean(best):.3f} +- {np.std(best):.3f} nats at steps "
        f"{[c.best_step for c in curves]} (ln C {curves[0].chance:.3f}, training users' category "
        f"frequencies {np.mean([c.prior for c in curves]):.3f}); train loss over its last 50 steps "
        f"{np.mean([np.mean(c.train[-50:]) for c in curves]):.3f}; "
        f"{np.mean([c.seconds for c in curves]):.0f} s per run"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the demo's --quick data")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--beta", type=float, default=None, help="transition_strength of the data")
    parser.add_argument("--jump", type=float, default=None, help="short_term_jump of the data")
    parser.add_argument("--users", type=int, default=None, help="num_users of the data")
    parser.add_argument("--pointer-history", choices=POINTER_HISTORIES, default="deduplicated")
    parser.add_argument("--read-items", action="store_true", help="PGIN reads item ids too")
    args = parser.parse_args(argv)
    demo = QUICK if args.quick else DEFAULT
    data = demo.data
    for field, value in (("transition_strength", args.beta), ("short_term_jump", args.jump),
                         ("num_users", args.users)):
        if value is not None:
            data = replace(data, **{field: value})
    exp = PGINExperiment(data, demo.seq, PGINTrainConfig(), recent_length=demo.seq.short_length,
                         pointer_history=args.pointer_history, read_items=args.read_items)
    results = [run_pgin_experiment(exp, seed, stream=sys.stderr) for seed in range(args.seeds)]
    print(report(results, exp.ks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
