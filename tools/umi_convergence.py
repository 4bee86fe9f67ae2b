"""Where does each UMI-demo model stop, and what does it cost? (spec/umi.md, "Convergence")

Trains models of `refimpl demo umi` on one seed's data with the demo's settings, or with some of
them overridden (`--set lr_cuts=2 --set steps=1200 --set dtype=float32 --set batch_size=64`: fields
of UMIPipelineConfig; `--users`, `--items`: the data's; the cut-offs scale with the catalogue), and
prints per model the step it stopped at, whether the rule or the cap stopped it, the best step, the
best validation loss next to the learned-nothing level, HitRate@N, the CPU seconds and the
validation curve (* after a validation that cut the learning rate).

    PYTHONPATH=. OPENBLAS_NUM_THREADS=1 python tools/umi_convergence.py [--models MIND,UMI] [--seed 0]
        [--set FIELD=VALUE ...] [--users U] [--items I]
"""

from __future__ import annotations

import argparse
import resource
from dataclasses import fields, replace

from refimpl.data.synthetic_profiles import generate_profile_data
from refimpl.demos.umi import DEFAULT, scaled_cutoffs
from refimpl.pipelines.umi import (
    MODEL_NAMES,
    UMIPipelineConfig,
    evaluate,
    prepare,
    train_model,
    validate_pipeline_config,
)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def overridden(base: UMIPipelineConfig, settings: list[str]) -> UMIPipelineConfig:
    """`base` with each FIELD=VALUE of `settings` applied, VALUE read as the field's current type (a
    tuple as comma-separated integers); the result validated. A bad setting exits naming it."""
    current = {f.name: getattr(base, f.name) for f in fields(base)}
    changes: dict[str, object] = {}
    for setting in settings:
        name, equals, value = setting.partition("=")
        if not equals:
            raise SystemExit(f"--set: expected FIELD=VALUE, got {setting!r}")
        if name not in current:
            raise SystemExit(f"--set: unknown field {name!r}; fields: {sorted(current)}")
        kind = type(current[name])
        try:
            if kind is tuple:
                changes[name] = tuple(int(v) for v in value.split(","))
            else:
                changes[name] = str(value) if current[name] is None else kind(value)
        except ValueError:
            wanted = {int: "an integer", float: "a real number", tuple: "comma-separated integers"}.get(kind, "a value")
            raise SystemExit(f"--set {setting}: expected {wanted} for {name}") from None
    cfg = replace(base, **changes)
    try:
        validate_pipeline_config(cfg)
    except (TypeError, ValueError) as error:
        raise SystemExit(f"--set: {error}") from None
    return cfg


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users", type=int, default=DEFAULT.data.num_users)
    parser.add_argument("--items", type=int, default=DEFAULT.data.num_items)
    parser.add_argument("--set", action="append", default=[], dest="settings", metavar="FIELD=VALUE")
    args = parser.parse_args(argv)
    # refused before any data is generated or model trained
    for flag in ("users", "items"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag}: expected a positive integer, got {getattr(args, flag)}")
    if args.seed < 0:
        parser.error(f"--seed: expected an integer >= 0, got {args.seed}")
    unknown = [name for name in args.models.split(",") if name not in MODEL_NAMES]
    if unknown:
        parser.error(f"--models: unknown {unknown}; the models are {','.join(MODEL_NAMES)}")
    cfg = overridden(replace(DEFAULT.pipeline, seed=args.seed, cutoffs=scaled_cutoffs(args.items)), args.settings)
    log = generate_profile_data(replace(DEFAULT.data, num_users=args.users, num_items=args.items,
                                        seed=args.seed)).interactions
    prepared = prepare(log, cfg)
    print(f"seed {args.seed}, {args.users} users; cap {cfg.steps}, lr {cfg.lr} (cuts {cfg.lr_cuts} x "
          f"{cfg.lr_factor}), validation every {cfg.eval_every}, patience {cfg.patience}, batch {cfg.batch_size}, "
          f"{cfg.dtype}")
    print(f"{'model':<16}{'stopped':>8}{'by':>5}{'best':>6}{'valid':>8}{'chance':>8}"
          + "".join(f"{'HR@' + str(n):>8}" for n in cfg.cutoffs) + f"{'CPU s':>7}  validation curve")
    total = 0.0
    for name in args.models.split(","):
        clock = cpu_seconds()
        model = train_model(name, prepared, cfg, stream=None)
        hit = evaluate(model, prepared, cfg).hit_rate
        spent = cpu_seconds() - clock
        total += spent
        curve = model.curve
        points = " ".join(f"{s}:{v:.3f}" + ("*" if s in curve.cut_steps else "")
                          for s, v in zip(curve.valid_steps, curve.valid, strict=True))
        print(f"{name:<16}{len(curve.train):>8}{'rule' if curve.stopped_early else 'cap':>5}{curve.best_step:>6}"
              f"{curve.best_valid:>8.3f}{curve.chance:>8.3f}" + "".join(f"{hit[n]:>8.2f}" for n in cfg.cutoffs)
              + f"{spent:>7.1f}  {points}", flush=True)
    print(f"total {total:.0f} CPU s (* = a plateau cut the lr after that validation)")


if __name__ == "__main__":
    main()
