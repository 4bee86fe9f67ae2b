"""Training and evaluation pipeline for ULIM, its ablations and the baselines (spec/demo.md).

From planted-interest data (refimpl.data.synthetic) to HR@N:
- samples: every training target is the first event of a visit at position t of a user's
  sequence, its history the events before t; the evaluation target is each user's held-out next
  event, its history the whole sequence (the same task, one visit later);
- windows: the short sequence (the most recent `short_length` behaviours), the long sequence (the
  most recent `long_length`, halved for ULIM-half-sequence) and its category subsequences;
- training: Adam (refimpl.optim) for the same number of steps, batch size and number of negatives
  for every model, a plain-text progress line on stderr, every random draw from a Generator
  seeded by the config, so two runs give identical numbers;
- evaluation: ULIM retrieves by the cascade (refimpl.retrieval) from PGIN's top-K categories; the
  single-vector baseline searches the whole pool; MIND's K interests each search it and the
  results are merged by score.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

import numpy as np

from refimpl._check import Array, BoolArray, IntArray, require_choice
from refimpl.data import category_subsequence
from refimpl.data.batching import BatchingConfig, category_batches
from refimpl.data.category_history import merge_category_history
from refimpl.data.synthetic import SyntheticData
from refimpl.metrics import hit_rate_at_n
from refimpl.models import mind as mind_model
from refimpl.models import pgin as pgin_model
from refimpl.models import ulim as ulim_model
from refimpl.models import youtube_dnn as ytdnn
from refimpl.models._params import Params
from refimpl.models.umi import UserBatch, draw_initial_logits
from refimpl.nn.max_interest_score import merge_interest_candidates
from refimpl.nn.multi_interest_readout import ReadoutConfig
from refimpl.optim import AdamConfig, adam_init, adam_step
from refimpl.retrieval import (
    CascadeConfig,
    Catalogue,
    ExactIndex,
    HnswConfig,
    HnswIndex,
    cascade_retrieve,
)
from refimpl.retrieval.index import SearchIndex

TARGETS = ("visit_starts", "all_events")


@dataclass(frozen=True)
class SequenceConfig:
    """How much of each user's history each part of each model reads."""

    short_length: int = 100  # ULIM's short sequence
    long_length: int = 2_000  # the long sequence (ULIM-half-sequence reads half of it)
    max_subsequence: int = 512  # the most recent behaviours kept in a category subsequence
    mind_length: int = 200  # MIND's behaviours (capsule routing is O(L K D) per step)
    pgin_long_length: int = 50  # PGIN's long MHSA input; its pointer sees the whole long sequence
    pgin_short_length: int = 20  # PGIN's short MHSA input
    pgin_history: int = 50  # P, PGIN's deduplicated category history
    min_position: int = 20  # training targets need at least this much history
    targets: str = "visit_starts"  # or "all_events": which events of a sequence are targets


@dataclass(frozen=True)
class TrainConfig:
    """What every model trains by: the same batch size, negatives, width, learning rate and the
    same stopping rule (spec/demo.md#training): the validation loss is measured every
    `eval_every` steps; training stops when it has not fallen by more than `min_improvement`
    (nats) for `patience` measurements in a row, or at `steps` (the cap); the params at the
    lowest validation loss are kept."""

    steps: int = 300  # the cap on Adam steps
    eval_every: int = 50
    patience: int = 4
    min_improvement: float = 0.002
    validation_rows: int = 1024  # users whose last training target is held out for validation
    batch_size: int = 128
    num_negatives: int = 64
    dim: int = 32
    num_heads: int = 2
    num_interests: int = 4  # MIND's K
    lr: float = 3e-3
    seed: int = 0
    dtype: str = "float64"  # of ULIM's and YouTube DNN's params ("float32": the same mathematics, cheaper steps)


@dataclass(frozen=True)
class Samples:
    """Prediction targets: user u's event `targets[s]` at position `positions[s]` (its history is
    sequence[:positions[s]])."""

    users: IntArray  # (S,)
    positions: IntArray  # (S,)
    targets: IntArray  # (S,)
    categories: IntArray  # (S,) the targets' categories

    def take(self, rows: IntArray) -> Samples:
        return Samples(
            self.users[rows], self.positions[rows], self.targets[rows], self.categories[rows]
        )

    @property
    def size(self) -> int:
        return int(self.users.shape[0])


def training_samples(data: SyntheticData, seq: SequenceConfig) -> Samples:
    """Every visit start (seq.targets "visit_starts") or every event ("all_events") at position
    >= seq.min_position of every user's sequence."""
    require_choice("seq.targets", seq.targets, TARGETS)
    owner = np.repeat(np.arange(data.num_users), data.lengths())
    position = np.arange(data.events.shape[0]) - data.offsets[owner]
    keep = position >= seq.min_position
    if seq.targets == "visit_starts":
        keep &= data.visit_start
    targets = data.events[keep]
    return Samples(owner[keep], position[keep], targets, data.item_category[targets])


def split_validation(samples: Samples, rows: int, seed: int) -> tuple[Samples, Samples]:
    """(training, validation): the last training target of `rows` users (drawn with `seed`) is
    held out for validation; every other target trains. The validation targets come after their
    users' training targets in time, as the held-out test event comes after them all."""
    last = np.flatnonzero(np.r_[samples.users[1:] != samples.users[:-1], True])
    rng = np.random.Generator(np.random.PCG64(seed))
    chosen = np.sort(rng.choice(last, size=min(rows, last.shape[0]), replace=False))
    keep = np.ones(samples.size, dtype=bool)
    keep[chosen] = False
    return samples.take(np.flatnonzero(keep)), samples.take(chosen)


def heldout_samples(data: SyntheticData) -> Samples:
    """Each user's held-out next event, after the whole sequence."""
    users = np.arange(data.num_users, dtype=np.int64)
    return Samples(users, data.lengths(), data.heldout, data.heldout_category)


def _history(data: SyntheticData, user: int, position: int, length: int) -> IntArray:
    """The user's (at most) `length` behaviours before `position`, oldest first."""
    start = data.offsets[user]
    result: IntArray = data.events[start + max(0, position - length) : start + position]
    return result


def _pad(rows: list[IntArray], width: int) -> tuple[IntArray, BoolArray]:
    """Left-aligned rows (oldest first) padded with id 0 and mask False to `width` (at least 1)."""
    width = max(width, 1)
    items = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=bool)
    for r, row in enumerate(rows):
        items[r, : row.shape[0]] = row
        mask[r, : row.shape[0]] = True
    return items, mask


def recent_window(
    data: SyntheticData, samples: Samples, length: int
) -> tuple[IntArray, BoolArray]:
    """The most recent `length` behaviours before each target: items, mask (B, length)."""
    rows = [
        _history(data, int(u), int(t), length)
        for u, t in zip(samples.users, samples.positions, strict=True)
    ]
    return _pad(rows, length)


def category_subsequences(
    data: SyntheticData,
    samples: Samples,
    categories: IntArray,
    seq: SequenceConfig,
    long_length: int,
) -> tuple[IntArray, BoolArray]:
    """S_c: the behaviours of category c in the long window, most recent `max_subsequence` kept
    (`data.category_subsequence`, the one definition of S_c).

    categories (B, K) -> items, mask (B, K, L) with L the longest subsequence found (at least 1).
    """
    windows = [
        _history(data, int(samples.users[b]), int(samples.positions[b]), long_length) for b in range(samples.size)
    ]
    window_items, window_mask = _pad(windows, max((w.shape[0] for w in windows), default=1))
    items, mask = category_subsequence.category_subsequences(
        window_items, data.item_category[window_items], window_mask, categories, seq.max_subsequence
    )
    # subsequences are left-aligned: the columns past the longest one are padding for every row
    width = max(int(mask.sum(axis=-1).max(initial=0)), 1)
    return items[..., :width], mask[..., :width]


def ulim_batch(
    data: SyntheticData, samples: Samples, seq: SequenceConfig, long_length: int
) -> ulim_model.ULIMBatch:
    """The ULIM batch of `samples`, each row's subsequence of its target's category."""
    short, short_mask = recent_window(data, samples, seq.short_length)
    long, long_mask = category_subsequences(
        data, samples, samples.categories[:, None], seq, long_length
    )
    return ulim_model.ULIMBatch(short, short_mask, long[:, 0], long_mask[:, 0])


def pgin_batch(
    data: SyntheticData, samples: Samples, seq: SequenceConfig, long_length: int | None = None
) -> pgin_model.PGINBatch:
    """PGIN's batch: MHSA over the recent `pgin_long_length` and `pgin_short_length` behaviours; the
    pointer's history deduplicated from the whole long sequence (its recent `long_length`)."""
    length = seq.long_length if long_length is None else long_length
    cats = data.item_category
    long, long_mask = recent_window(data, samples, min(seq.pgin_long_length, length))
    short, short_mask = recent_window(data, samples, min(seq.pgin_short_length, length))
    full, full_mask = recent_window(data, samples, length)
    empty = np.zeros((samples.size, 0), dtype=np.int64)
    history, history_mask = merge_category_history(
        cats[full], full_mask, empty, np.zeros(empty.shape, dtype=bool), seq.pgin_history
    )
    return pgin_model.PGINBatch(
        user_features=np.ones((samples.size, 1)),
        long_items=long,
        long_categories=cats[long],
        long_mask=long_mask,
        short_items=short,
        short_categories=cats[short],
        short_mask=short_mask,
        history=history,
        history_mask=history_mask,
        label=samples.categories,
    )


@dataclass(frozen=True)
class Curve:
    """A training run's losses: `train` per step; `valid` at `valid_steps` (step 0 = the init);
    `chance`: the loss of a model that learned nothing (every score equal, spec/demo.md#training);
    `best_step`: where the validation loss was lowest (the params kept); `stopped_early`: the rule
    stopped it before the cap."""

    train: list[float]
    valid_steps: list[int]
    valid: list[float]
    chance: float
    best_step: int
    stopped_early: bool

    @property
    def best_valid(self) -> float:
        return self.valid[self.valid_steps.index(self.best_step)]


def report_line(name: str, step: int, cap: int, train: float, valid: float, chance: float,
                seconds: float) -> str:
    """One progress line: the training loss (mean of the last steps), the validation loss and the
    learned-nothing level side by side."""
    return (f"{name:>20} step {step:>5}/{cap} train {train:7.4f} valid {valid:7.4f} "
            f"(learned nothing {chance:7.4f}) {seconds:6.1f}s")


StepFn = Callable[[Params, np.random.Generator], tuple[float, Params]]
ValidFn = Callable[[Params], float]


def fit(
    name: str,
    params: Params,
    step_fn: StepFn,
    valid_fn: ValidFn,
    chance: float,
    cfg: TrainConfig,
    steps: int,
    rng: np.random.Generator,
    stream: TextIO | None = sys.stderr,
) -> tuple[Params, Curve]:
    """Adam steps of `step_fn` (which draws its own batch from `rng`) under the stopping rule of
    TrainConfig, at most `steps`; the params at the lowest validation loss, and the curve."""
    state = adam_init(params)
    adam = AdamConfig(lr=cfg.lr)
    start = time.perf_counter()
    best_params, best_step, best = params, 0, valid_fn(params)
    curve = Curve([], [0], [best], chance, 0, False)
    waited = 0
    for step in range(1, steps + 1):
        loss, grads = step_fn(params, rng)
        params, state = adam_step(params, grads, state, adam)
        curve.train.append(loss)
        if step % cfg.eval_every and step != steps:
            continue
        valid = valid_fn(params)
        curve.valid_steps.append(step)
        curve.valid.append(valid)
        if stream is not None:
            stream.write(report_line(name, step, steps, float(np.mean(curve.train[-cfg.eval_every:])),
                                     valid, chance, time.perf_counter() - start) + "\n")
            stream.flush()
        if valid < best - cfg.min_improvement:
            best_params, best_step, best, waited = params, step, valid, 0
        elif valid < best:
            best_params, best_step, best = params, step, valid
            waited += 1
        else:
            waited += 1
        if waited >= cfg.patience:
            return best_params, replace(curve, best_step=best_step, stopped_early=step < steps)
    return best_params, replace(curve, best_step=best_step)


def _category_batch_stream(
    samples: Samples, data: SyntheticData, cfg: TrainConfig, rng: np.random.Generator
) -> Iterator[tuple[Samples, IntArray, int]]:
    """Endless category-homogeneous batches (samples, shared negatives, category)."""
    batching = BatchingConfig(batch_size=cfg.batch_size, num_negatives=cfg.num_negatives)
    while True:
        chosen = samples.take(_random_rows(samples, cfg.eval_every * cfg.batch_size, rng))
        for batch in category_batches(
            chosen.users, chosen.targets, chosen.categories, data.item_category, batching, rng
        ):
            yield chosen.take(batch.sample_index), batch.negative_ids, batch.category


def _uniform_negatives(data: SyntheticData, cfg: TrainConfig, rng: np.random.Generator) -> IntArray:
    negatives: IntArray = rng.choice(
        data.num_items, size=min(cfg.num_negatives, data.num_items), replace=False
    ).astype(np.int64)
    return negatives


def _uniform_batches(
    samples: Samples, data: SyntheticData, cfg: TrainConfig, rng: np.random.Generator
) -> Iterator[tuple[Samples, IntArray]]:
    """Endless batches of random samples with N negatives shared, from the whole catalogue."""
    while True:
        rows = _random_rows(samples, cfg.batch_size, rng)
        yield samples.take(rows), _uniform_negatives(data, cfg, rng)


def _random_rows(samples: Samples, count: int, rng: np.random.Generator) -> IntArray:
    """`count` distinct sample rows (all of them if fewer), drawn from `rng`, sorted."""
    rows: IntArray = np.sort(rng.choice(samples.size, size=min(count, samples.size), replace=False))
    return rows


def chance_sampled_softmax(positives: IntArray, negatives: IntArray) -> float:
    """The sampled-softmax loss of a model that learned nothing (every score equal): per row
    log(1 + the negatives kept after removing accidental hits), mean over rows."""
    kept = (negatives[None, :] != positives[:, None]).sum(axis=1)
    return float(np.mean(np.log1p(kept)))


@dataclass(frozen=True)
class Trained:
    """A trained model: its params, loss curve, model config and training time."""

    name: str
    params: Params
    curve: Curve
    config: Any  # the model's config (ULIMConfig, YouTubeDNNConfig, MINDConfig or PGINConfig)
    seconds: float
    long_length: int = 0  # ULIM's long window (0 for the others)


def _seeded(cfg: TrainConfig) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(cfg.seed))


def training_split(samples: Samples, cfg: TrainConfig) -> tuple[Samples, Samples]:
    """The one validation split every model of a run shares (it depends on the seed only)."""
    return split_validation(samples, cfg.validation_rows, cfg.seed + 1)


def _validation_rng(cfg: TrainConfig) -> np.random.Generator:
    """Draws the validation negatives once, the same for every evaluation of the curve."""
    return np.random.Generator(np.random.PCG64(cfg.seed + 2))


def _timed_fit(
    name: str,
    params: Params,
    model_cfg: Any,
    step_fn: StepFn,
    validation: tuple[ValidFn, float],
    steps: int,
    cfg: TrainConfig,
    rng: np.random.Generator,
    stream: TextIO | None,
    long_length: int = 0,
) -> Trained:
    """`fit` timed and packed with the model config into a Trained."""
    start = time.perf_counter()
    valid_fn, chance = validation
    params, curve = fit(name, params, step_fn, valid_fn, chance, cfg, steps, rng, stream)
    # serving and the diagnostics compute in float64 whatever dtype trained (cfg.dtype)
    params = {key: value.astype(np.float64) for key, value in params.items()}
    return Trained(name, params, curve, model_cfg, time.perf_counter() - start, long_length)


def _row_weighted(losses: list[tuple[float, int]]) -> float:
    total = sum(rows for _, rows in losses)
    return sum(loss * rows for loss, rows in losses) / max(total, 1)


def _ulim_validation(
    data: SyntheticData, valid: Samples, seq: SequenceConfig, cfg: TrainConfig, length: int,
    model_cfg: ulim_model.ULIMConfig, short_negatives: str,
) -> tuple[ValidFn, float]:
    """ULIM eq. 1 on the validation targets, category-homogeneous batches with negatives drawn
    once; the learned-nothing level alpha log(1 + N kept) + beta log(1 + N' kept)."""
    batching = BatchingConfig(batch_size=cfg.batch_size, num_negatives=cfg.num_negatives,
                              shuffle=False)
    rng = _validation_rng(cfg)
    prepared = []
    for batch in category_batches(valid.users, valid.targets, valid.categories,
                                  data.item_category, batching, rng):
        rows = valid.take(batch.sample_index)
        short = (batch.negative_ids if short_negatives == "in_category"
                 else _uniform_negatives(data, cfg, rng))
        prepared.append((ulim_batch(data, rows, seq, length), rows.targets, batch.negative_ids,
                         batch.category, short))
    alpha, beta = model_cfg.loss.alpha, model_cfg.loss.beta
    chance = _row_weighted([
        (alpha * chance_sampled_softmax(pos, neg) + beta * chance_sampled_softmax(pos, short),
         pos.size)
        for _, pos, neg, _, short in prepared
    ])

    def valid_fn(p: Params) -> float:
        return _row_weighted([
            (ulim_model.ulim_loss_and_grads(
                p, b, pos, neg, c, data.item_category, model_cfg,
                short_negative_ids=None if short_negatives == "in_category" else short).loss,
             pos.size)
            for b, pos, neg, c, short in prepared
        ])

    return valid_fn, chance


SHORT_NEGATIVES = ("in_category", "catalogue")


def train_ulim(
    data: SyntheticData,
    samples: Samples,
    seq: SequenceConfig,
    cfg: TrainConfig,
    name: str = "ULIM",
    long_encoder: str = "target",
    long_length: int | None = None,
    stream: TextIO | None = sys.stderr,
    short_negatives: str = "in_category",
) -> Trained:
    """ULIM (or an ablation: long_encoder="self", or a shorter long sequence) trained with ULIM
    eq. 1 on category-homogeneous batches with shared in-category negatives; with
    short_negatives="catalogue" L_short scores against N negatives drawn uniformly from the whole
    catalogue instead (spec/ulim.md#short-term-negatives)."""
    require_choice("short_negatives", short_negatives, SHORT_NEGATIVES)
    length = seq.long_length if long_length is None else long_length
    model_cfg = ulim_model.ULIMConfig(
        num_items=data.num_items, num_categories=data.num_categories, dim=cfg.dim,
        num_heads=cfg.num_heads, long_encoder=long_encoder,
    )
    rng = _seeded(cfg)
    params = ulim_model.ulim_init(rng, model_cfg, np.dtype(cfg.dtype))
    train, valid = training_split(samples, cfg)
    batches = _category_batch_stream(train, data, cfg, rng)

    def step(p: Params, _: np.random.Generator) -> tuple[float, Params]:
        rows, negatives, category = next(batches)
        short = None if short_negatives == "in_category" else _uniform_negatives(data, cfg, rng)
        out = ulim_model.ulim_loss_and_grads(
            p, ulim_batch(data, rows, seq, length), rows.targets, negatives, category,
            data.item_category, model_cfg, short_negative_ids=short,
        )
        return out.loss, out.grads

    validation = _ulim_validation(data, valid, seq, cfg, length, model_cfg, short_negatives)
    return _timed_fit(name, params, model_cfg, step, validation, cfg.steps, cfg, rng, stream,
                      length)


def _chunked_validation(
    valid: Samples, cfg: TrainConfig, prepare: Callable[[Samples], Any],
    loss: Callable[[Params, Any], float], chance: Callable[[Any], float],
) -> tuple[ValidFn, float]:
    """Validation over chunks of `batch_size` rows, each prepared once (`prepare`), the loss
    weighted by rows; the learned-nothing level likewise."""
    chunks = [valid.take(rows) for rows in _chunks(valid, cfg.batch_size)]
    prepared = [(prepare(rows), rows.size) for rows in chunks]
    level = _row_weighted([(chance(batch), size) for batch, size in prepared])

    def valid_fn(p: Params) -> float:
        return _row_weighted([(loss(p, batch), size) for batch, size in prepared])

    return valid_fn, level


def train_youtube_dnn(
    data: SyntheticData,
    samples: Samples,
    seq: SequenceConfig,
    cfg: TrainConfig,
    stream: TextIO | None = sys.stderr,
) -> Trained:
    """The YouTube DNN baseline: mean pooling over the whole long sequence, one vector."""
    model_cfg = ytdnn.YouTubeDNNConfig(
        num_items=data.num_items, num_categories=data.num_categories, dim=cfg.dim
    )
    rng = _seeded(cfg)
    params = ytdnn.youtube_dnn_init(rng, model_cfg, np.dtype(cfg.dtype))
    train, valid = training_split(samples, cfg)
    batches = _uniform_batches(train, data, cfg, rng)

    def loss(p: Params, batch: tuple[Samples, IntArray]) -> tuple[float, Params]:
        rows, negatives = batch
        items, mask = recent_window(data, rows, seq.long_length)
        return ytdnn.youtube_dnn_loss_and_grads(
            p, items, mask, rows.targets, negatives, data.item_category, model_cfg
        )

    valid_rng = _validation_rng(cfg)
    validation = _chunked_validation(
        valid, cfg, lambda rows: (rows, _uniform_negatives(data, cfg, valid_rng)),
        lambda p, batch: loss(p, batch)[0],
        lambda batch: chance_sampled_softmax(batch[0].targets, batch[1]),
    )
    return _timed_fit("YouTube DNN", params, model_cfg, lambda p, _: loss(p, next(batches)),
                      validation, cfg.steps, cfg, rng, stream)


def _mind_batch(
    data: SyntheticData, rows: Samples, seq: SequenceConfig, k: int, rng: np.random.Generator
) -> UserBatch:
    """MIND's recent `mind_length` behaviours, no profile (one constant field), and the routing
    logits' initialisation (B, L, K) drawn from `rng`."""
    items, mask = recent_window(data, rows, seq.mind_length)
    return UserBatch(
        behaviour_ids=items,
        mask=mask,
        profile_ids=np.zeros((rows.size, 1), dtype=np.int64),
        initial_logits=draw_initial_logits(rng, rows.size, items.shape[1], k),
    )


def train_mind(
    data: SyntheticData,
    samples: Samples,
    seq: SequenceConfig,
    cfg: TrainConfig,
    stream: TextIO | None = sys.stderr,
) -> Trained:
    """The MIND baseline (refimpl.models.mind): K capsule interests over the recent behaviours,
    the standard multi-interest readout, negatives from the whole catalogue."""
    model_cfg = mind_model.MINDConfig(
        num_items=data.num_items, num_profile_values=1, num_fields=1, dim=cfg.dim,
        profile_dim=4, num_interests=cfg.num_interests,
    )
    rng = _seeded(cfg)
    params = mind_model.mind_init(rng, model_cfg)
    train, valid = training_split(samples, cfg)
    batches = _uniform_batches(train, data, cfg, rng)

    def loss(p: Params, batch: tuple[UserBatch, IntArray, IntArray]) -> tuple[float, Params]:
        users, targets, negatives = batch
        value, grads = mind_model.mind_loss(p, users, targets, negatives, model_cfg,
                                            ReadoutConfig())
        return float(value), grads

    def prepare(rows: Samples, r: np.random.Generator) -> tuple[UserBatch, IntArray, IntArray]:
        negatives = _uniform_negatives(data, cfg, r)
        return _mind_batch(data, rows, seq, cfg.num_interests, r), rows.targets, negatives

    def step(p: Params, r: np.random.Generator) -> tuple[float, Params]:
        rows, negatives = next(batches)
        return loss(p, (_mind_batch(data, rows, seq, cfg.num_interests, r), rows.targets,
                        negatives))

    valid_rng = _validation_rng(cfg)
    validation = _chunked_validation(
        valid, cfg, lambda rows: prepare(rows, valid_rng), lambda p, batch: loss(p, batch)[0],
        lambda batch: chance_sampled_softmax(batch[1], batch[2]),
    )
    return _timed_fit("MIND", params, model_cfg, step, validation, cfg.steps, cfg, rng, stream)


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class EvalConfig:
    """How the trained models are evaluated: the HR@N cut-offs and the retrieval back end."""

    cutoffs: tuple[int, ...] = (50, 100, 200)
    backend: str = "exact"  # or "hnsw"
    hnsw: HnswConfig = field(default_factory=HnswConfig)
    chunk: int = 256  # users encoded at once


def build_index(vectors: Array, item_category: IntArray, ev: EvalConfig) -> SearchIndex:
    """The search index of ev.backend over the catalogue vectors (I, D) and their categories."""
    catalogue = Catalogue.build(vectors, item_category, num_categories=int(item_category.max()) + 1)
    if ev.backend == "hnsw":
        return HnswIndex(catalogue, ev.hnsw)
    if ev.backend == "exact":
        return ExactIndex(catalogue)
    raise ValueError(f"backend: expected 'exact' or 'hnsw', got {ev.backend!r}")


def _chunks(samples: Samples, size: int) -> Iterator[IntArray]:
    """Consecutive rows of `samples`, at most `size` at a time (bounds the memory of a batch)."""
    for start in range(0, samples.size, size):
        yield np.arange(start, min(start + size, samples.size))


@dataclass(frozen=True)
class Routes:
    """The cascade's routes for S users: categories (S, K) best first, weights (S, K) >= 0 (what a
    "weighted" split shares N by: PGIN's probabilities, or category counts), mask (S, K) (False:
    no route)."""

    categories: IntArray
    weights: Array
    mask: BoolArray

    def top(self, k: int) -> Routes:
        return Routes(self.categories[:, :k], self.weights[:, :k], self.mask[:, :k])


def hit_rate(ids: IntArray, valid: BoolArray, targets: IntArray, cutoff: int) -> float:
    """HR@cutoff of the retrieved ids (S, n) at their valid positions against one target each."""
    retrieved = [row[ok] for row, ok in zip(ids, valid, strict=True)]
    return hit_rate_at_n(retrieved, [[int(t)] for t in targets], cutoff)


def ulim_vectors(
    model: Trained,
    data: SyntheticData,
    samples: Samples,
    categories: IntArray,
    seq: SequenceConfig,
    chunk: int = 256,
) -> tuple[Array, Array, BoolArray]:
    """(v_s (S, D), v_l (S, K, D), has_history (S, K)) for the given route categories (S, K)."""
    shorts, longs, present = [], [], []
    for rows in _chunks(samples, chunk):
        users = samples.take(rows)
        short, short_mask = recent_window(data, users, seq.short_length)
        long, long_mask = category_subsequences(
            data, users, categories[rows], seq, model.long_length
        )
        v_s, v_l = ulim_model.encode_for_serving(
            model.params, short, short_mask, long, long_mask, data.item_category, model.config
        )
        shorts.append(v_s)
        longs.append(v_l)
        present.append(long_mask.any(axis=2))
    return np.concatenate(shorts), np.concatenate(longs), np.concatenate(present)


@dataclass(frozen=True)
class Serving:
    """What the cascade reads for S users: the index, the routes and their vectors (computed
    once; a smaller K is a prefix of the routes)."""

    index: SearchIndex
    routes: Routes
    long_vectors: Array  # (S, K, D)
    short_vectors: Array  # (S, D)
    present: BoolArray  # (S, K) the user has history in the route's category

    def hit_rates(self, targets: IntArray, ev: EvalConfig, k: int | None = None,
                  split: str = "even") -> dict[int, float]:
        """HR@N per cut-off of the cascade over the first k routes with the given split."""
        k = self.routes.categories.shape[1] if k is None else k
        routes = self.routes.top(k)
        result = {}
        for n in ev.cutoffs:
            out = cascade_retrieve(
                self.index, routes.categories, self.long_vectors[:, :k], self.short_vectors,
                CascadeConfig(n=n, split=split), long_mask=routes.mask & self.present[:, :k],
                route_weights=routes.weights,
            )
            result[n] = hit_rate(out.ids, out.valid, targets, n)
        return result


def ulim_index(model: Trained, data: SyntheticData, ev: EvalConfig) -> SearchIndex:
    return build_index(
        ulim_model.catalogue_vectors(model.params, data.item_category), data.item_category, ev
    )


def ulim_serving(
    model: Trained, data: SyntheticData, samples: Samples, routes: Routes | IntArray,
    seq: SequenceConfig, ev: EvalConfig, index: SearchIndex | None = None,
) -> Serving:
    """ULIM's serving vectors for the given routes (Routes, or categories (S, K) equally weighted)."""
    if not isinstance(routes, Routes):
        routes = Routes(routes, np.ones(routes.shape), np.ones(routes.shape, dtype=bool))
    v_s, v_l, present = ulim_vectors(model, data, samples, routes.categories, seq, ev.chunk)
    return Serving(index or ulim_index(model, data, ev), routes, v_l, v_s, present)


def evaluate_ulim(
    model: Trained,
    data: SyntheticData,
    samples: Samples,
    categories: IntArray,
    seq: SequenceConfig,
    ev: EvalConfig,
) -> dict[int, float]:
    """HR@N per cut-off of ULIM's cascade from the given route categories (S, K), even split."""
    return ulim_serving(model, data, samples, categories, seq, ev).hit_rates(samples.targets, ev)


def merged_search(index: SearchIndex, queries: Array, n: int) -> IntArray:
    """UMI eq. 1 served: the top-n of the union of each interest's top-n (queries (S, K, D)), by
    score, de-duplicated, ties to the lower item id, rows padded with -1 (spec/max_interest_score.md)."""
    s, k, d = queries.shape
    ids, scores = index.search(queries.reshape(s * k, d), n)
    return merge_interest_candidates(ids.reshape(s, k, -1), scores.reshape(s, k, -1), n)


def evaluate_youtube_dnn(
    model: Trained, data: SyntheticData, samples: Samples, seq: SequenceConfig, ev: EvalConfig
) -> dict[int, float]:
    """HR@N per cut-off of the single user vector searching the whole pool."""
    tower = ulim_model.catalogue_vectors(model.params, data.item_category)
    index = build_index(tower, data.item_category, ev)
    users = []
    for rows in _chunks(samples, ev.chunk):
        items, mask = recent_window(data, samples.take(rows), seq.long_length)
        user, _ = ytdnn.user_forward(model.params, items, mask, data.item_category)
        users.append(user)
    vectors = np.concatenate(users)[:, None, :]
    return merged_hit_rates(index, vectors, samples, ev)


def merged_hit_rates(
    index: SearchIndex, vectors: Array, samples: Samples, ev: EvalConfig
) -> dict[int, float]:
    """HR@N per cut-off of merged_search with the user vectors (S, K, D)."""
    result = {}
    for n in ev.cutoffs:
        ids = merged_search(index, vectors, n)
        result[n] = hit_rate(ids, ids >= 0, samples.targets, n)
    return result


def evaluate_mind(
    model: Trained, data: SyntheticData, samples: Samples, seq: SequenceConfig, ev: EvalConfig
) -> dict[int, float]:
    """HR@N per cut-off of MIND's K interests, each searching the whole pool, merged by score."""
    index = build_index(model.params["item_table"], data.item_category, ev)
    # Serving draws the routing logits' initialisation too; a fixed seed keeps evaluation
    # reproducible whatever the training seed.
    rng = np.random.Generator(np.random.PCG64(0))
    interests = []
    for rows in _chunks(samples, ev.chunk):
        batch = _mind_batch(data, samples.take(rows), seq, model.config.num_interests, rng)
        vectors, _ = mind_model.mind_forward(model.params, batch, model.config)
        interests.append(vectors)
    return merged_hit_rates(index, np.concatenate(interests), samples, ev)
