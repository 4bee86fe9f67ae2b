"""PGIN, ULIM's category predictor, trained and measured on any interaction log against the
non-learned next-category predictors (spec/pgin.md#learning-check).

- inputs (`pgin_inputs`): the most recent behaviours for the two MHSA inputs, the pointer's
  deduplicated category history from the long window (or its most recent half per user, the routes
  of ULIM-half-sequence), the user's profile fields one-hot as the user features
  (refimpl.pipelines.inputs.profile_features); built for every target at once from per-user prefix
  statistics, so that a training step only indexes rows;
- users are split into training, validation and test users (`split_users`); the Markov counts and
  the tie-break prior come from the training users only;
- targets: the training events whose category differs from the event before (a change of
  category is what PGIN predicts), validated on the last such target of up to `validation_rows`
  users (`hold_out_last`);
- training (`train_pgin_to_convergence`, the demo's `train_pgin`): refimpl.train.fit, the one
  loop of every model: Adam on random batches of training targets; every `eval_every` steps the
  mean loss over the validation targets; stop when it has not fallen by more than
  `min_improvement` for `patience` evaluations, or at `max_steps`; the params at the lowest
  validation loss are kept. ln C, the loss of a model that learned nothing (y uniform), and
  the loss of the training users' category frequencies are recorded beside it;
- evaluation (`run_pgin_experiment`): top-k accuracy on every target of the test users, for PGIN
  and for the frequency predictor (whole long window and recent window) and the Markov predictor.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from typing import TextIO

import numpy as np

from refimpl._check import Array, BoolArray, IntArray, require_choice, require_int, require_positive_int, require_real
from refimpl.category_baselines import (
    category_prior,
    frequency_markov_top_k,
    markov_top_k,
    rank_by_frequency,
    top_k_accuracy,
    transition_counts,
)
from refimpl.data.interactions import Interactions, from_synthetic
from refimpl.data.protocols import Split, leave_last_out
from refimpl.data.synthetic import SyntheticConfig, generate
from refimpl.models import pgin as pgin_model
from refimpl.models._params import Params
from refimpl.pipelines.evaluation import Routes
from refimpl.pipelines.inputs import (
    LONG_INPUTS,
    Samples,
    profile_features,
    recent_window,
    training_samples,
)
from refimpl.pipelines.ulim import SequenceConfig
from refimpl.train import DTYPES, TrainConfig, fit, seeded_rng

__all__ = [
    "pgin_targets",
    "POINTER_HISTORIES",
    "PGINCurve",
    "PGINExperiment",
    "PGINResult",
    "PGINRun",
    "PGINTrainConfig",
    "baseline_predictions",
    "category_stats",
    "pgin_inputs",
    "pgin_routes",
    "run_pgin_experiment",
    "train_pgin",
]

# ---------------------------------------------------------------- inputs

POINTER_HISTORIES = ("deduplicated", "sampled")
"""The pointer's history: the deduplicated most recent categories (spec/pgin.md, the model's
contract), or the categories of `pgin_history` behaviours sampled evenly over the long window,
duplicates kept (the pointer then sums a category's weights: its counts reach y_poi)."""


def sampled_window(
    log: Interactions, samples: Samples, count: int, length: int
) -> tuple[IntArray, BoolArray]:
    """`count` behaviours spaced s = max(1, length // count) apart over the recent `length`,
    ending at the last behaviour before each target: items, mask (S, count), oldest first, valid
    positions first. With count = length it is `recent_window`."""
    stride = max(1, length // count)
    newest_first = samples.positions[:, None] - 1 - stride * np.arange(count)[None, :]
    start = np.maximum(samples.positions - length, 0)
    filled = (newest_first >= start[:, None]).sum(axis=1)
    age = filled[:, None] - 1 - np.arange(count)[None, :]  # slot i holds the age-th newest
    mask = age >= 0
    position = np.take_along_axis(newest_first, np.maximum(age, 0), axis=1)
    ids = log.items[np.where(mask, log.user_offsets[samples.users][:, None] + position, 0)]
    items: IntArray = np.where(mask, ids, 0)
    return items, mask


@dataclass(frozen=True)
class CategoryStats:
    """Each target's category statistics over the recent `length` behaviours before it."""

    counts: Array  # (S, C) how often each category occurs
    last_seen: IntArray  # (S, C) position of its last occurrence in the sequence, -1 if absent


def _window_start(samples: Samples, length: int, long_input: str) -> IntArray:
    """Where each target's long window starts: `length` behaviours back, or (long_input
    "recent_half") the most recent ceil(n / 2) of the n behaviours the window holds."""
    require_choice("long_input", long_input, LONG_INPUTS)
    count = np.minimum(samples.positions, require_positive_int("length", length))
    if long_input == "recent_half":
        count = count - count // 2
    result: IntArray = samples.positions - count
    return result


def category_stats(log: Interactions, samples: Samples, length: int, long_input: str = "whole") -> CategoryStats:
    """Counts and last occurrences (S, C) of each target's recent `length` behaviours (or the most
    recent half of them per target, `long_input`), from one prefix sum and one running maximum per
    user (O(T C) per user, whatever the window)."""
    if not isinstance(log, Interactions):
        raise TypeError(f"log: expected an Interactions, got {type(log).__name__}")
    samples.check_against(log)
    window_start = _window_start(samples, length, long_input)
    c = log.num_categories
    counts = np.zeros((samples.size, c))
    last_seen = np.full((samples.size, c), -1, dtype=np.int64)
    for user in np.unique(samples.users):
        rows = np.flatnonzero(samples.users == user)
        categories = log.item_category[log.sequence(int(user))]
        t = categories.shape[0]
        seen = np.zeros((t + 1, c), dtype=np.int64)
        seen[np.arange(1, t + 1), categories] = 1
        prefix = np.cumsum(seen, axis=0)  # prefix[p] counts positions < p
        latest = np.full((t + 1, c), -1, dtype=np.int64)
        latest[np.arange(1, t + 1), categories] = np.arange(t)
        latest = np.maximum.accumulate(latest, axis=0)  # latest[p]: last position < p
        positions = samples.positions[rows]
        start = window_start[rows]
        counts[rows] = prefix[positions] - prefix[start]
        in_window = latest[positions]
        last_seen[rows] = np.where(in_window >= start[:, None], in_window, -1)
    return CategoryStats(counts, last_seen)


def history_from_stats(stats: CategoryStats, max_history: int) -> tuple[IntArray, BoolArray]:
    """The pointer's history (S, P): the P most recently seen categories, oldest first, padded
    with 0 on the right, as refimpl.data.category_history.merge_category_history builds it."""
    newest_first = np.argsort(-stats.last_seen, axis=1, kind="stable")
    filled = np.minimum((stats.last_seen >= 0).sum(axis=1), max_history)
    age = filled[:, None] - 1 - np.arange(max_history)[None, :]
    mask = age >= 0
    ids = np.take_along_axis(newest_first, np.clip(age, 0, newest_first.shape[1] - 1), axis=1)
    history: IntArray = np.where(mask, ids, 0).astype(np.int64)
    return history, mask


def pgin_inputs(
    log: Interactions,
    samples: Samples,
    seq: SequenceConfig,
    long_input: str = "whole",
    stats: CategoryStats | None = None,
    pointer_history: str = "deduplicated",
    read_items: bool = True,
) -> pgin_model.PGINBatch:
    """PGIN's batch for every target: the MHSA inputs are the most recent `pgin_long_length` and
    `pgin_short_length` behaviours; the pointer's history is deduplicated from the long window (the
    recent seq.long_length, or with long_input "recent_half" the most recent half of it per target),
    or sampled evenly over the long window (`pointer_history`); the user features are the profile
    fields one-hot (refimpl.pipelines.inputs.profile_features; ones (S, 1) for a log without).
    `stats` (category_stats over the long window) is computed when not given."""
    if not isinstance(seq, SequenceConfig):
        raise TypeError(f"seq: expected a SequenceConfig, got {type(seq).__name__}")
    require_choice("pointer_history", pointer_history, POINTER_HISTORIES)
    _read_items_flag(read_items)
    cats = log.item_category
    long, long_mask = recent_window(log, samples, min(seq.pgin_long_length, seq.long_length))
    short, short_mask = recent_window(log, samples, min(seq.pgin_short_length, seq.long_length))
    stats = category_stats(log, samples, seq.long_length, long_input) if stats is None else stats
    if pointer_history == "deduplicated":
        history, history_mask = history_from_stats(stats, seq.pgin_history)
    else:
        sampled, history_mask = sampled_window(log, samples, seq.pgin_history, seq.long_length)
        history = np.where(history_mask, cats[sampled], 0)
    return pgin_model.PGINBatch(
        user_features=profile_features(log, samples.users),
        long_items=long if read_items else np.zeros_like(long),
        long_categories=cats[long],
        long_mask=long_mask,
        short_items=short if read_items else np.zeros_like(short),
        short_categories=cats[short],
        short_mask=short_mask,
        history=history,
        history_mask=history_mask,
        label=samples.categories,
    )


def take_rows(batch: pgin_model.PGINBatch, rows: IntArray) -> pgin_model.PGINBatch:
    """The batch's rows `rows` (every field is indexed by the row on its first axis)."""
    return pgin_model.PGINBatch(
        batch.user_features[rows], batch.long_items[rows], batch.long_categories[rows],
        batch.long_mask[rows], batch.short_items[rows], batch.short_categories[rows],
        batch.short_mask[rows], batch.history[rows], batch.history_mask[rows],
        None if batch.label is None else batch.label[rows],
    )


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class PGINTrainConfig:
    """PGIN's model size and the stopping rule. Checked at construction."""

    dim: int = 16
    num_heads: int = 2
    mlp_hidden: tuple[int, ...] = (32,)
    lr: float = 3e-3
    batch_size: int = 128
    max_steps: int = 3_000
    eval_every: int = 50  # steps between two validation losses
    patience: int = 4  # evaluations without an improvement before stopping
    min_improvement: float = 1e-3  # nats: a smaller fall of the validation loss does not count
    eval_chunk: int = 1_024  # targets per forward pass when evaluating
    validation_rows: int = 1_024  # users whose last training target is held out (train_pgin)
    seed: int = 0
    dtype: str = "float64"  # of the params while training ("float32": cheaper steps); served in float64

    def __post_init__(self) -> None:
        for name in ("dim", "num_heads", "batch_size", "max_steps", "eval_every", "patience",
                     "eval_chunk", "validation_rows"):
            require_positive_int(f"cfg.{name}", getattr(self, name))
        if not isinstance(self.mlp_hidden, tuple):
            raise TypeError(f"cfg.mlp_hidden: expected a tuple of widths, got {self.mlp_hidden!r}")
        for width in self.mlp_hidden:
            require_positive_int("cfg.mlp_hidden", width)
        require_real("cfg.lr", self.lr, low=0.0, low_open=True)
        require_real("cfg.min_improvement", self.min_improvement, low=0.0)
        require_int("cfg.seed", self.seed, low=0)
        require_choice("cfg.dtype", self.dtype, DTYPES)


@dataclass(frozen=True)
class PGINCurve:
    """The losses of a training run: `train` per step; `valid` at `valid_steps` (step 0 = the
    init); `chance` = ln C; `prior` = the loss of predicting the training users' category
    frequencies for everyone; `best_step` = the kept params' step."""

    train: list[float]
    valid_steps: list[int]
    valid: list[float]
    chance: float
    prior: float
    best_step: int
    stopped_early: bool
    seconds: float

    @property
    def best_valid(self) -> float:
        return self.valid[self.valid_steps.index(self.best_step)]


@dataclass(frozen=True)
class PGINRun:
    params: Params
    config: pgin_model.PGINConfig
    curve: PGINCurve


def pgin_scores(
    params: Params, cfg: pgin_model.PGINConfig, batch: pgin_model.PGINBatch, chunk: int
) -> tuple[Array, float]:
    """y (S, C) and the mean loss over every labelled row, `chunk` rows per forward pass."""
    size = batch.history.shape[0]
    parts, total = [], 0.0
    for start in range(0, size, chunk):
        rows = np.arange(start, min(start + chunk, size))
        out, _ = pgin_model.pgin_forward(params, take_rows(batch, rows), cfg)
        parts.append(out.y)
        total += float(out.loss) * rows.shape[0] if out.loss is not None else 0.0
    return np.concatenate(parts), total / max(size, 1)


def train_pgin_to_convergence(
    num_categories: int,
    num_items: int,
    train_batch: pgin_model.PGINBatch,
    valid_batch: pgin_model.PGINBatch,
    cfg: PGINTrainConfig,
    prior: Array,
    name: str = "PGIN",
    stream: TextIO | None = sys.stderr,
) -> PGINRun:
    """Adam on random batches of `train_batch` under the one stopping rule of every model
    (refimpl.train.fit, with PGINTrainConfig's lr, eval_every, patience and min_improvement); the
    params at the lowest loss on `valid_batch`. `prior` (C,): the training users' category
    frequencies, whose loss is recorded beside ln C."""
    if train_batch.label is None or valid_batch.label is None:
        raise ValueError("train_batch, valid_batch: training needs labels, got None")
    model_cfg = pgin_model.PGINConfig(
        num_categories=num_categories, num_items=num_items,
        user_feature_dim=train_batch.user_features.shape[1], dim=cfg.dim,
        num_heads=cfg.num_heads, mlp_hidden=cfg.mlp_hidden,
    )
    rng = seeded_rng(cfg.seed)
    params = pgin_model.pgin_init(rng, model_cfg, np.dtype(cfg.dtype))
    # the user features are the one float input: in the params' dtype while training
    train_batch, valid_batch = (
        replace(b, user_features=b.user_features.astype(cfg.dtype)) for b in (train_batch, valid_batch))
    size = train_batch.history.shape[0]
    chance = float(np.log(num_categories))
    prior_loss = float(-np.mean(np.log(prior[valid_batch.label] + 1e-12)))
    rule = TrainConfig(lr=cfg.lr, eval_every=cfg.eval_every, patience=cfg.patience,
                       min_improvement=cfg.min_improvement)

    def step(p: Params, r: np.random.Generator) -> tuple[float, Params]:
        rows = np.sort(r.choice(size, size=min(cfg.batch_size, size), replace=False))
        return pgin_model.pgin_loss_and_grads(p, take_rows(train_batch, rows), model_cfg)

    def valid_fn(p: Params) -> float:
        return pgin_scores(p, model_cfg, valid_batch, cfg.eval_chunk)[1]

    start = time.perf_counter()
    params, curve = fit(name, params, step, valid_fn, chance, rule, cfg.max_steps, rng, stream)
    params = {key: np.asarray(value, dtype=np.float64) for key, value in params.items()}  # served in float64
    result = PGINCurve(
        curve.train, curve.valid_steps, curve.valid, chance, prior_loss, curve.best_step,
        curve.stopped_early, time.perf_counter() - start,
    )
    return PGINRun(params, model_cfg, result)


def hold_out_last(samples: Samples, rows: int, seed: int) -> tuple[Samples, Samples]:
    """(training, validation): the last target of `rows` users (drawn with `seeded_rng(seed, 1)`)
    is held out for validation; every other target trains. The validation targets come after their
    users' training targets in time, as the protocol's test targets come after them all."""
    last = np.flatnonzero(np.r_[samples.users[1:] != samples.users[:-1], True]) if samples.size else samples.users
    chosen = np.sort(seeded_rng(seed, 1).choice(last, size=min(rows, last.shape[0]), replace=False))
    keep = np.ones(samples.size, dtype=bool)
    keep[chosen] = False
    return samples.take(np.flatnonzero(keep)), samples.take(chosen.astype(np.int64))


def pgin_targets(log: Interactions, split: Split, seq: SequenceConfig,
                 visit_start: BoolArray | None = None) -> Samples:
    """PGIN's training targets: the visit starts where the log marks visits (PGIN predicts the
    category of the next visit, which may return to the current one), else the category changes."""
    if visit_start is None:
        return training_samples(log, split, seq.min_position, "category_changes")
    return training_samples(log, split, seq.min_position, "visit_starts", visit_start)


def train_pgin(
    log: Interactions,
    split: Split,
    seq: SequenceConfig,
    cfg: PGINTrainConfig,
    stream: TextIO | None = sys.stderr,
    read_items: bool = False,
    visit_start: BoolArray | None = None,
) -> PGINRun:
    """PGIN trained to convergence on the split's training events that open a visit (`visit_start`
    (E,), where the log marks visits, as the synthetic data does) or else whose category differs
    from the event before (at least seq.min_position earlier events), stopped on the last such
    target of up to cfg.validation_rows users (`hold_out_last`), reading categories only unless
    `read_items` (spec/pgin.md#learning-check; the demo's PGIN)."""
    if not isinstance(cfg, PGINTrainConfig):
        raise TypeError(f"cfg: expected a PGINTrainConfig, got {type(cfg).__name__}")
    if not isinstance(seq, SequenceConfig):
        raise TypeError(f"seq: expected a SequenceConfig, got {type(seq).__name__}")
    samples = pgin_targets(log, split, seq, visit_start)
    train, valid = hold_out_last(samples, cfg.validation_rows, cfg.seed)
    if train.size == 0 or valid.size == 0:
        raise ValueError(f"split: too few training events that change category ({samples.size}) to train "
                         "and validate PGIN")

    def inputs(rows: Samples) -> pgin_model.PGINBatch:
        return pgin_inputs(log, rows, seq, read_items=_read_items_flag(read_items))

    return train_pgin_to_convergence(
        log.num_categories, log.num_items, inputs(train), inputs(valid), cfg,
        category_prior(train.categories, log.num_categories), stream=stream,
    )


def _read_items_flag(value: object) -> bool:
    """read_items must be a bool (a truthy string would silently read the items)."""
    if not isinstance(value, bool):
        raise TypeError(f"read_items: expected a bool, got {value!r}")
    return value


def pgin_routes(
    run: PGINRun,
    log: Interactions,
    samples: Samples,
    seq: SequenceConfig,
    k: int,
    long_input: str = "whole",
    read_items: bool = False,
) -> Routes:
    """PGIN's top-k categories for every sample, most probable first (ties to the lower id), with
    their probabilities as weights, its pointer reading the long window (or the most recent half of
    it per sample, `long_input`); `read_items` as in training."""
    if not isinstance(run, PGINRun):
        raise TypeError(f"run: expected a PGINRun, got {type(run).__name__}")
    k = min(require_positive_int("k", k), log.num_categories)
    batch = pgin_inputs(log, samples, seq, long_input, read_items=_read_items_flag(read_items))
    y, _ = pgin_scores(run.params, run.config, replace(batch, label=None), PGINTrainConfig.eval_chunk)
    top = pgin_model.top_k_from_distribution(y, k)
    return Routes(top, np.take_along_axis(y, top, axis=1), np.ones(top.shape, dtype=bool))


# ---------------------------------------------------------------- the experiment


def split_users(num_users: int, valid_fraction: float, test_fraction: float, seed: int) -> tuple[IntArray, ...]:
    """(training, validation, test) user ids, ascending, a random partition drawn with `seed`."""
    if not (0 < valid_fraction and 0 < test_fraction and valid_fraction + test_fraction < 1):
        raise ValueError(
            f"valid_fraction, test_fraction: expected positive with a sum below 1, got "
            f"{valid_fraction}, {test_fraction}"
        )
    order = np.random.Generator(np.random.PCG64(seed)).permutation(num_users)
    n_valid = max(1, int(round(valid_fraction * num_users)))
    n_test = max(1, int(round(test_fraction * num_users)))
    return (
        np.sort(order[n_valid + n_test :]),
        np.sort(order[:n_valid]),
        np.sort(order[n_valid : n_valid + n_test]),
    )


def of_users(samples: Samples, users: IntArray) -> Samples:
    """The samples of the given users."""
    return samples.take(np.flatnonzero(np.isin(samples.users, users)))


def previous_categories(log: Interactions, samples: Samples) -> IntArray:
    """The category of the behaviour right before each target (S,); targets need position >= 1."""
    result: IntArray = log.item_category[log.items[log.user_offsets[samples.users] + samples.positions - 1]]
    return result


@dataclass(frozen=True)
class PGINExperiment:
    """One learning check: the data, PGIN's windows, its training, the split and the baselines."""

    data: SyntheticConfig
    seq: SequenceConfig
    train: PGINTrainConfig = field(default_factory=PGINTrainConfig)
    valid_fraction: float = 0.2
    test_fraction: float = 0.2
    recent_length: int = 100  # the recent window of the recent-frequency predictor
    ks: tuple[int, ...] = (1, 4)
    pointer_history: str = "deduplicated"  # POINTER_HISTORIES
    read_items: bool = False  # False: every behaviour's item id is 0, PGIN reads categories only


@dataclass(frozen=True)
class PGINResult:
    """Top-k accuracy (%) per predictor and k on the test users' targets, and PGIN's curve."""

    accuracy: dict[str, dict[int, float]]
    curve: PGINCurve
    test_targets: int


def baseline_predictions(
    log: Interactions,
    train: Samples,
    test: Samples,
    seq: SequenceConfig,
    recent_length: int,
    k: int,
    long_stats: CategoryStats | None = None,
) -> dict[str, IntArray]:
    """The non-learned predictors' top-k (S, k) for the `test` targets; the Markov counts and
    the tie-break prior come from the `train` targets only."""
    if not isinstance(log, Interactions):
        raise TypeError(f"log: expected an Interactions, got {type(log).__name__}")
    for name, rows in (("train", train), ("test", test)):
        if not isinstance(rows, Samples):
            raise TypeError(f"{name}: expected a Samples, got {type(rows).__name__}")
        rows.check_against(log)
        if rows.size == 0 or rows.positions.min() < 1:
            raise ValueError(f"{name}: expected at least one target, each with an event before it")
    require_positive_int("recent_length", recent_length)
    c = log.num_categories
    prior = category_prior(train.categories, c)
    whole = category_stats(log, test, seq.long_length) if long_stats is None else long_stats
    recent = category_stats(log, test, recent_length)
    counts = transition_counts(previous_categories(log, train), train.categories, c)
    previous = previous_categories(log, test)
    # One extra count per category keeps every prior positive, as the naive-Bayes ratio needs.
    smoothed = category_prior(np.concatenate([train.categories, np.arange(c)]), c)
    return {
        "frequency (whole history)": rank_by_frequency(whole.counts, whole.last_seen, k, prior),
        f"frequency (last {recent_length})": rank_by_frequency(recent.counts, recent.last_seen, k, prior),
        "Markov (previous category)": markov_top_k(counts, previous, k, prior),
        "frequency x Markov": frequency_markov_top_k(
            whole.counts, whole.last_seen, counts, previous, k, smoothed
        ),
    }


def other_user_rows(samples: Samples) -> IntArray:
    """A row of ANOTHER user for every row (S,): the rows shifted by the most rows any one user
    has (a user's rows are contiguous, so the shift always lands in another user's block).
    The negative control's inputs: PGIN predicting a target from someone else's history."""
    if np.unique(samples.users).shape[0] < 2:
        raise ValueError("samples: the control needs targets of at least two users")
    shift = int(np.bincount(samples.users).max())
    result: IntArray = (np.arange(samples.size) + shift) % samples.size
    return result


def run_pgin_experiment(
    exp: PGINExperiment, seed: int, stream: TextIO | None = sys.stderr, log: Interactions | None = None
) -> PGINResult:
    """Generate the data with `seed` (unless a log is given), take the training events of
    leave-last-out whose category changes, split the users with `seed`, train PGIN with `seed` and
    measure every predictor's top-k accuracy on the test users' targets, and PGIN's when each
    target is given another test user's inputs (`other_user_rows`)."""
    if log is None:
        log = from_synthetic(generate(replace(exp.data, seed=seed))).interactions
    samples = training_samples(log, leave_last_out(log), exp.seq.min_position, exp.seq.targets)
    train, valid, test = (
        of_users(samples, users)
        for users in split_users(log.num_users, exp.valid_fraction, exp.test_fraction, seed)
    )

    def inputs(rows: Samples, stats: CategoryStats | None = None) -> pgin_model.PGINBatch:
        return pgin_inputs(log, rows, exp.seq, stats=stats, pointer_history=exp.pointer_history,
                           read_items=exp.read_items)

    run = train_pgin_to_convergence(
        log.num_categories, log.num_items, inputs(train), inputs(valid), replace(exp.train, seed=seed),
        category_prior(train.categories, log.num_categories), stream=stream,
    )
    test_stats = category_stats(log, test, exp.seq.long_length)
    test_batch = inputs(test, test_stats)
    k_max = max(exp.ks)
    predictions = {}
    for name, batch in (("PGIN", test_batch),
                        ("PGIN, another user's inputs", take_rows(test_batch, other_user_rows(test)))):
        y, _ = pgin_scores(run.params, run.config, batch, exp.train.eval_chunk)
        predictions[name] = pgin_model.top_k_from_distribution(y, k_max)
    predictions.update(
        baseline_predictions(log, train, test, exp.seq, exp.recent_length, k_max, test_stats)
    )
    accuracy = {
        name: {k: 100.0 * top_k_accuracy(top[:, :k], test.categories) for k in exp.ks}
        for name, top in predictions.items()
    }
    return PGINResult(accuracy, run.curve, test.size)
