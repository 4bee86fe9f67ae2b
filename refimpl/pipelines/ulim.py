"""The ULIM paper's retrieval models trained and evaluated on any interaction log (spec/demo.md).

Every trainer takes an `Interactions` log and a protocol's `Split` (refimpl.data.protocols; the demo
uses ULIM's leave-last-out) and trains by the one rule of refimpl.train.fit:
- targets: the split's training events with at least `seq.min_position` earlier events
  (refimpl.pipelines.inputs.training_samples); the validation loss reads the split's validation
  requests (at most `cfg.validation_rows` of them, drawn from the seed);
- inputs: the short sequence (the most recent `short_length` behaviours), the long window (the most
  recent `long_length`) and its category subsequences S_c, whole or the most recent half per user
  (ULIM-half-sequence, `long_input="recent_half"`, spec/ulim.md#ulim-half-sequence); MIND's recent
  `mind_length` behaviours and the user's profile fields (refimpl.pipelines.inputs.profile_ids);
- randomness: every batch, negative and routing-logit draw comes from the Generator `fit` hands
  the step; validation draws are made once from `seeded_rng(seed, 2)`.
Evaluation (refimpl.pipelines.evaluation) on a protocol's test requests: ULIM by the cascade from
routes (PGIN's, refimpl.pipelines.pgin, or the baselines'); YouTube DNN's single vector and MIND's
K interests by whole-pool search merged by score.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from refimpl._check import Array, BoolArray, IntArray, require_choice, require_int, require_positive_int
from refimpl.data.batching import BatchingConfig, category_batches
from refimpl.data.interactions import Interactions
from refimpl.data.protocols import SeenItems, Split
from refimpl.models import mind as mind_model
from refimpl.models import ulim as ulim_model
from refimpl.models import youtube_dnn as ytdnn
from refimpl.models._params import Params
from refimpl.models.umi import UserBatch, draw_initial_logits
from refimpl.nn.multi_interest_readout import ReadoutConfig
from refimpl.nn.row_sparse import RowSparseGrad
from refimpl.pipelines.evaluation import EvalConfig, Routes, Serving, build_index, search_hit_rates
from refimpl.pipelines.inputs import (
    LONG_INPUTS,
    Samples,
    category_subsequences,
    profile_ids,
    profile_sizes,
    random_rows,
    recent_window,
    request_samples,
    training_samples,
    uniform_negatives,
)
from refimpl.retrieval.index import SearchIndex
from refimpl.train import (
    Curve,
    TrainConfig,
    ValidFn,
    chance_sampled_softmax,
    fit,
    seeded_rng,
    validation_subset,
)

__all__ = [
    "SHORT_NEGATIVES",
    "SequenceConfig",
    "Trained",
    "evaluate_mind",
    "evaluate_youtube_dnn",
    "train_mind",
    "train_ulim",
    "train_youtube_dnn",
    "ulim_index",
    "ulim_serving",
]

SHORT_NEGATIVES = ("in_category", "catalogue")


SEQUENCE_TARGETS = ("all_events", "category_changes")
"""SequenceConfig.targets: a log's visit starts are PGIN's business (`pgin_targets`), not a sequence setting."""


@dataclass(frozen=True)
class SequenceConfig:
    """How much of each user's history each part of each model reads. Checked at construction."""

    short_length: int = 100  # ULIM's short sequence
    long_length: int = 2_000  # the long window
    max_subsequence: int = 512  # the most recent behaviours kept in a category subsequence
    mind_length: int = 200  # MIND's behaviours (capsule routing is O(L K D) per step)
    pgin_long_length: int = 50  # PGIN's long MHSA input; its pointer sees the whole long window
    pgin_short_length: int = 20  # PGIN's short MHSA input
    pgin_history: int = 50  # P, PGIN's deduplicated category history
    min_position: int = 20  # training targets need at least this much history
    targets: str = "category_changes"  # or "all_events": which training events are targets

    def __post_init__(self) -> None:
        for name in ("short_length", "long_length", "max_subsequence", "mind_length",
                     "pgin_long_length", "pgin_short_length", "pgin_history"):
            require_positive_int(f"seq.{name}", getattr(self, name))
        require_int("seq.min_position", self.min_position, low=1)
        require_choice("seq.targets", self.targets, SEQUENCE_TARGETS)


@dataclass(frozen=True)
class Trained:
    """A trained model: its params, loss curve, model config and training time."""

    name: str
    params: Params
    curve: Curve
    config: Any  # the model's config (ULIMConfig, YouTubeDNNConfig or MINDConfig)
    seconds: float
    long_input: str = "whole"  # ULIM's long-term input (LONG_INPUTS)


def _as_float64(params: Params) -> Params:
    """The params in float64: serving and the diagnostics compute in float64 whatever dtype trained
    (`TrainConfig.dtype`); the cascade refuses to mix float32 item vectors with float64 route weights."""
    return {key: np.asarray(value, dtype=np.float64) for key, value in params.items()}


def _check_inputs(interactions: Interactions, split: Split, seq: SequenceConfig, cfg: TrainConfig) -> None:
    for name, value, kind in (("interactions", interactions, Interactions), ("split", split, Split),
                              ("seq", seq, SequenceConfig), ("cfg", cfg, TrainConfig)):
        if not isinstance(value, kind):
            raise TypeError(f"{name}: expected a {kind.__name__}, got {type(value).__name__}")
    if split.train_end.shape != (interactions.num_users,):
        raise ValueError(f"train_end: expected shape ({interactions.num_users},) (one per user of the "
                         f"log), got {split.train_end.shape}")


def _targets_of(interactions: Interactions, split: Split, seq: SequenceConfig, cfg: TrainConfig,
                targets: str | None = None) -> tuple[Samples, Samples]:
    """(training samples, validation samples) of the split; refuses a split with none of either."""
    train = training_samples(interactions, split, seq.min_position, targets or seq.targets)
    if train.size == 0:
        raise ValueError(f"split: no training event has seq.min_position = {seq.min_position} earlier events")
    valid = request_samples(interactions, split.validation)
    if valid.size == 0:
        raise ValueError("split: the validation requests are empty; the stopping rule needs them")
    return train, valid.take(validation_subset(valid.size, cfg.validation_rows, cfg.seed))


def _row_weighted(losses: list[tuple[float, int]]) -> float:
    total = sum(rows for _, rows in losses)
    return sum(loss * rows for loss, rows in losses) / max(total, 1)


def _chunked_validation(
    valid: Samples, cfg: TrainConfig, prepare: Callable[[Samples], Any],
    loss: Callable[[Params, Any], float], chance: Callable[[Any], float],
) -> tuple[ValidFn, float]:
    """Validation over chunks of `batch_size` rows, each prepared once (`prepare`), the loss
    weighted by rows; the learned-nothing level likewise."""
    chunks = [valid.take(np.arange(start, min(start + cfg.batch_size, valid.size)))
              for start in range(0, valid.size, cfg.batch_size)]
    prepared = [(prepare(rows), rows.size) for rows in chunks]
    level = _row_weighted([(chance(batch), size) for batch, size in prepared])

    def valid_fn(p: Params) -> float:
        return _row_weighted([(loss(p, batch), size) for batch, size in prepared])

    return valid_fn, level


# ---------------------------------------------------------------- ULIM


def ulim_batch(interactions: Interactions, samples: Samples, seq: SequenceConfig,
               long_input: str = "whole") -> ulim_model.ULIMBatch:
    """The ULIM batch of `samples`, each row's subsequence of its target's category."""
    short, short_mask = recent_window(interactions, samples, seq.short_length)
    long, long_mask = category_subsequences(
        interactions, samples, samples.categories[:, None], seq.long_length, seq.max_subsequence, long_input
    )
    return ulim_model.ULIMBatch(short, short_mask, long[:, 0], long_mask[:, 0])


def _ulim_validation(
    log: Interactions, valid: Samples, seq: SequenceConfig, cfg: TrainConfig,
    model_cfg: ulim_model.ULIMConfig, short_negatives: str, long_input: str,
) -> tuple[ValidFn, float]:
    """ULIM eq. 1 on the validation targets, category-homogeneous batches with negatives drawn
    once; the learned-nothing level alpha log(1 + N kept) + beta log(1 + N' kept)."""
    batching = BatchingConfig(batch_size=cfg.batch_size, num_negatives=cfg.num_negatives, shuffle=False)
    rng = seeded_rng(cfg.seed, 2)
    prepared = []
    for batch in category_batches(valid.users, valid.targets, valid.categories, log.item_category,
                                  batching, rng):
        rows = valid.take(batch.sample_index)
        short = (batch.negative_ids if short_negatives == "in_category"
                 else uniform_negatives(log.num_items, cfg.num_negatives, rng))
        prepared.append((ulim_batch(log, rows, seq, long_input), rows.targets, batch.negative_ids,
                         batch.category, short))
    alpha, beta = model_cfg.loss.alpha, model_cfg.loss.beta
    chance = _row_weighted([
        (alpha * chance_sampled_softmax(pos, neg) + beta * chance_sampled_softmax(pos, short), pos.size)
        for _, pos, neg, _, short in prepared
    ])

    def valid_fn(p: Params) -> float:
        # "rows": the loss only is read, so no (I, D) gradient is built
        return _row_weighted([
            (ulim_model.ulim_loss_and_grads(
                p, b, pos, neg, c, log.item_category, model_cfg,
                short_negative_ids=None if short_negatives == "in_category" else short,
                item_table_grad="rows").loss,
             pos.size)
            for b, pos, neg, c, short in prepared
        ])

    return valid_fn, chance


def train_ulim(
    interactions: Interactions,
    split: Split,
    seq: SequenceConfig,
    cfg: TrainConfig,
    name: str = "ULIM",
    long_encoder: str = "target",
    long_input: str = "whole",
    stream: TextIO | None = sys.stderr,
    short_negatives: str = "in_category",
) -> Trained:
    """ULIM (or an ablation: long_encoder="self", or long_input="recent_half") trained with ULIM
    eq. 1 on category-homogeneous batches with shared in-category negatives; with
    short_negatives="catalogue" L_short scores against N negatives drawn uniformly from the whole
    catalogue instead (spec/ulim.md#short-term-negatives). With cfg.optimizer "lazy_adam" the item
    table's gradient is row-sparse and lazy Adam updates only the batch's items (spec/optim.md#lazy-adam)."""
    _check_inputs(interactions, split, seq, cfg)
    require_choice("short_negatives", short_negatives, SHORT_NEGATIVES)
    require_choice("long_input", long_input, LONG_INPUTS)
    log = interactions
    model_cfg = ulim_model.ULIMConfig(
        num_items=log.num_items, num_categories=log.num_categories, dim=cfg.dim,
        num_heads=cfg.num_heads, long_encoder=long_encoder,
    )
    train, valid = _targets_of(log, split, seq, cfg)
    params = ulim_model.ulim_init(seeded_rng(cfg.seed), model_cfg, np.dtype(cfg.dtype))
    batching = BatchingConfig(batch_size=cfg.batch_size, num_negatives=cfg.num_negatives)
    queue: list[tuple[Samples, IntArray, int]] = []

    def step(p: Params, rng: np.random.Generator) -> tuple[float, Mapping[str, Array | RowSparseGrad]]:
        if not queue:  # the next eval_every batches' worth of rows, category-homogeneous
            chosen = train.take(random_rows(train.size, cfg.eval_every * cfg.batch_size, rng))
            queue.extend((chosen.take(b.sample_index), b.negative_ids, b.category) for b in category_batches(
                chosen.users, chosen.targets, chosen.categories, log.item_category, batching, rng))
        rows, negatives, category = queue.pop(0)
        short = (None if short_negatives == "in_category"
                 else uniform_negatives(log.num_items, cfg.num_negatives, rng))
        out = ulim_model.ulim_loss_and_grads(
            p, ulim_batch(log, rows, seq, long_input), rows.targets, negatives, category,
            log.item_category, model_cfg, short_negative_ids=short,
            item_table_grad="rows" if cfg.optimizer == "lazy_adam" else "dense",
        )
        if out.item_table_rows is None:
            return out.loss, out.grads
        return out.loss, {**out.grads, "item_table": out.item_table_rows}

    start = time.perf_counter()
    valid_fn, chance = _ulim_validation(log, valid, seq, cfg, model_cfg, short_negatives, long_input)
    params, curve = fit(name, params, step, valid_fn, chance, cfg, cfg.steps, seeded_rng(cfg.seed), stream)
    return Trained(name, _as_float64(params), curve, model_cfg, time.perf_counter() - start, long_input)


def ulim_vectors(
    model: Trained, interactions: Interactions, samples: Samples, categories: IntArray,
    seq: SequenceConfig, chunk: int = 256,
) -> tuple[Array, Array, BoolArray]:
    """(v_s (S, D), v_l (S, K, D), has_history (S, K)) for the given route categories (S, K)."""
    shorts, longs, present = [], [], []
    for start in range(0, samples.size, chunk):
        rows = np.arange(start, min(start + chunk, samples.size))
        users = samples.take(rows)
        short, short_mask = recent_window(interactions, users, seq.short_length)
        long, long_mask = category_subsequences(
            interactions, users, categories[rows], seq.long_length, seq.max_subsequence, model.long_input
        )
        v_s, v_l = ulim_model.encode_for_serving(
            model.params, short, short_mask, long, long_mask, interactions.item_category, model.config
        )
        shorts.append(v_s)
        longs.append(v_l)
        present.append(long_mask.any(axis=2))
    return np.concatenate(shorts), np.concatenate(longs), np.concatenate(present)


def _check_trained(model: Trained, config: type) -> None:
    if not isinstance(model, Trained) or not isinstance(model.config, config):
        raise TypeError(f"model: expected a Trained {config.__name__} model, got "
                        f"{type(getattr(model, 'config', model)).__name__}")


def ulim_index(model: Trained, interactions: Interactions, ev: EvalConfig) -> SearchIndex:
    """The search index over ULIM's catalogue vectors (the item tower)."""
    _check_trained(model, ulim_model.ULIMConfig)
    return build_index(
        ulim_model.catalogue_vectors(model.params, interactions.item_category), interactions.item_category, ev
    )


def ulim_serving(
    model: Trained, interactions: Interactions, samples: Samples, routes: Routes,
    seq: SequenceConfig, ev: EvalConfig, index: SearchIndex | None = None,
) -> Serving:
    """ULIM's serving vectors for the samples' routes; the index is built unless given."""
    _check_trained(model, ulim_model.ULIMConfig)
    if not isinstance(routes, Routes):
        raise TypeError(f"routes: expected a Routes, got {type(routes).__name__}")
    if routes.categories.shape[0] != samples.size:
        raise ValueError(f"routes: expected routes for the {samples.size} samples, got {routes.categories.shape[0]}")
    v_s, v_l, present = ulim_vectors(model, interactions, samples, routes.categories, seq, ev.chunk)
    return Serving(index or ulim_index(model, interactions, ev), routes, v_l, v_s, present)


# ---------------------------------------------------------------- single-vector and MIND baselines


def train_youtube_dnn(
    interactions: Interactions, split: Split, seq: SequenceConfig, cfg: TrainConfig,
    stream: TextIO | None = sys.stderr,
) -> Trained:
    """The YouTube DNN baseline: mean pooling over the long window, one vector, negatives drawn
    uniformly from the whole catalogue."""
    _check_inputs(interactions, split, seq, cfg)
    log = interactions
    model_cfg = ytdnn.YouTubeDNNConfig(num_items=log.num_items, num_categories=log.num_categories, dim=cfg.dim)
    train, valid = _targets_of(log, split, seq, cfg)
    params = ytdnn.youtube_dnn_init(seeded_rng(cfg.seed), model_cfg, np.dtype(cfg.dtype))

    def loss(p: Params, batch: tuple[Samples, IntArray]) -> tuple[float, Params]:
        rows, negatives = batch
        items, mask = recent_window(log, rows, seq.long_length)
        return ytdnn.youtube_dnn_loss_and_grads(p, items, mask, rows.targets, negatives, log.item_category,
                                                model_cfg)

    def step(p: Params, rng: np.random.Generator) -> tuple[float, Params]:
        rows = train.take(random_rows(train.size, cfg.batch_size, rng))
        return loss(p, (rows, uniform_negatives(log.num_items, cfg.num_negatives, rng)))

    start = time.perf_counter()
    valid_rng = seeded_rng(cfg.seed, 2)
    valid_fn, chance = _chunked_validation(
        valid, cfg, lambda rows: (rows, uniform_negatives(log.num_items, cfg.num_negatives, valid_rng)),
        lambda p, batch: loss(p, batch)[0],
        lambda batch: chance_sampled_softmax(batch[0].targets, batch[1]),
    )
    params, curve = fit("YouTube DNN", params, step, valid_fn, chance, cfg, cfg.steps, seeded_rng(cfg.seed), stream)
    return Trained("YouTube DNN", _as_float64(params), curve, model_cfg, time.perf_counter() - start)


def _mind_batch(log: Interactions, rows: Samples, seq: SequenceConfig, k: int,
                rng: np.random.Generator) -> UserBatch:
    """MIND's recent `mind_length` behaviours, the users' profile fields, and the routing logits'
    initialisation (B, L, K) drawn from `rng`."""
    items, mask = recent_window(log, rows, seq.mind_length)
    return UserBatch(
        behaviour_ids=items,
        mask=mask,
        profile_ids=profile_ids(log, rows.users),
        initial_logits=draw_initial_logits(rng, rows.size, items.shape[1], k),
    )


def train_mind(
    interactions: Interactions, split: Split, seq: SequenceConfig, cfg: TrainConfig,
    stream: TextIO | None = sys.stderr, readout: ReadoutConfig | None = None,
) -> Trained:
    """The MIND baseline (refimpl.models.mind): K capsule interests over the recent behaviours and
    the user's profile fields (one constant field for a log without), the multi-interest readout
    (`readout`, the standard one by default; refimpl.nn.multi_interest_readout for the harder
    negatives), negatives from the whole catalogue."""
    _check_inputs(interactions, split, seq, cfg)
    readout = ReadoutConfig() if readout is None else readout
    if not isinstance(readout, ReadoutConfig):
        raise TypeError(f"readout: expected a ReadoutConfig, got {type(readout).__name__}")
    log = interactions
    sizes = profile_sizes(log)
    model_cfg = mind_model.MINDConfig(
        num_items=log.num_items, num_profile_values=sum(sizes), num_fields=len(sizes), dim=cfg.dim,
        profile_dim=4, num_interests=cfg.num_interests,
    )
    train, valid = _targets_of(log, split, seq, cfg)
    params = mind_model.mind_init(seeded_rng(cfg.seed), model_cfg)

    def loss(p: Params, batch: tuple[UserBatch, IntArray, IntArray]) -> tuple[float, Params]:
        users, targets, negatives = batch
        value, grads = mind_model.mind_loss(p, users, targets, negatives, model_cfg, readout)
        return float(value), grads

    def prepare(rows: Samples, r: np.random.Generator) -> tuple[UserBatch, IntArray, IntArray]:
        negatives = uniform_negatives(log.num_items, cfg.num_negatives, r)
        return _mind_batch(log, rows, seq, cfg.num_interests, r), rows.targets, negatives

    def step(p: Params, rng: np.random.Generator) -> tuple[float, Params]:
        return loss(p, prepare(train.take(random_rows(train.size, cfg.batch_size, rng)), rng))

    start = time.perf_counter()
    valid_rng = seeded_rng(cfg.seed, 2)
    valid_fn, chance = _chunked_validation(
        valid, cfg, lambda rows: prepare(rows, valid_rng), lambda p, batch: loss(p, batch)[0],
        lambda batch: chance_sampled_softmax(batch[1], batch[2]),
    )
    params, curve = fit("MIND", params, step, valid_fn, chance, cfg, cfg.steps, seeded_rng(cfg.seed), stream)
    return Trained("MIND", params, curve, model_cfg, time.perf_counter() - start)


def _eval_samples(interactions: Interactions, samples: Samples) -> None:
    if not isinstance(samples, Samples):
        raise TypeError(f"samples: expected a Samples, got {type(samples).__name__}")
    samples.check_against(interactions)


def evaluate_youtube_dnn(
    model: Trained, interactions: Interactions, samples: Samples, seq: SequenceConfig, ev: EvalConfig,
    seen: SeenItems | None = None,
) -> dict[int, float]:
    """HR@N per cut-off of the single user vector searching the whole pool (`seen`: the samples'
    seen items, required when ev.seen is "excluded")."""
    _check_trained(model, ytdnn.YouTubeDNNConfig)
    _eval_samples(interactions, samples)
    tower = ulim_model.catalogue_vectors(model.params, interactions.item_category)
    index = build_index(tower, interactions.item_category, ev)
    users = []
    for start in range(0, samples.size, ev.chunk):
        rows = samples.take(np.arange(start, min(start + ev.chunk, samples.size)))
        items, mask = recent_window(interactions, rows, seq.long_length)
        user, _ = ytdnn.user_forward(model.params, items, mask, interactions.item_category)
        users.append(user)
    return search_hit_rates(index, np.concatenate(users)[:, None, :], samples.targets, ev, seen)


def evaluate_mind(
    model: Trained, interactions: Interactions, samples: Samples, seq: SequenceConfig, ev: EvalConfig,
    seen: SeenItems | None = None,
) -> dict[int, float]:
    """HR@N per cut-off of MIND's K interests, each searching the whole pool, merged by score."""
    _check_trained(model, mind_model.MINDConfig)
    _eval_samples(interactions, samples)
    index = build_index(model.params["item_table"], interactions.item_category, ev)
    # Serving draws the routing logits' initialisation too; a fixed seed keeps evaluation
    # reproducible whatever the training seed.
    rng = seeded_rng(0)
    interests = []
    for start in range(0, samples.size, ev.chunk):
        rows = samples.take(np.arange(start, min(start + ev.chunk, samples.size)))
        batch = _mind_batch(interactions, rows, seq, model.config.num_interests, rng)
        vectors, _ = mind_model.mind_forward(model.params, batch, model.config)
        interests.append(vectors)
    return search_hit_rates(index, np.concatenate(interests), samples.targets, ev, seen)
