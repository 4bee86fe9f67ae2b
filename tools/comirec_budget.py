"""Is Table 2's ComiRec row budget-limited? (spec/umi.md, "ComiRec budget study")

Trains a model of the UMI demo at 1x, 2x and 4x the demo's cap on steps (same data, split, width,
negatives, learning rate and stopping rule as `refimpl demo umi`, one seed) and prints its
validation curve, where it stopped, and HitRate@N, next to the learned-nothing level.

    PYTHONPATH=. OPENBLAS_NUM_THREADS=1 python tools/comirec_budget.py [--models ComiRec-DR] [--seed 0]
"""

from __future__ import annotations

import argparse
import resource
from dataclasses import replace

from refimpl.data.synthetic_profiles import generate_profile_data
from refimpl.demos.umi import DEFAULT
from refimpl.pipelines.umi import evaluate, prepare, train_model


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="ComiRec-DR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--multiples", default="1,2,4")
    args = parser.parse_args()
    log = generate_profile_data(replace(DEFAULT.data, seed=args.seed)).interactions
    base = replace(DEFAULT.pipeline, seed=args.seed)
    prepared = prepare(log, base)
    print(f"{'model':<16}{'cap':>6}{'stopped':>9}{'best':>6}{'valid best':>12}{'chance':>8}"
          + "".join(f"{'HR@' + str(n):>8}" for n in base.cutoffs) + f"{'CPU s':>8}  validation curve")
    for name in args.models.split(","):
        for multiple in (int(m) for m in args.multiples.split(",")):
            cfg = replace(base, steps=base.steps * multiple)
            clock = cpu_seconds()
            model = train_model(name, prepared, cfg, stream=None)
            hit = evaluate(model, prepared, cfg).hit_rate
            curve = model.curve
            points = " ".join(f"{s}:{v:.3f}" for s, v in zip(curve.valid_steps, curve.valid, strict=True))
            print(f"{name:<16}{cfg.steps:>6}{len(curve.train):>9}{curve.best_step:>6}{curve.best_valid:>12.3f}"
                  f"{curve.chance:>8.3f}" + "".join(f"{hit[n]:>8.2f}" for n in cfg.cutoffs)
                  + f"{cpu_seconds() - clock:>8.0f}  {points}", flush=True)


if __name__ == "__main__":
    main()
