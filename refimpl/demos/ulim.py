"""`refimpl demo ulim` (the default demo): ULIM end to end and the paper's tables (spec/demo.md).

For every seed: builds the synthetic data (refimpl.data.synthetic, entering the data model through
`from_synthetic`) or loads the user's log (`--data PATH --format FMT`, refimpl.data.loaders), splits
it by ULIM's leave-last-out (refimpl.data.protocols), computes the non-learned baselines
(refimpl.baselines), trains every model by the one rule of refimpl.train (validation split, early
stopping, learned-nothing level) through refimpl.pipelines.ulim and refimpl.pipelines.pgin: PGIN,
YouTube DNN, MIND, ULIM and (`--ablations`, `DemoConfig.ablations`) ULIM-half-sequence,
ULIM-self-attention and ULIM with a catalogue-wide short-term loss; retrieves by the cascade (ULIM)
or by whole-pool search (the single-vector baselines), seen items kept or excluded (`--seen`).
Prints, every entry mean +- std over the seeds (refimpl.spread), each table with the baselines beside the models:
- Table 1 (ULIM paper): HR@N at three cut-offs; Table 2: the ablations (when trained); given the
  true category;
- HR against K (a PNG with --plot when matplotlib is installed: `pip install refimpl[plot]`);
- the serving splits, the short-term vector alone, PGIN's top-K accuracy;
- the training and validation losses next to the learned-nothing level, the planted-truth
  diagnostics (refimpl.diagnostics; synthetic data only), and which of the paper's orderings hold
  beyond the spread (none with one seed);
and writes every number, per seed, to a JSON file. With a user's log every seed trains on the same
log (the seed draws the initialisations, batches and negatives).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from refimpl import baselines
from refimpl._check import BoolArray, require_choice, require_int, require_positive_int
from refimpl.category_baselines import top_k_accuracy
from refimpl.data.interactions import Interactions, from_synthetic
from refimpl.data.loaders import FORMATS, load_interactions
from refimpl.data.protocols import DEFAULT_SEEN_POLICY, SEEN_POLICIES, SeenItems, Split, leave_last_out
from refimpl.data.synthetic import QUICK_CONFIG, SyntheticConfig, SyntheticData, generate
from refimpl.demos._flags import refuse_bad_flags
from refimpl.demos._report import SeedsRun, SeedTables
from refimpl.diagnostics import item_agreement, taste_agreement
from refimpl.models import ulim as ulim_model
from refimpl.pipelines.evaluation import BACKENDS, EvalConfig, Routes, Serving, search_hit_rates
from refimpl.pipelines.inputs import (
    Samples,
    category_subsequences,
    request_samples,
    samples_seen,
)
from refimpl.pipelines.pgin import (
    PGINCurve,
    PGINTrainConfig,
    baseline_predictions,
    hold_out_last,
    pgin_routes,
    pgin_targets,
)
from refimpl.pipelines.registry import TrainedModel, ULIMPipelineConfig, evaluate, train
from refimpl.pipelines.ulim import SequenceConfig, ulim_index, ulim_serving
from refimpl.progress import set_quiet
from refimpl.spread import MIN_SEEDS, format_mean_std, ordering
from refimpl.threads import blas_threads
from refimpl.train import Curve, TrainConfig

__all__ = [
    "DEFAULT",
    "LEARNING_CHECK",
    "QUICK",
    "DemoConfig",
    "main",
]

PAPER_CUTOFFS = (500, 1000, 2000)
PAPER_TABLE_1: dict[str, tuple[float, ...]] = {
    "YouTube DNN": (4.95, 9.53, 14.93),
    "MIND": (5.03, 9.66, 15.15),
    "ULIM": (6.02, 10.76, 16.55),
}
"""ULIM Table 1 (Taobao): HR@500/1000/2000 in percent."""


@dataclass(frozen=True)
class DemoConfig:
    """One demo run: the synthetic data (or the user's log at `data_path` in `data_format`), the
    windows, the training rules, the cut-offs and K, the back end, the seen-item policy and the
    seeds. Checked at construction."""

    data: SyntheticConfig
    seq: SequenceConfig
    train: TrainConfig
    cutoffs: tuple[int, ...]
    num_routes: int  # K of Tables 1 and 2
    k_values: tuple[int, ...]  # the K of the sensitivity table
    pgin: PGINTrainConfig = field(default_factory=PGINTrainConfig)
    backend: str = "exact"
    seeds: tuple[int, ...] = (0, 1, 2)
    seen: str = DEFAULT_SEEN_POLICY  # evaluation keeps ("kept") or drops ("excluded") seen items
    data_path: str = ""  # a user's log instead of the synthetic data ("": synthetic)
    data_format: str = ""  # its format (refimpl.data.loaders.FORMATS)
    ablations: bool = True  # train Table 2's ablations (False: ULIM alone, Table 2 and its claims omitted)

    def __post_init__(self) -> None:
        require_positive_int("cfg.num_routes", self.num_routes)
        for name in ("cutoffs", "k_values", "seeds"):
            values = getattr(self, name)
            if not isinstance(values, tuple) or not values:
                raise ValueError(f"cfg.{name}: expected a non-empty tuple, got {values!r}")
        for n in (*self.cutoffs, *self.k_values):
            require_positive_int("cfg.cutoffs, cfg.k_values", n)
        for seed in self.seeds:
            require_int("cfg.seeds", seed, low=0)
        require_choice("cfg.backend", self.backend, BACKENDS)
        require_choice("cfg.seen", self.seen, SEEN_POLICIES)
        if not isinstance(self.ablations, bool):
            raise TypeError(f"cfg.ablations: expected a bool, got {self.ablations!r}")
        if self.data_path:
            require_choice("cfg.data_format", self.data_format, FORMATS)


DEFAULT = DemoConfig(
    data=replace(SyntheticConfig(), num_users=500, num_items=5_000, num_categories=20,
                 latent_dim=8),
    seq=SequenceConfig(
        short_length=30, long_length=2_000, max_subsequence=64, mind_length=50,
        pgin_long_length=50, pgin_short_length=20, pgin_history=50, targets="all_events",
    ),
    train=TrainConfig(
        steps=5_000, eval_every=100, patience=1, validation_rows=512, batch_size=64,
        num_negatives=64, dim=32, num_heads=2, num_interests=4, lr=1e-2, lr_cuts=3, lr_factor=0.3,
        dtype="float32",
    ),
    cutoffs=(10, 20, 50),
    num_routes=4,
    k_values=(1, 2, 3, 4, 6, 8),
    pgin=PGINTrainConfig(validation_rows=512, dtype="float32"),
    ablations=False,
)
"""The default run (spec/demo.md#sizes): the default process with 500 users, 5,000 items in 20
categories (about 250 items each) and planted latents of width 8; every event of a sequence is a
training target; N = 10/20/50 is 0.2-1% of the catalogue and 4-20% of a category. Every model
stops by the rule, not the cap: the learning rate is cut by 0.3 at each measurement that does not
improve, at most 3 times (spec/demo.md#the-learning-rate-schedule); Table 2's ablations only with
`--ablations` (they would more than double the CPU). Three seeds, two at a time on two cores
(`--jobs`)."""

LEARNING_CHECK = DemoConfig(
    data=replace(QUICK_CONFIG, latent_dim=8),
    seq=SequenceConfig(
        short_length=20, long_length=400, max_subsequence=64, mind_length=50,
        pgin_long_length=50, pgin_short_length=10, pgin_history=10, targets="all_events",
    ),
    train=TrainConfig(
        steps=400, eval_every=50, validation_rows=256, batch_size=64, num_negatives=32, dim=32,
        num_heads=2, num_interests=4, lr=1e-2,
    ),
    cutoffs=(5, 10, 20),
    num_routes=4,
    k_values=(1, 2, 4, 6),
    pgin=PGINTrainConfig(validation_rows=256),
)
"""The learning check's configuration (tests/test_learning.py): 400 users, 20 categories, 1,000
items (50 per category), planted latents of width 8, sequences of 350-400 events; N = 5/10/20."""

QUICK = replace(
    LEARNING_CHECK,
    train=replace(LEARNING_CHECK.train, steps=300, batch_size=32, validation_rows=128),
    pgin=PGINTrainConfig(max_steps=300, validation_rows=128),
    seeds=(0,),
)
"""`--quick`: the learning check's data, one seed, a smaller budget (batches of 32, at most 300
steps, PGIN's validation on 128 users): a smoke run of the whole pipeline; with one seed no
ordering is claimed."""


@dataclass
class SeedRun(SeedTables):
    """Everything one seed measured (HR in percent)."""

    diagnostics: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Run(SeedsRun[SeedRun]):
    """The seeds' runs and their aggregate: per table, row and column the values over seeds."""

    def table_rows(self, table: str) -> dict[str, list[str]]:
        first = self.seeds[0].tables.get(table, {})
        return {row: list(columns) for row, columns in first.items()}


TABLE_1 = "Table 1"
TABLE_2 = "Table 2"
GIVEN = "given category"
HR_VS_K = "HR vs K"
SPLITS = "serving splits"
SHORT_ALONE = "short-term vector alone"
CATALOGUE_SHORT = "ULIM, short-term loss with catalogue-wide negatives"
PGIN_ACCURACY = "PGIN top-K accuracy"
POPULARITY = "global popularity"
FREQUENCY = "frequency cascade (whole history)"
FREQUENCY_RECENT = "frequency cascade (recent window)"


def _data_summary(log: Interactions, split: Split, held: Samples, cfg: DemoConfig) -> dict[str, Any]:
    """The log's sizes and how much of the test targets' category the windows hold."""
    cats = held.categories[:, None]
    seq = cfg.seq
    _, full = category_subsequences(log, held, cats, seq.long_length, seq.max_subsequence)
    _, short = category_subsequences(log, held, cats, seq.short_length, seq.max_subsequence)
    sizes = np.bincount(log.item_category, minlength=log.num_categories)
    return {
        "source": log.source,
        "protocol": split.describe(cfg.seen),
        "users": log.num_users,
        "items": log.num_items,
        "categories": log.num_categories,
        "category_size_median": float(np.median(sizes)),
        "events": log.num_events,
        "mean_length": float(log.lengths().mean()),
        "test_targets": held.size,
        "target_category_in_short_sequence": float(short.any(axis=2).mean()),
        "target_category_in_long_window": float(full.any(axis=2).mean()),
        # ULIM-half-sequence reads ceil(n / 2) of the n behaviours of S_c: every S_c of 2 or more changes
        "half_sequence_changes_input": float((full.sum(axis=2) >= 2).mean()),
    }


def _percent(hr: dict[int, float]) -> dict[str, float]:
    return {str(n): round(100.0 * v, 2) for n, v in hr.items()}


def _training(curve: Curve | PGINCurve, seconds: float, cpu_seconds: float) -> dict[str, float]:
    tail = curve.train[-max(1, model_tail(curve)) :]
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),  # of this process: what the budget counts
        "steps": len(curve.train),
        "best_step": curve.best_step,
        "stopped_early": float(curve.stopped_early),
        "lr_cuts": len(curve.cut_steps) if isinstance(curve, Curve) else 0,  # PGIN's: no schedule
        "train_loss": round(float(np.mean(tail)), 4),
        "valid_loss_init": round(curve.valid[0], 4),
        "valid_loss_best": round(curve.best_valid, 4),
        "learned_nothing": round(curve.chance, 4),
    }


def model_tail(curve: Any) -> int:
    """The training loss reported is the mean over the steps since the last validation."""
    steps = curve.valid_steps
    return int(steps[-1] - steps[-2]) if len(steps) > 1 else len(curve.train)


@dataclass(frozen=True)
class _Setting:
    """What every stage of one seed reads: the config, the log and its split, the test targets and
    their seen items, the planted truth (synthetic data only, for the diagnostics), how to
    evaluate, and where progress goes."""

    cfg: DemoConfig
    log: Interactions
    split: Split
    held: Samples  # the test requests' targets
    seen: SeenItems | None  # their seen items, when evaluation excludes them
    synthetic: SyntheticData | None
    visit_start: BoolArray | None  # (E,) the log's visit starts, PGIN's targets (synthetic data only)
    ev: EvalConfig
    stream: TextIO | None


def _seed_job(job: tuple[DemoConfig, int, bool]) -> SeedRun:
    cfg, seed, verbose = job
    set_quiet(True)  # two processes' bars would garble one terminal: the workers log plain lines
    return run_seed(cfg, seed, sys.stderr if verbose else None)


def run(cfg: DemoConfig, stream: TextIO | None = sys.stderr, jobs: int = 1) -> Run:
    """Every seed: generate (or load), train, retrieve, measure; then the claims over seeds."""
    if not isinstance(cfg, DemoConfig):
        raise TypeError(f"cfg: expected a DemoConfig, got {type(cfg).__name__}")
    jobs = require_positive_int("jobs", jobs)
    start = time.perf_counter()
    result = Run(config=asdict(cfg), seeds=[])
    if jobs > 1 and len(cfg.seeds) > 1:
        # Each seed is deterministic on its own, so running them in processes changes no number.
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            result.seeds = list(pool.map(_seed_job, [(cfg, seed, stream is not None)
                                                     for seed in cfg.seeds]))
    else:
        result.seeds = [run_seed(cfg, seed, stream) for seed in cfg.seeds]
    result.claims = claims(result, cfg)
    result.seconds = round(time.perf_counter() - start, 1)
    return result


def _log_of(cfg: DemoConfig, seed: int) -> tuple[Interactions, SyntheticData | None, BoolArray | None]:
    """The user's log (the same for every seed), or the synthetic data of `seed`; the log's visit
    starts where it has them (the synthetic data's)."""
    if cfg.data_path:
        return load_interactions(cfg.data_path, cfg.data_format), None, None
    data = generate(replace(cfg.data, seed=seed))
    synthetic = from_synthetic(data)
    return synthetic.interactions, data, synthetic.visit_start


def run_seed(cfg: DemoConfig, seed: int, stream: TextIO | None = sys.stderr) -> SeedRun:
    """One seed: data seed (synthetic data) and training seed both `seed`."""
    if stream is not None:
        stream.write(f"seed {seed}\n")
    cpu = time.process_time()
    clock = time.perf_counter()
    log, synthetic, visit_start = _log_of(cfg, seed)
    split = leave_last_out(log)
    held = request_samples(log, split.test)
    if held.size == 0:
        raise ValueError(f"data: no user of {log.source or 'the log'} has the 3 events leave-last-out "
                         "needs for a test target")
    cfg = replace(cfg, train=replace(cfg.train, seed=seed))
    setting = _Setting(
        cfg, log, split, held, samples_seen(log, held) if cfg.seen == "excluded" else None, synthetic,
        visit_start, EvalConfig(cutoffs=cfg.cutoffs, backend=cfg.backend, seen=cfg.seen), stream,
    )
    result = SeedRun(seed=seed, data=_data_summary(log, split, held, cfg))
    result.seconds["data"] = round(time.perf_counter() - clock, 1)
    clock = time.perf_counter()
    frequency = _frequency_baselines(setting, result)
    result.seconds["baselines"] = round(time.perf_counter() - clock, 1)
    clock = time.perf_counter()
    pgin, routes, half_routes = _pgin_routes(setting, result, frequency)
    _single_vector_models(setting, result)
    _ulim_variants(setting, result, pgin, routes, half_routes)
    result.seconds["models"] = round(time.perf_counter() - clock, 1)
    result.seconds["cpu"] = round(time.process_time() - cpu, 1)
    return result


def _frequency_baselines(setting: _Setting, result: SeedRun) -> dict[str, Routes]:
    """The non-learned rows of every table (refimpl.baselines), from the training data only."""
    cfg, log, split, held, ev, seen = (setting.cfg, setting.log, setting.split, setting.held, setting.ev,
                                       setting.seen)
    max_k = min(max((cfg.num_routes, *cfg.k_values)), log.num_categories)
    index = baselines.popularity_index(log, split)
    whole = baselines.frequency_routes(log, held, max_k)
    recent = baselines.frequency_routes(log, held, max_k, window=cfg.seq.short_length)
    k = min(cfg.num_routes, max_k)
    t1 = result.tables.setdefault(TABLE_1, {})
    t1[POPULARITY] = _percent(baselines.popularity_hit_rates(log, split, held, ev, index, seen))
    splits = result.tables.setdefault(SPLITS, {})
    for name, routes in ((FREQUENCY, whole), (FREQUENCY_RECENT, recent)):
        serving = baselines.frequency_serving(log, split, routes, index)
        t1[name] = _percent(serving.hit_rates(held.targets, ev, k, seen=seen))
        if routes is whole:
            for split_name in SERVING_SPLITS:
                splits[f"{name}, {split_name}"] = _percent(
                    serving.hit_rates(held.targets, ev, k, split_name, seen))
            for kk in cfg.k_values:
                result.tables.setdefault(HR_VS_K, {})[f"frequency cascade, K = {kk}"] = _percent(
                    serving.hit_rates(held.targets, ev, min(kk, max_k), seen=seen)
                )
    truth = baselines.frequency_serving(log, split, _given_category(held), index)
    result.tables.setdefault(GIVEN, {})["in-category popularity"] = _percent(
        truth.hit_rates(held.targets, ev, seen=seen)
    )
    return {"whole": whole, "recent": recent}


def _given_category(held: Samples) -> Routes:
    return Routes.equal(held.categories[:, None])


def _pipeline(setting: _Setting) -> ULIMPipelineConfig:
    """The demo's settings as the one interface's (refimpl.pipelines.registry) config."""
    cfg = setting.cfg
    return ULIMPipelineConfig(cfg.seq, cfg.train, cfg.pgin, setting.ev, cfg.num_routes)


def _pgin_routes(
    setting: _Setting, result: SeedRun, frequency: dict[str, Routes]
) -> tuple[TrainedModel, Routes, Routes]:
    """Trains PGIN (through refimpl.pipelines.registry: categories only, the one stopping rule),
    records its top-K accuracy next to the non-learned category predictors
    (refimpl.category_baselines, their Markov counts and prior from PGIN's training targets); PGIN,
    and its routes (S, max K) reading the whole long window and reading its most recent half per
    user (ULIM-half-sequence's routes)."""
    cfg, log, split, held = setting.cfg, setting.log, setting.split, setting.held
    pgin_cfg = replace(cfg.pgin, seed=cfg.train.seed)
    cpu = time.process_time()
    pgin = train("PGIN", log, split, _pipeline(setting), visit_start=setting.visit_start, stream=setting.stream)
    cpu = time.process_time() - cpu
    max_k = min(max((cfg.num_routes, *cfg.k_values)), log.num_categories)
    routes = pgin_routes(pgin.model, log, held, cfg.seq, max_k)
    half_routes = pgin_routes(pgin.model, log, held, cfg.seq, max_k, long_input="recent_half")
    result.training["PGIN"] = _training(pgin.curve, pgin.seconds, cpu)
    pgin_train, _ = hold_out_last(pgin_targets(log, split, cfg.seq, setting.visit_start),
                                  pgin_cfg.validation_rows, pgin_cfg.seed)
    predictions = {"PGIN": routes.categories, **baseline_predictions(
        log, pgin_train, held, cfg.seq, cfg.seq.short_length, max_k)}
    result.tables[PGIN_ACCURACY] = {
        name: {f"top-{k}": round(100 * top_k_accuracy(top[:, :k], held.categories), 2)
               for k in sorted({cfg.num_routes, *cfg.k_values}) if k <= max_k}
        for name, top in predictions.items()
    }
    return pgin, routes, half_routes


def _single_vector_models(setting: _Setting, result: SeedRun) -> None:
    """Trains and evaluates YouTube DNN and MIND (Table 1) through refimpl.pipelines.registry."""
    log, split = setting.log, setting.split
    cpu = time.process_time()
    youtube = train("YouTube DNN", log, split, _pipeline(setting), stream=setting.stream)
    result.training["YouTube DNN"] = _training(youtube.curve, youtube.seconds, time.process_time() - cpu)
    result.tables[TABLE_1]["YouTube DNN"] = _hit_rates(evaluate(youtube).values)
    if setting.synthetic is not None:
        tower = ulim_model.catalogue_vectors(youtube.model.params, log.item_category)
        result.diagnostics["YouTube DNN item agreement"] = round(
            item_agreement(tower, setting.synthetic, np.random.Generator(np.random.PCG64(0))), 3
        )
    cpu = time.process_time()
    mind = train("MIND", log, split, _pipeline(setting), stream=setting.stream)
    result.training["MIND"] = _training(mind.curve, mind.seconds, time.process_time() - cpu)
    result.tables[TABLE_1]["MIND"] = _hit_rates(evaluate(mind).values)


def _hit_rates(values: dict[str, float]) -> dict[str, float]:
    """The interface's {"HR@N": percent} as a table row {"N": percent, 2 decimals}."""
    return {key.removeprefix("HR@"): round(value, 2) for key, value in values.items()}


def _ulim_variants(setting: _Setting, result: SeedRun, pgin: TrainedModel, routes: Routes,
                   half_routes: Routes) -> None:
    """Trains ULIM and its ablations through refimpl.pipelines.registry, routed by `pgin`, and
    evaluates them (Tables 1 and 2, HR against K, the serving splits, and each given the true next
    category) by the cascade's parts."""
    cfg, log, split, held, ev, seen = (setting.cfg, setting.log, setting.split, setting.held, setting.ev,
                                       setting.seen)
    k = min(cfg.num_routes, routes.categories.shape[1])
    variants = (  # (row, model of refimpl.pipelines.registry.MODELS, routes, the short-term vector alone)
        ("ULIM", "ULIM", routes, True),
        ("ULIM-half-sequence", "ULIM-half-sequence", half_routes, False),
        ("ULIM-self-attention", "ULIM-self-attention", routes, False),
        (CATALOGUE_SHORT, "ULIM-catalogue-negatives", routes, True),
    )[: None if cfg.ablations else 1]
    t2 = result.tables.setdefault(TABLE_2, {})
    for name, model_name, variant_routes, short_alone in variants:
        cpu = time.process_time()
        trained = train(model_name, log, split, _pipeline(setting), router=pgin, stream=setting.stream)
        model = trained.model
        result.training[name] = _training(trained.curve, trained.seconds, time.process_time() - cpu)
        index = ulim_index(model, log, ev)
        serving = ulim_serving(model, log, held, variant_routes, cfg.seq, ev, index)
        t2[name] = _percent(serving.hit_rates(held.targets, ev, k, seen=seen))
        if variant_routes is not routes:
            t2[f"{name} (ULIM's routes)"] = _percent(
                ulim_serving(model, log, held, routes, cfg.seq, ev, index).hit_rates(
                    held.targets, ev, k, seen=seen)
            )
        given = ulim_serving(model, log, held, _given_category(held), cfg.seq, ev, index)
        result.tables[GIVEN][name] = _percent(given.hit_rates(held.targets, ev, seen=seen))
        if short_alone:
            result.tables.setdefault(SHORT_ALONE, {})[name] = _percent(
                search_hit_rates(index, given.short_vectors[:, None, :], held.targets, ev, seen)
            )
        if name == "ULIM":
            result.tables[TABLE_1][name] = t2[name]
            _ulim_details(setting, result, serving, given, k)
    if not cfg.ablations:
        del result.tables[TABLE_2]  # ULIM's row alone is Table 1's


def _ulim_details(setting: _Setting, result: SeedRun, serving: Serving, given: Serving,
                  k: int) -> None:
    """ULIM's HR against K, the serving splits, and the planted-truth diagnostics."""
    cfg, held, ev, seen = setting.cfg, setting.held, setting.ev, setting.seen
    max_k = serving.routes.categories.shape[1]
    for kk in cfg.k_values:
        result.tables[HR_VS_K][f"ULIM, K = {kk}"] = _percent(
            serving.hit_rates(held.targets, ev, min(kk, max_k), seen=seen))
    for split in SERVING_SPLITS:
        result.tables[SPLITS][f"ULIM, {split}"] = _percent(
            serving.hit_rates(held.targets, ev, k, split, seen)
        )
    data = setting.synthetic
    if data is None:
        return
    vectors = given.index.catalogue.vectors[np.argsort(given.index.catalogue.item_ids)]
    result.diagnostics["ULIM item agreement"] = round(
        item_agreement(vectors, data, np.random.Generator(np.random.PCG64(0))), 3
    )
    learned, popularity, count = taste_agreement(
        data, held.users, given.routes.categories, given.long_vectors, given.present, vectors
    )
    result.diagnostics["ULIM taste agreement (given category)"] = round(learned, 3)
    result.diagnostics["popularity taste agreement (given category)"] = round(popularity, 3)
    result.diagnostics[TASTE_USERS] = count


TASTE_USERS = "taste agreement users"


SERVING_SPLITS = ("even", "weighted", "score")


def claims(result: Run, cfg: DemoConfig) -> list[dict[str, Any]]:
    """The orderings the ULIM paper claims, each checked over seeds by refimpl.spread's rule at
    every cut-off: "reproduced" only when it holds beyond the spread at every cut-off (for PGIN's
    top-K accuracy, at every K)."""
    checks = [
        ("Table 1: ULIM > YouTube DNN", TABLE_1, "ULIM", TABLE_1, "YouTube DNN"),
        ("Table 1: ULIM > MIND", TABLE_1, "ULIM", TABLE_1, "MIND"),
        ("Table 1: MIND > YouTube DNN", TABLE_1, "MIND", TABLE_1, "YouTube DNN"),
        ("ULIM > frequency cascade (whole history)", TABLE_1, "ULIM", TABLE_1, FREQUENCY),
        ("ULIM > frequency cascade (recent window)", TABLE_1, "ULIM", TABLE_1, FREQUENCY_RECENT),
        ("YouTube DNN > global popularity", TABLE_1, "YouTube DNN", TABLE_1, POPULARITY),
        ("MIND > global popularity", TABLE_1, "MIND", TABLE_1, POPULARITY),
        ("Table 2: ULIM > ULIM-half-sequence", TABLE_2, "ULIM", TABLE_2, "ULIM-half-sequence"),
        ("Table 2: ULIM > ULIM-self-attention", TABLE_2, "ULIM", TABLE_2, "ULIM-self-attention"),
        ("given category: ULIM > in-category popularity", GIVEN, "ULIM", GIVEN,
         "in-category popularity"),
        ("given category: ULIM > ULIM-half-sequence", GIVEN, "ULIM", GIVEN, "ULIM-half-sequence"),
        ("given category: ULIM > ULIM-self-attention", GIVEN, "ULIM", GIVEN,
         "ULIM-self-attention"),
        ("short-term negatives: catalogue-wide > in-category (Table 1 row)", TABLE_2,
         CATALOGUE_SHORT, TABLE_2, "ULIM"),
        ("short-term vector alone: catalogue-wide > in-category negatives", SHORT_ALONE,
         CATALOGUE_SHORT, SHORT_ALONE, "ULIM"),
        ("serving: even split > weighted split", SPLITS, "ULIM, even", SPLITS, "ULIM, weighted"),
        ("serving: even split > merge by score", SPLITS, "ULIM, even", SPLITS, "ULIM, score"),
        ("serving: weighted split > even split", SPLITS, "ULIM, weighted", SPLITS, "ULIM, even"),
        ("serving: merge by score > even split", SPLITS, "ULIM, score", SPLITS, "ULIM, even"),
    ]
    for bar in ("frequency (whole history)", f"frequency (last {cfg.seq.short_length})",
                "Markov (previous category)", "frequency x Markov"):
        checks.append((f"PGIN > {bar} (top-K accuracy)", PGIN_ACCURACY, "PGIN", PGIN_ACCURACY, bar))
    low, high = min(cfg.k_values), cfg.num_routes
    if high in cfg.k_values and high != low:
        checks.append((f"HR against K: ULIM K = {high} > K = {low}", HR_VS_K,
                       f"ULIM, K = {high}", HR_VS_K, f"ULIM, K = {low}"))
    out = []
    present = result.seeds[0].tables
    for text, table_a, row_a, table_b, row_b in checks:
        if row_a not in present.get(table_a, {}) or row_b not in present.get(table_b, {}):
            continue  # a row the run did not train (cfg.ablations)
        verdicts = [
            ordering(row_a, result.values(table_a, row_a, c), row_b,
                     result.values(table_b, row_b, c))
            for c in result.table_rows(table_a)[row_a]
        ]
        held = all(v == f"{row_a} > {row_b}" for v in verdicts)
        reversed_ = all(v == f"{row_b} > {row_a}" for v in verdicts)
        if len(result.seeds) < MIN_SEEDS:
            verdict = FEW_SEEDS.format(seeds=len(result.seeds))
        else:
            verdict = "reproduced" if held else ("reversed" if reversed_ else "not beyond the spread")
        out.append({"claim": text, "verdict": verdict, "per_cutoff": verdicts})
    return out


FEW_SEEDS = "{seeds} seed(s): no ordering claimed (the rule needs at least 3)"


def _format_table(result: Run, table: str, title: str) -> str:
    rows = result.table_rows(table)
    if not rows:
        return ""
    width = max(len(name) for name in rows) + 2
    columns = next(iter(rows.values()))
    label = "" if table == PGIN_ACCURACY else "HR@"
    header = f"{'':<{width}}" + "".join(f"{label + c:>16}" for c in columns)
    lines = [title, header, "-" * len(header)]
    for name, cols in rows.items():
        lines.append(f"{name:<{width}}" + "".join(
            f"{format_mean_std(result.values(table, name, c)):>16}" for c in cols))
    return "\n".join(lines)


def _format_training(result: Run) -> str:
    names = list(result.seeds[0].training)
    keys = ("train_loss", "valid_loss_best", "learned_nothing", "best_step", "steps", "lr_cuts",
            "stopped_early", "cpu_seconds")
    width = max(len(n) for n in names) + 2
    header = f"{'':<{width}}" + "".join(f"{k:>18}" for k in keys)
    lines = ["Training (mean +- std over seeds): losses against the learned-nothing level; "
             "stopped_early 1 = the stopping rule ended it, 0 = the step cap",
             header, "-" * len(header)]
    for name in names:
        cells = []
        for key in keys:
            digits = 2 if "loss" in key or key in ("learned_nothing", "stopped_early") else 0
            cells.append(format_mean_std([s.training[name][key] for s in result.seeds], digits))
        lines.append(f"{name:<{width}}" + "".join(f"{cell:>18}" for cell in cells))
    return "\n".join(lines)


def format_report(result: Run) -> str:
    """The tables as text: every entry mean +- std over the seeds (HR in percent)."""
    k = result.config["num_routes"]
    data = result.seeds[0].data
    cutoffs = result.config["cutoffs"]
    share_catalogue = ", ".join(f"{100 * n / data['items']:.2g}%" for n in cutoffs)
    share_category = ", ".join(f"{100 * n / data['category_size_median']:.2g}%" for n in cutoffs)
    paper = " / ".join(
        f"{name} {'/'.join(str(v) for v in values)}" for name, values in PAPER_TABLE_1.items()
    )
    diagnostics = {
        name: format_mean_std([s.diagnostics[name] for s in result.seeds], 0 if name == TASTE_USERS else 3)
        for name in result.seeds[0].diagnostics
    }
    parts = [
        f"data: {data['source']}: {data['users']} users, {data['items']} items, {data['categories']} "
        f"categories (median {data['category_size_median']:.0f} items), mean length "
        f"{data['mean_length']:.0f}; seeds {[s.seed for s in result.seeds]}",
        f"protocol: {data['protocol']}",
        f"cut-offs N = {cutoffs}: {share_catalogue} of the catalogue, {share_category} of a "
        f"median category (the paper: N = 500-2,000 of tens of millions of items, categories "
        f"much larger than N)",
        _format_training(result),
        _format_table(result, TABLE_1, f"Table 1: HR@N (%), ULIM with PGIN's top-{k} "
                      f"categories; non-learned baselines first"),
        f"the paper's Table 1 (Taobao, HR@500/1000/2000): {paper}",
        _format_table(result, TABLE_2, f"Table 2: ablations, HR@N (%), top-{k} categories")
        or "Table 2 (ablations): not run (refimpl demo ulim --ablations trains them)",
        _format_table(result, GIVEN, "Given the true next category (one route, no PGIN)"),
        _format_table(result, HR_VS_K, "HR@N (%) against K"),
        _format_table(result, SPLITS, f"Serving: how N is split between routes (top-{k})"),
        _format_table(result, SHORT_ALONE, "The short-term vector alone searching the whole pool"),
        _format_table(result, PGIN_ACCURACY, "Category prediction: top-K accuracy (%)"),
        "Planted-truth diagnostics: " + "; ".join(f"{n} {v}" for n, v in diagnostics.items())
        if diagnostics else "",
        "Claims (rule: mean difference > sum of the stds, at every cut-off):\n" + "\n".join(
            f"  {c['claim']}: {c['verdict']}" for c in result.claims),
        f"total {result.seconds:.1f} s wall; CPU per seed (s): "
        + ", ".join(f"{s.seconds['cpu']:.0f}" for s in result.seeds),
    ]
    return "\n\n".join(part for part in parts if part)


def save_plot(result: Run, path: Path) -> bool:
    """HR@N against K as a PNG; False (nothing written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ks = list(result.config["k_values"])
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for cutoff in result.config["cutoffs"]:
        for model in ("ULIM", "frequency cascade"):
            means = [float(np.mean(result.values(HR_VS_K, f"{model}, K = {k}", str(cutoff))))
                     for k in ks]
            axes.plot(ks, means, marker="o", linestyle="-" if model == "ULIM" else ":",
                      label=f"{model} HR@{cutoff}")
    axes.set_xlabel("K (PGIN categories)")
    axes.set_ylabel("HR@N (%)")
    axes.set_title("ULIM: sensitivity to K")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refimpl demo ulim",
        description="Train ULIM, its ablations and the baselines on planted-interest data (or on "
        "your log: --data PATH --format FMT) and print the ULIM paper's tables.",
    )
    parser.add_argument("--quick", action="store_true", help="a small run (well under a minute)")
    parser.add_argument("--out", default="results.json", help="JSON results file")
    parser.add_argument("--seeds", type=int, default=None,
                        help="number of seeds, 0..S-1 (default 3; every entry is mean +- std)")
    parser.add_argument("--plot", default=None, help="PNG of HR against K (needs matplotlib)")
    parser.add_argument(
        "--backend", choices=BACKENDS, default=None, help="retrieval back end (default: exact)",
    )
    parser.add_argument("--data", default=None, metavar="PATH",
                        help="your interaction log instead of the synthetic data (a directory for "
                             "movielens-100k, movielens-1m and recbole; the CSV file for taobao)")
    parser.add_argument("--format", choices=FORMATS, default=None, dest="data_format",
                        help="the format of --data")
    parser.add_argument("--seen", choices=SEEN_POLICIES, default=None,
                        help=f"seen items in the ranked lists: kept or excluded (default {DEFAULT_SEEN_POLICY})")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="seeds run at once, one process each (default 2)")
    parser.add_argument("--users", type=int, default=None, help="override the number of users")
    parser.add_argument("--items", type=int, default=None, help="override the number of items")
    parser.add_argument("--steps", type=int, default=None, help="override the training steps")
    parser.add_argument("--ablations", action="store_true",
                        help="also train Table 2's ablations (ULIM-half-sequence, ULIM-self-attention, "
                             "ULIM with catalogue-wide short-term negatives): 2.0x the CPU")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (none off a terminal either)")
    return parser


def config_for(args: argparse.Namespace) -> DemoConfig:
    """The demo config the command-line options select."""
    cfg = QUICK if args.quick else DEFAULT
    data = cfg.data
    if args.seeds is not None:
        cfg = replace(cfg, seeds=tuple(range(args.seeds)))
    if args.users is not None:
        data = replace(data, num_users=args.users)
    if args.items is not None:
        data = replace(data, num_items=args.items)
    train = cfg.train
    if args.steps is not None:
        train = replace(train, steps=args.steps)
    cfg = replace(cfg, data=data, train=train)
    if args.seen is not None:
        cfg = replace(cfg, seen=args.seen)
    if args.ablations:
        cfg = replace(cfg, ablations=True)
    if args.data is not None:
        cfg = replace(cfg, data_path=str(args.data), data_format=args.data_format or "")
    return cfg if args.backend is None else replace(cfg, backend=args.backend)


def main(argv: list[str]) -> int:
    """`refimpl demo ulim`; returns the exit status (2 for a usage error, as argparse)."""
    parser = _parser()
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    if (args.data is None) != (args.data_format is None):
        parser.error("--data and --format go together")
    refuse_bad_flags(args, counts=("seeds", "users", "items", "steps", "jobs", "threads"), outputs=("out", "plot"))
    cfg = config_for(args)
    with blas_threads(args.threads):
        result = run(cfg, jobs=args.jobs)
    print(format_report(result))
    Path(args.out).write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    print(f"\nresults written to {args.out}")
    if args.plot is not None:
        if save_plot(result, Path(args.plot)):
            print(f"plot written to {args.plot}")
        else:
            print("plot skipped: matplotlib is not installed (pip install refimpl[plot])",
                  file=sys.stderr)
    return 0
