"""`refimpl demo umi`: UMI's Tables 2, 3 and 5 on profile-planted data or a user's MovieLens-1M copy
(spec/umi.md, "Demo").

For every seed: the log (refimpl.data.synthetic_profiles, seeded; or `--data DIR --format
movielens-1m`), UMI's strong-generalization split, the non-learned baselines, and every model of
refimpl.pipelines.umi trained by the one rule (refimpl.train.fit) and served by UMI eq. 1 with seen
items excluded; then Table 5: MIND and UMI again on the same log with a share of every profile field's
values corrupted. Prints each table (mean +- std over the seeds, refimpl.spread) next to the paper's
numbers, the training losses next to the learned-nothing level, the paper's orderings that hold
beyond the spread at every cut-off; writes every number per seed to JSON and, with matplotlib
(`pip install refimpl[plot]`), a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from refimpl._check import require_positive_int
from refimpl.data.interactions import Interactions
from refimpl.data.loaders import load_movielens_1m
from refimpl.data.synthetic_profiles import (
    INTEREST_BEHAVIOUR,
    PROFILE_QUICK_CONFIG,
    ProfileDataConfig,
    corrupt_profiles,
    generate_profile_data,
)
from refimpl.demos._flags import refuse_bad_flags
from refimpl.demos._report import SeedsRun, SeedTables
from refimpl.pipelines.registry import evaluate, train
from refimpl.pipelines.umi import (
    BASELINES,
    MODEL_NAMES,
    RunResult,
    Scores,
    UMIPipelineConfig,
    non_learned_scores,
    prepare,
)
from refimpl.progress import set_quiet
from refimpl.spread import beyond_spread, format_mean_std
from refimpl.threads import blas_threads
from refimpl.train import DTYPES

__all__ = [
    "DEFAULT",
    "QUICK",
    "DemoConfig",
    "main",
    "scaled_cutoffs",
]

PAPER_CUTOFFS = (10, 50, 300)
PAPER_CATALOGUE = 3_706  # MovieLens-1M's items: the paper's cut-offs are shares of this catalogue
PAPER_TABLE_2 = {"DSSM": 11.0, "YouTube DNN": 26.7, "MIND": 22.4, "MIND+HN": 25.8, "ComiRec-DR": 20.8,
                 "ComiRec-DR+HN": 26.4, "UMI": 27.8}
"""UMI Table 2, MovieLens-1M, HitRate@50 in percent."""
PAPER_TABLE_3 = {"UMI": 13.6, "UMI w/o IR": 13.3, "UMI w/o HN": 13.0, "UMI w/o DAR": 11.2}
"""UMI Table 3 (ablations), Alibaba, HitRate@50 in percent."""
TABLE_5_MODELS = ("MIND", "UMI")
LONGEST_FIRST = ("UMI", "UMI w/o IR", "UMI w/o DAR", "MIND+HN", "UMI w/o HN", "ComiRec-DR", "ComiRec-DR+HN", "MIND",
                 "YouTube DNN", "DSSM")
"""MODEL_NAMES by the CPU seconds of their training in the default run, most first: the pool is handed
the longest trainings first so that its processes run out of work together."""
FORMATS = ("synthetic", "movielens-1m")


def scaled_cutoffs(num_items: int) -> tuple[int, ...]:
    """The paper's cut-offs 10/50/300 as the same share of a catalogue of `num_items` (ml-1m has 3,706)."""
    if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 1:
        raise ValueError(f"num_items: expected a positive integer, got {num_items!r}")
    return tuple(sorted({max(1, min(num_items, round(n * num_items / PAPER_CATALOGUE))) for n in PAPER_CUTOFFS}))


@dataclass(frozen=True)
class DemoConfig:
    data: ProfileDataConfig
    pipeline: UMIPipelineConfig
    seeds: tuple[int, ...] = (0, 1, 2)
    corruption: float = 0.1  # Table 5: share of every profile field's values replaced
    models: tuple[str, ...] = MODEL_NAMES


DEFAULT_DATA = ProfileDataConfig(num_users=6_000, num_items=800, num_categories=10, distractor_rate=0.7,
                                 min_length=30, max_length=60)
DEFAULT = DemoConfig(
    data=DEFAULT_DATA,
    pipeline=UMIPipelineConfig(max_length=20, num_negatives=50, lr=0.01, steps=5_000, eval_every=100, patience=2,
                               min_improvement=0.005, lr_cuts=1, cutoffs=scaled_cutoffs(DEFAULT_DATA.num_items),
                               target_behaviour=INTEREST_BEHAVIOUR, dtype="float32", ema_decay=0.99),
)
"""The default run (spec/umi.md#demo): 6,000 users (about 560 test users a seed: test users cost no
training), 800 items in 10 categories x 2 styles x 2 audiences, 30-60 events each, 70% of them a
co-user's; T = 20, K = 3, batch 128 (the paper's), N = 50 negatives and lr 0.01 (the paper's 5 and
0.005 leave every model at its learned-nothing level within the budget: measured, spec/umi.md); every
model trained until the rule stops it: a validation every 100 steps of the params' moving average
(ema_decay 0.99: the raw params' loss jumps between measurements and stopped some seeds on a jump),
patience 2 with min_improvement 0.005 nats, one lr cut by 0.3 first, the cap of 5,000 steps a guard
no training reaches; float32 (a quarter cheaper a step than float64, the same models to within a
seed's spread); 428-505 s of CPU for the 36 trainings of 3 seeds on 2 processes (spec/umi.md,
"Convergence"); only the user's own events are targets (the co-user's are history only); cut-offs
10/50/300 scaled to the catalogue (2/11/65 of 800 items)."""

QUICK = DemoConfig(
    data=replace(PROFILE_QUICK_CONFIG, num_users=200),
    pipeline=UMIPipelineConfig(max_length=10, num_negatives=20, lr=0.01, steps=6, eval_every=3, batch_size=32,
                               dim=8, profile_dim=4, validation_rows=32,
                               cutoffs=scaled_cutoffs(PROFILE_QUICK_CONFIG.num_items),
                               target_behaviour=INTEREST_BEHAVIOUR, dtype="float32"),
    seeds=(0,),
)
"""`--quick`: a smoke run of the whole pipeline in seconds (one seed: no ordering is claimed)."""


@dataclass
class SeedRun(SeedTables):
    """Everything one seed measured (HitRate and Precision in percent) and the CPU seconds of its
    trainings."""

    cpu_seconds: float = 0.0


@dataclass
class DemoRun(SeedsRun[SeedRun]):
    """The seeds' runs, the claims over them, the run's settings, and the training CPU seconds of
    each process, busiest first."""

    process_cpu_seconds: list[float] = field(default_factory=list)


TABLE_2 = "Table 2"
TABLE_3 = "Table 3"
TABLE_5 = "Table 5"


def _columns(result: RunResult, name: str) -> dict[str, float]:
    scores = result.scores[name]
    return {**{f"HR@{n}": v for n, v in scores.hit_rate.items()},
            **{f"P@{n}": v for n, v in scores.precision.items()}}


def _summary(log: Interactions, cfg: UMIPipelineConfig) -> dict[str, Any]:
    return {"source": log.source, "users": log.num_users, "items": log.num_items, "categories": log.num_categories,
            "events": log.num_events, "profile_fields": list(log.profile), "cutoffs": list(cfg.cutoffs),
            "seen_items": cfg.seen, "truncation": cfg.max_length}


def _run_models(log: Interactions, cfg: UMIPipelineConfig, names: tuple[str, ...], baselines: tuple[str, ...],
                stream: TextIO | None) -> RunResult:
    """Every model of `names` trained and evaluated through the one interface
    (refimpl.pipelines.registry) under UMI's strong generalization, the non-learned `baselines`
    beside them."""
    result = RunResult()
    if baselines:
        prepared = prepare(log, cfg)
        for name in baselines:
            result.scores[name] = non_learned_scores(name, prepared, cfg)
    for name in names:
        trained = train(name, log, config=cfg, stream=stream)
        values = evaluate(trained).values
        result.scores[name] = Scores({n: values[f"HitRate@{n}"] for n in cfg.cutoffs},
                                     {n: values[f"Precision@{n}"] for n in cfg.cutoffs})
        result.training[name] = trained.training_record()
    return result


@dataclass(frozen=True)
class _Job:
    """One training of one seed: model `name` on the seed's log, clean or with corrupted profiles."""

    cfg: DemoConfig
    seed: int
    name: str
    corrupted: bool
    log: Interactions
    verbose: bool


@dataclass(frozen=True)
class _Done:
    job_seed: int
    name: str
    corrupted: bool
    scores: Scores
    training: dict[str, float]
    cpu_seconds: float
    process: int


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _train_job(job: _Job) -> _Done:
    """Train and evaluate one model (a process of the pool runs one job at a time)."""
    start = _cpu_seconds()
    pipeline = replace(job.cfg.pipeline, seed=job.seed)
    with blas_threads(1):
        result = _run_models(job.log, pipeline, (job.name,), (), sys.stderr if job.verbose else None)
    return _Done(job.seed, job.name, job.corrupted, result.scores[job.name], result.training[job.name],
                 round(_cpu_seconds() - start, 1), os.getpid())


def _pool_job(job: _Job) -> _Done:
    set_quiet(True)  # two processes' bars would garble one terminal: the workers log plain lines
    return _train_job(job)


def _seed_logs(cfg: DemoConfig, seed: int, log: Interactions | None) -> tuple[Interactions, Interactions]:
    """The seed's log (generated when synthetic) and the same log with corrupted profiles (Table 5)."""
    if log is None:
        log = generate_profile_data(replace(cfg.data, seed=seed)).interactions
    return log, corrupt_profiles(log, cfg.corruption, np.random.Generator(np.random.PCG64(seed + 100)))


def _seed_run(cfg: DemoConfig, seed: int, log: Interactions, baselines: RunResult, done: list[_Done]) -> SeedRun:
    """One seed's tables from its non-learned rows and its trainings."""
    pipeline = replace(cfg.pipeline, seed=seed)
    clean, noisy = RunResult(scores=dict(baselines.scores)), RunResult()
    for item in done:
        target = noisy if item.corrupted else clean
        target.scores[item.name] = item.scores
        target.training[item.name] = item.training
    out = SeedRun(seed, _summary(log, pipeline))
    out.training = dict(clean.training)
    out.tables[TABLE_2] = {name: _columns(clean, name) for name in (*BASELINES, *cfg.models)
                           if not name.startswith("UMI ")}
    out.tables[TABLE_3] = {name: _columns(clean, name) for name in cfg.models if name.startswith("UMI")}
    out.tables[TABLE_5] = {}
    for name in _table5_models(cfg):
        before, after = _columns(clean, name), _columns(noisy, name)
        out.tables[TABLE_5][name] = before
        out.tables[TABLE_5][f"{name}, corrupted"] = after
        out.tables[TABLE_5][f"{name}, drop"] = {c: round(before[c] - after[c], 2) for c in before}
        out.training[f"{name}, corrupted"] = noisy.training[name]
    out.cpu_seconds = round(sum(item.cpu_seconds for item in done), 1)
    return out


def _table5_models(cfg: DemoConfig) -> tuple[str, ...]:
    return tuple(name for name in TABLE_5_MODELS if name in cfg.models)


def run(cfg: DemoConfig, log: Interactions | None = None, stream: TextIO | None = sys.stderr,
        jobs: int = 1) -> DemoRun:
    """Every seed's every training as one job (in `jobs` processes, so the busiest process does about
    1/jobs of the work: each job is deterministic alone), then the tables and the claims."""
    if not isinstance(cfg.seeds, tuple) or not cfg.seeds:
        raise ValueError(f"cfg.seeds: expected at least one seed, got {cfg.seeds!r}")
    jobs = require_positive_int("jobs", jobs)
    start = time.perf_counter()
    result = DemoRun(config=asdict(cfg), seeds=[])
    logs = {seed: _seed_logs(cfg, seed, log) for seed in cfg.seeds}
    work = [_Job(cfg, seed, name, corrupted, logs[seed][int(corrupted)], stream is not None)
            for seed in cfg.seeds
            for name, corrupted in [*((n, False) for n in cfg.models), *((n, True) for n in _table5_models(cfg))]]
    if stream is not None:
        for seed in cfg.seeds:
            stream.write(f"seed {seed}: {logs[seed][0].source}\n")
    if jobs > 1 and len(work) > 1:
        scheduled = sorted(work, key=lambda job: (LONGEST_FIRST.index(job.name), job.corrupted, job.seed))
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            finished = {(d.job_seed, d.name, d.corrupted): d for d in pool.map(_pool_job, scheduled)}
        done = [finished[(job.seed, job.name, job.corrupted)] for job in work]
    else:
        done = [_train_job(job) for job in work]
    for seed in cfg.seeds:
        clean = logs[seed][0]
        baselines = _run_models(clean, replace(cfg.pipeline, seed=seed), (), BASELINES, None)
        result.seeds.append(_seed_run(cfg, seed, clean, baselines, [d for d in done if d.job_seed == seed]))
    per_process: dict[int, float] = {}
    for item in done:
        per_process[item.process] = per_process.get(item.process, 0.0) + item.cpu_seconds
    result.process_cpu_seconds = sorted((round(v, 1) for v in per_process.values()), reverse=True)
    result.claims = claims(result)
    result.seconds = round(time.perf_counter() - start, 1)
    return result


PAPER_ORDERINGS = (
    (TABLE_2, "UMI", "MIND"),
    (TABLE_2, "UMI", "YouTube DNN"),
    (TABLE_2, "UMI", "MIND+HN"),
    (TABLE_2, "UMI", "ComiRec-DR+HN"),
    (TABLE_2, "MIND+HN", "MIND"),
    (TABLE_2, "ComiRec-DR+HN", "ComiRec-DR"),
    (TABLE_2, "YouTube DNN", "MIND"),
    (TABLE_2, "MIND", "DSSM"),
    (TABLE_3, "UMI", "UMI w/o IR"),
    (TABLE_3, "UMI", "UMI w/o HN"),
    (TABLE_3, "UMI", "UMI w/o DAR"),
    (TABLE_5, "MIND, drop", "UMI, drop"),
)
"""The paper's orderings (UMI section 4), each checked on HitRate at every cut-off."""


def _hit_columns(result: DemoRun, table: str, row: str) -> list[str]:
    return [c for c in result.seeds[0].tables[table][row] if c.startswith("HR@")]


def claims(result: DemoRun) -> list[dict[str, Any]]:
    """Each paper ordering (and each model against the non-learned rows): 'holds' when the upper row's
    mean exceeds the lower's by more than the sum of their stds at every HitRate cut-off (at least 3
    seeds), 'reversed' when the opposite holds everywhere, else 'within the spread'."""
    first = result.seeds[0].tables
    pairs = [p for p in PAPER_ORDERINGS if p[1] in first.get(p[0], {}) and p[2] in first.get(p[0], {})]
    pairs += [(TABLE_2, model, baseline) for model in first[TABLE_2] if model not in BASELINES
              for baseline in BASELINES]
    out = []
    for table, above, below in pairs:
        columns = _hit_columns(result, table, above)
        a = {c: result.values(table, above, c) for c in columns}
        b = {c: result.values(table, below, c) for c in columns}
        if all(beyond_spread(a[c], b[c]) for c in columns):
            verdict = "holds"
        elif all(beyond_spread(b[c], a[c]) for c in columns):
            verdict = "reversed"
        else:
            verdict = "within the spread"
        out.append({"table": table, "claim": f"{above} > {below}", "verdict": verdict,
                    "paper": not below.startswith(BASELINES)})
    return out


def _format_table(result: DemoRun, table: str, title: str, paper: dict[str, float] | None) -> str:
    rows = result.seeds[0].tables[table]
    columns = list(next(iter(rows.values())))
    header = f"{'':<30}" + "".join(f"{c:>16}" for c in columns) + ("     paper HR@50" if paper else "")
    lines = [title, header]
    for row in rows:
        cells = "".join(f"{format_mean_std(result.values(table, row, c), 2):>16}" for c in columns)
        reference = f"{paper[row]:>16.1f}" if paper and row in paper else ""
        lines.append(f"{row:<30}{cells}{reference}")
    return "\n".join(lines)


def _format_training(result: DemoRun) -> str:
    cap = result.config["pipeline"]["steps"]
    records = [record for seed in result.seeds for record in seed.training.values()]
    by_rule = sum(bool(record["stopped_early"]) for record in records)
    lines = [f"Training: best step / the step training stopped at per seed (cap {cap}; * = the cap stopped it, "
             f"not the rule: {len(records) - by_rule} of {len(records)} trainings); seed 0's validation loss at "
             "init -> best (learned nothing), seconds"]
    for name, record in result.seeds[0].training.items():
        stops = " ".join(f"{int(s.training[name]['best_step'])}/{int(s.training[name]['steps'])}"
                         + ("" if s.training[name]["stopped_early"] else "*") for s in result.seeds)
        lines.append(f"  {name:<22} {stops:<30} {record['valid_loss_init']:.3f} -> {record['valid_loss_best']:.3f} "
                     f"({record['learned_nothing']:.3f}), {record['seconds']:.0f}s")
    return "\n".join(lines)


def format_report(result: DemoRun) -> str:
    """The tables, the training summary and the claims, as printed."""
    data = result.seeds[0].data
    cutoffs = "/".join(str(n) for n in data["cutoffs"])
    lines = [
        f"UMI demo: {data['source']}; {data['users']} users, {data['items']} items, {data['categories']} "
        f"categories, {data['events']} events; profile fields {', '.join(data['profile_fields'])}",
        f"Strong generalization (users 80/10/10, held-out users' last 10% are targets), T = {data['truncation']}, "
        f"seen items {data['seen_items']}; N = {cutoffs} of {data['items']} items "
        f"(paper: 10/50/300 of {PAPER_CATALOGUE:,} on MovieLens-1M); {len(result.seeds)} seed(s), mean +- std",
        "",
        _format_table(result, TABLE_2, "Table 2: HitRate@N (HR) and Precision@N (P), percent", PAPER_TABLE_2),
        "",
        _format_table(result, TABLE_3, "Table 3: ablations (paper: Alibaba)", PAPER_TABLE_3),
        "",
        _format_table(result, TABLE_5, "Table 5: profile values corrupted (paper: UMI degrades less than MIND)",
                      None),
        "",
        _format_training(result),
        "",
        "Orderings (beyond the spread at every HitRate cut-off, >= 3 seeds):",
    ]
    if len(result.seeds) < 3:
        lines.append("  none claimed: fewer than 3 seeds")
    for claim in result.claims if len(result.seeds) >= 3 else []:
        lines.append(f"  [{'paper' if claim['paper'] else 'baseline'}] {claim['table']}: {claim['claim']}: "
                     f"{claim['verdict']}")
    lines.append(f"({result.seconds:.0f}s wall; training CPU seconds per process, busiest first: "
                 f"{', '.join(f'{v:.0f}' for v in result.process_cpu_seconds)})")
    return "\n".join(lines)


def save_plot(result: DemoRun, path: Path) -> bool:
    """HitRate@N of every row of Table 2 and 3 with the seed spread as error bars; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = {**result.seeds[0].tables[TABLE_2], **result.seeds[0].tables[TABLE_3]}
    columns = [c for c in next(iter(rows.values())) if c.startswith("HR@")]
    figure, axes = plt.subplots(1, len(columns), figsize=(5 * len(columns), 0.35 * len(rows) + 1.5), sharey=True)
    for axis, column in zip(np.atleast_1d(axes), columns, strict=True):
        table = {row: TABLE_2 if row in result.seeds[0].tables[TABLE_2] else TABLE_3 for row in rows}
        stats = [(np.mean(result.values(table[r], r, column)), np.std(result.values(table[r], r, column), ddof=1)
                  if len(result.seeds) > 1 else 0.0) for r in rows]
        colours = ["grey" if r in BASELINES else "tab:blue" for r in rows]
        axis.barh(list(rows), [m for m, _ in stats], xerr=[s for _, s in stats], color=colours)
        axis.set_title(f"{column} (%)")
        axis.invert_yaxis()
    figure.suptitle("UMI demo: mean +- std over seeds (grey: non-learned)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refimpl demo umi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run in seconds (one seed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (none off a terminal either)")
    parser.add_argument("--data", default=None, help="a folder with your copy of the data set")
    parser.add_argument("--format", default="synthetic", choices=FORMATS, help="the format of --data")
    parser.add_argument("--out", default="umi_results.json", help="JSON results file")
    parser.add_argument("--plot", default=None, help="PNG of HitRate@N per model (needs matplotlib)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; --quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="override the cap on training steps")
    parser.add_argument("--negatives", type=int, default=None, help="override N, the sampled negatives")
    parser.add_argument("--dtype", default=None, choices=DTYPES,
                        help="override the precision of every model's params and arrays (default float32)")
    parser.add_argument("--jobs", type=int, default=2, help="seeds run at once, one process each (default 2)")
    return parser


def config_for(args: argparse.Namespace) -> DemoConfig:
    cfg = QUICK if args.quick else DEFAULT
    if args.seeds is not None:
        cfg = replace(cfg, seeds=tuple(range(args.seeds)))
    if args.steps is not None:
        cfg = replace(cfg, pipeline=replace(cfg.pipeline, steps=args.steps))
    if args.negatives is not None:
        cfg = replace(cfg, pipeline=replace(cfg.pipeline, num_negatives=args.negatives))
    if args.dtype is not None:
        cfg = replace(cfg, pipeline=replace(cfg.pipeline, dtype=args.dtype))
    return cfg


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    set_quiet(args.quiet)
    refuse_bad_flags(args, counts=("seeds", "steps", "negatives", "jobs"), outputs=("out", "plot"))
    cfg = config_for(args)
    log = None
    if args.data is not None:
        if args.format != "movielens-1m":
            raise ValueError(f"--format: --data needs a file format, one of {FORMATS[1:]}, got {args.format!r}")
        try:
            log = load_movielens_1m(args.data)
        except FileNotFoundError as error:
            raise ValueError(f"--data: {error}") from None
        # a loaded log's every event is a target: the planted data's behaviour types are its own
        cfg = replace(cfg, pipeline=replace(cfg.pipeline, cutoffs=scaled_cutoffs(log.num_items),
                                            target_behaviour=None))
    result = run(cfg, log, sys.stderr, jobs=args.jobs)
    print(format_report(result))
    Path(args.out).write_text(json.dumps(asdict(result), indent=1, default=str) + "\n")
    print(f"wrote {args.out}")
    if args.plot:
        print(f"wrote {args.plot}" if save_plot(result, Path(args.plot))
              else "no plot: matplotlib is not installed (pip install refimpl[plot])")
    return 0

