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
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from refimpl._check import Array, BoolArray, IntArray
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
from refimpl.nn.multi_interest_readout import ReadoutConfig
from refimpl.optim import AdamConfig, adam_init, adam_step
from refimpl.retrieval import CascadeConfig, Catalogue, ExactIndex, HnswConfig, HnswIndex, cascade_retrieve
from refimpl.retrieval.index import SearchIndex


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


@dataclass(frozen=True)
class TrainConfig:
    """The budget every model gets (the same steps, batch size, negatives and width)."""

    steps: int = 300
    batch_size: int = 128
    num_negatives: int = 64
    dim: int = 32
    num_heads: int = 2
    num_interests: int = 4  # MIND's K
    lr: float = 3e-3
    pgin_steps: int = 300
    pgin_dim: int = 16
    seed: int = 0


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
    """Every visit start at position >= seq.min_position of every user's sequence."""
    owner = np.repeat(np.arange(data.num_users), data.lengths())
    position = np.arange(data.events.shape[0]) - data.offsets[owner]
    keep = data.visit_start & (position >= seq.min_position)
    targets = data.events[keep]
    return Samples(owner[keep], position[keep], targets, data.item_category[targets])


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
    """S_c: the behaviours of category c in the long window, most recent `max_subsequence` kept.

    categories (B, K) -> items, mask (B, K, L) with L the longest subsequence found (at least 1).
    """
    rows: list[IntArray] = []
    for b in range(samples.size):
        window = _history(data, int(samples.users[b]), int(samples.positions[b]), long_length)
        window_categories = data.item_category[window]
        for c in categories[b]:
            rows.append(window[window_categories == c][-seq.max_subsequence :])
    width = max((row.shape[0] for row in rows), default=1)
    items, mask = _pad(rows, width)
    b, k = categories.shape
    return items.reshape(b, k, -1), mask.reshape(b, k, -1)


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


class Progress:
    """A plain-text progress bar on a stream (stderr by default): one line per ~10% of steps."""

    def __init__(self, name: str, total: int, stream: TextIO | None = sys.stderr) -> None:
        self.name, self.total, self.stream = name, total, stream
        self.start = time.perf_counter()
        self.next_report = 0

    def update(self, step: int, loss: float) -> None:
        if self.stream is None or step < self.next_report and step != self.total:
            return
        self.next_report = step + max(1, self.total // 10)
        done = int(20 * step / max(self.total, 1))
        bar = "#" * done + "." * (20 - done)
        elapsed = time.perf_counter() - self.start
        self.stream.write(
            f"{self.name:>12} [{bar}] {step:>5}/{self.total} loss {loss:8.4f} {elapsed:6.1f}s\n"
        )
        self.stream.flush()


StepFn = Callable[[Params, np.random.Generator], tuple[float, Params]]


def fit(
    name: str,
    params: Params,
    step_fn: StepFn,
    steps: int,
    lr: float,
    rng: np.random.Generator,
    stream: TextIO | None = sys.stderr,
) -> tuple[Params, list[float]]:
    """`steps` Adam steps of `step_fn` (which draws its own batch from `rng`); the loss curve."""
    state = adam_init(params)
    adam = AdamConfig(lr=lr)
    progress = Progress(name, steps, stream)
    losses: list[float] = []
    for step in range(1, steps + 1):
        loss, grads = step_fn(params, rng)
        params, state = adam_step(params, grads, state, adam)
        losses.append(loss)
        progress.update(step, float(np.mean(losses[-20:])))
    return params, losses


def _category_batch_stream(
    samples: Samples, data: SyntheticData, cfg: TrainConfig, rng: np.random.Generator
) -> Iterator[tuple[Samples, IntArray, int]]:
    """Endless category-homogeneous batches (samples, shared negatives, category)."""
    batching = BatchingConfig(batch_size=cfg.batch_size, num_negatives=cfg.num_negatives)
    while True:
        chosen = samples.take(_random_rows(samples, cfg.steps * cfg.batch_size, rng))
        for batch in category_batches(
            chosen.users, chosen.targets, chosen.categories, data.item_category, batching, rng
        ):
            yield chosen.take(batch.sample_index), batch.negative_ids, batch.category


def _uniform_batches(
    samples: Samples, data: SyntheticData, cfg: TrainConfig, rng: np.random.Generator
) -> Iterator[tuple[Samples, IntArray]]:
    """Endless batches of random samples with N negatives shared, from the whole catalogue."""
    while True:
        rows = _random_rows(samples, cfg.batch_size, rng)
        negatives = rng.choice(data.num_items, size=min(cfg.num_negatives, data.num_items),
                               replace=False).astype(np.int64)
        yield samples.take(rows), negatives


def _random_rows(samples: Samples, count: int, rng: np.random.Generator) -> IntArray:
    """`count` distinct sample rows (all of them if fewer), drawn from `rng`, sorted."""
    rows: IntArray = np.sort(rng.choice(samples.size, size=min(count, samples.size), replace=False))
    return rows


@dataclass(frozen=True)
class Trained:
    """A trained model: its params, loss curve, model config and training time."""

    name: str
    params: Params
    losses: list[float]
    config: Any  # the model's config (ULIMConfig, YouTubeDNNConfig, MINDConfig or PGINConfig)
    seconds: float
    long_length: int = 0  # ULIM's long window (0 for the others)


def _seeded(cfg: TrainConfig) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(cfg.seed))


def _timed_fit(
    name: str,
    params: Params,
    model_cfg: Any,
    step_fn: StepFn,
    steps: int,
    cfg: TrainConfig,
    rng: np.random.Generator,
    stream: TextIO | None,
    long_length: int = 0,
) -> Trained:
    """`fit` timed and packed with the model config into a Trained."""
    start = time.perf_counter()
    params, losses = fit(name, params, step_fn, steps, cfg.lr, rng, stream)
    return Trained(name, params, losses, model_cfg, time.perf_counter() - start, long_length)


def train_ulim(
    data: SyntheticData,
    samples: Samples,
    seq: SequenceConfig,
    cfg: TrainConfig,
    name: str = "ULIM",
    long_encoder: str = "target",
    long_length: int | None = None,
    stream: TextIO | None = sys.stderr,
) -> Trained:
    """ULIM (or an ablation: long_encoder="self", or a shorter long sequence) trained with ULIM
    eq. 1 on category-homogeneous batches with shared in-category negatives."""
    length = seq.long_length if long_length is None else long_length
    model_cfg = ulim_model.ULIMConfig(
        num_items=data.num_items, num_categories=data.num_categories, dim=cfg.dim,
        num_heads=cfg.num_heads, long_encoder=long_encoder,
    )
    rng = _seeded(cfg)
    params = ulim_model.ulim_init(rng, model_cfg)
    batches = _category_batch_stream(samples, data, cfg, rng)

    def step(p: Params, _: np.random.Generator) -> tuple[float, Params]:
        rows, negatives, category = next(batches)
        out = ulim_model.ulim_loss_and_grads(
            p, ulim_batch(data, rows, seq, length), rows.targets, negatives, category,
            data.item_category, model_cfg,
        )
        return out.loss, out.grads

    return _timed_fit(name, params, model_cfg, step, cfg.steps, cfg, rng, stream, length)


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
    params = ytdnn.youtube_dnn_init(rng, model_cfg)
    batches = _uniform_batches(samples, data, cfg, rng)

    def step(p: Params, _: np.random.Generator) -> tuple[float, Params]:
        rows, negatives = next(batches)
        items, mask = recent_window(data, rows, seq.long_length)
        return ytdnn.youtube_dnn_loss_and_grads(
            p, items, mask, rows.targets, negatives, data.item_category, model_cfg
        )

    return _timed_fit("YouTube DNN", params, model_cfg, step, cfg.steps, cfg, rng, stream)


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
    batches = _uniform_batches(samples, data, cfg, rng)

    def step(p: Params, r: np.random.Generator) -> tuple[float, Params]:
        rows, negatives = next(batches)
        batch = _mind_batch(data, rows, seq, cfg.num_interests, r)
        loss, grads = mind_model.mind_loss(
            p, batch, rows.targets, negatives, model_cfg, ReadoutConfig()
        )
        return float(loss), grads

    return _timed_fit("MIND", params, model_cfg, step, cfg.steps, cfg, rng, stream)


def train_pgin(
    data: SyntheticData,
    samples: Samples,
    seq: SequenceConfig,
    cfg: TrainConfig,
    stream: TextIO | None = sys.stderr,
) -> Trained:
    """PGIN on the same data: predict each training target's category."""
    model_cfg = pgin_model.PGINConfig(
        num_categories=data.num_categories, num_items=data.num_items, user_feature_dim=1,
        dim=cfg.pgin_dim,
    )
    rng = _seeded(cfg)
    params = pgin_model.pgin_init(rng, model_cfg)

    def step(p: Params, r: np.random.Generator) -> tuple[float, Params]:
        rows = samples.take(_random_rows(samples, cfg.batch_size, r))
        return pgin_model.pgin_loss_and_grads(p, pgin_batch(data, rows, seq), model_cfg)

    return _timed_fit("PGIN", params, model_cfg, step, cfg.pgin_steps, cfg, rng, stream)


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


def pgin_top_categories(
    pgin: Trained,
    data: SyntheticData,
    samples: Samples,
    seq: SequenceConfig,
    k: int,
    long_length: int | None = None,
    chunk: int = 256,
) -> IntArray:
    """PGIN's top-k categories (S, k) for every sample, most probable first, reading the recent
    `long_length` behaviours (the whole long sequence by default)."""
    k = min(k, data.num_categories)
    parts = [
        pgin_model.top_k_categories(
            pgin.params, pgin_batch(data, samples.take(rows), seq, long_length), k, pgin.config
        )
        for rows in _chunks(samples, chunk)
    ]
    return np.concatenate(parts)


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


def evaluate_ulim(
    model: Trained,
    data: SyntheticData,
    samples: Samples,
    categories: IntArray,
    seq: SequenceConfig,
    ev: EvalConfig,
) -> dict[int, float]:
    """HR@N per cut-off of ULIM's cascade from the given route categories (S, K)."""
    index = build_index(
        ulim_model.catalogue_vectors(model.params, data.item_category), data.item_category, ev
    )
    v_s, v_l, present = ulim_vectors(model, data, samples, categories, seq, ev.chunk)
    result = {}
    for n in ev.cutoffs:
        out = cascade_retrieve(index, categories, v_l, v_s, CascadeConfig(n=n), long_mask=present)
        result[n] = hit_rate(out.ids, out.valid, samples.targets, n)
    return result


def merged_search(index: SearchIndex, queries: Array, n: int) -> IntArray:
    """Top-n of the union of each query's top-n (queries (S, K, D)), by score, de-duplicated;
    ties go to the lower item id. Rows are padded with -1 if fewer than n distinct items."""
    s, k, d = queries.shape
    ids, scores = index.search(queries.reshape(s * k, d), n)
    ids = ids.reshape(s, -1)
    scores = scores.reshape(s, -1)
    out = np.full((s, n), -1, dtype=np.int64)
    for row in range(s):
        order = np.lexsort((ids[row], -scores[row]))
        _, first = np.unique(ids[row][order], return_index=True)
        kept = order[np.sort(first)][:n]
        out[row, : kept.shape[0]] = ids[row][kept]
    return out


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
    return _merged_hit_rates(index, vectors, samples, ev)


def _merged_hit_rates(
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
    return _merged_hit_rates(index, np.concatenate(interests), samples, ev)
