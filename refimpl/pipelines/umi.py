"""UMI's pipeline (spec/umi.md, "Demo"): every model of UMI Tables 2, 3 and 5 trained and evaluated
under UMI's protocol on any `Interactions` with profile fields.

- Protocol: strong generalization (`refimpl.data.protocols.strong_generalization`): users split
  80/10/10; training users' events all train; a held-out user's first 90% of events are the history
  (truncated to the last T), the last 10% the targets.
- Training: every model by `refimpl.train.fit` (the one rule: validation loss on the validation
  users' first targets, of the params' moving average when `ema_decay` > 0, early stopping, the
  learned-nothing level) with the same budget, width D,
  batch, learning rate, number of negatives N (sampled uniformly from the catalogue, shared by a
  batch, as a sampled softmax does) and interests K. A training row is a training event with at
  least one earlier event, its history the T events before it.
- Profiles: every profile field of the log, each field's codes offset into one profile table,
  flows into MIND, UMI and DSSM (whose user tower reads the profile only). YouTube DNN and
  ComiRec-DR read behaviours only (as in their papers); YouTube DNN also embeds the items' categories.
- Serving: a multi-interest model scores every item by its best interest (UMI eq. 1,
  `refimpl.nn.max_interest_score`), exactly over the whole catalogue; seen items (anything in the
  user's history before the cut-off) are excluded by default (`seen`), the policy is reported.
- Targets: every event, or only the events of behaviour `target_behaviour` (then the others are
  history only: training rows end at an eligible event, a held-out user's targets are its eligible
  events after the history, the validation row's target the first of them).
- Precision: `dtype` "float64" (the default) or "float32": every model's params are drawn as in
  float64 and cast at init, the batches' float arrays (the routing logits' initialisation) drawn in
  float64 and cast; the components keep that dtype through forward, backward and Adam (a cheaper
  step: spec/umi.md, "Convergence").
- Metrics: HitRate@N (UMI eq. 15) and Precision@N (eq. 16) in percent, per cut-off.
- Non-learned baselines from the training events: global popularity, and each user's category
  shares times in-category popularity.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TextIO

import numpy as np

from refimpl._check import Array, BoolArray, IntArray, require_choice, require_int, require_positive_int, require_real
from refimpl.data.interactions import Interactions
from refimpl.data.protocols import Requests, Split, drop_seen, seen_items, strong_generalization, training_events
from refimpl.metrics import hit_rate_at_n, precision_at_n
from refimpl.models import comirec as comirec_model
from refimpl.models import dssm as dssm_model
from refimpl.models import mind as mind_model
from refimpl.models import umi as umi_model
from refimpl.models import youtube_dnn as ytdnn
from refimpl.models._params import Params
from refimpl.models.ulim import catalogue_vectors
from refimpl.models.umi import UserBatch, draw_initial_logits
from refimpl.nn.capsule_routing import CapsuleRoutingConfig
from refimpl.nn.max_interest_score import max_interest_score_forward
from refimpl.nn.multi_interest_readout import ReadoutConfig
from refimpl.progress import track
from refimpl.train import Curve, TrainConfig, chance_sampled_softmax, fit, training_record

__all__ = [
    "BASELINES",
    "CATEGORY_POPULARITY",
    "MODEL_NAMES",
    "POPULARITY",
    "SEEN",
    "Prepared",
    "RunResult",
    "Scores",
    "Trained",
    "UMIPipelineConfig",
    "behaviour_weights",
    "evaluate",
    "non_learned_scores",
    "check_prepared",
    "prepare",
    "run_models",
    "train_model",
    "validate_pipeline_config",
]

POPULARITY = "global popularity"
CATEGORY_POPULARITY = "category share x popularity"
BASELINES = (POPULARITY, CATEGORY_POPULARITY)
"""The non-learned rows: items by training-event count; and, per user, P(category | history) times
P(item | category) counted on the training events."""

MODEL_NAMES = ("DSSM", "YouTube DNN", "MIND", "MIND+HN", "ComiRec-DR", "ComiRec-DR+HN", "UMI", "UMI w/o DAR",
               "UMI w/o IR", "UMI w/o HN")
"""The learned rows, in UMI Table 2's order then Table 3's ablations."""

SEEN = ("excluded", "kept")


@dataclass(frozen=True)
class UMIPipelineConfig:
    """What every model of a run shares (UMI's MovieLens settings where they fit, spec/umi.md)."""

    max_length: int = 50  # T, the history truncation
    num_interests: int = 3  # K
    num_negatives: int = 5  # N, sampled per batch from the catalogue
    batch_size: int = 128
    lr: float = 0.005
    dim: int = 32  # D
    profile_dim: int = 8  # F, the width of one profile field's embedding
    steps: int = 1_500  # the cap on Adam steps
    eval_every: int = 100
    patience: int = 3
    min_improvement: float = 0.002
    lr_cuts: int = 0  # plateaus that cut the lr by lr_factor before one stops training (refimpl.train.fit)
    lr_factor: float = 0.3
    validation_rows: int = 512  # validation users' (history, first target) rows, at most
    cutoffs: tuple[int, ...] = (10, 50, 300)  # N of HitRate@N and Precision@N
    seen: str = "excluded"
    target_behaviour: str | None = None  # only events of this behaviour are targets; None: every event
    seed: int = 0  # the user split, the init and the batches
    attention_bias: float = 3.0  # UMI's UGANet output bias at init: behaviours start open (a_i ~ 0.95)
    attention_hold: int = 150  # UMI's first steps with UGANet's params held at their init (spec/umi.md)
    dtype: str = "float64"  # of every model's params and the batches' float arrays; or "float32"
    ema_decay: float = 0.0  # > 0: validation and the params kept read the moving average (refimpl.train.fit)


def validate_pipeline_config(cfg: UMIPipelineConfig) -> None:
    """Refuse a config the pipeline cannot honour, naming the field. The training fields (the
    budget, the rule, Adam's lr, the dtype) are TrainConfig's, checked by it under the same names."""
    if not isinstance(cfg, UMIPipelineConfig):
        raise TypeError(f"cfg: expected a UMIPipelineConfig, got {type(cfg).__name__}")
    for name in ("max_length", "profile_dim"):
        require_positive_int(f"cfg.{name}", getattr(cfg, name))
    _train_config(cfg)
    require_real("cfg.attention_bias", cfg.attention_bias)
    require_int("cfg.attention_hold", cfg.attention_hold, low=0)
    if not isinstance(cfg.cutoffs, tuple) or not cfg.cutoffs:
        raise ValueError(f"cfg.cutoffs: expected a non-empty tuple of positive integers, got {cfg.cutoffs!r}")
    for n in cfg.cutoffs:
        require_positive_int("cfg.cutoffs", n)
    require_choice("cfg.seen", cfg.seen, SEEN)
    if cfg.target_behaviour is not None and not isinstance(cfg.target_behaviour, str):
        raise TypeError(f"cfg.target_behaviour: expected a behaviour name or None, got {cfg.target_behaviour!r}")


@dataclass(frozen=True)
class Prepared:
    """What every model of one run reads: the log, the split, the training rows, the validation
    rows, the profile rows and the test requests with their seen items."""

    interactions: Interactions
    split: Split
    profile_ids: IntArray  # (U, C) each field's code offset into the one profile table
    num_profile_values: int
    train_ends: IntArray  # (S,) absolute event index of each training target
    valid_ends: IntArray  # (S_v,) the validation rows' history end (their target is the event there)
    valid_starts: IntArray  # (S_v,)
    valid_users: IntArray  # (S_v,)

    def __post_init__(self) -> None:
        check_prepared(self)

    @property
    def num_fields(self) -> int:
        return int(self.profile_ids.shape[1])


def _index_column(name: str, value: object, low: int, high: int, length: int | None = None) -> IntArray:
    """A non-empty (n,) integer array with values in [low, high); `length` when given."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(value).__name__}")
    if not np.issubdtype(value.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer array, got {value.dtype}")
    if value.ndim != 1 or value.shape[0] == 0 or (length is not None and value.shape[0] != length):
        raise ValueError(f"{name}: expected shape ({'n >= 1' if length is None else length},), got {value.shape}")
    if value.min() < low or value.max() >= high:
        raise ValueError(f"{name}: expected values in [{low}, {high}), got [{value.min()}, {value.max()}]")
    return value


def check_prepared(prepared: Prepared) -> None:
    """Every field of a Prepared consistent with its log (each error names the field)."""
    if not isinstance(prepared, Prepared):
        raise TypeError(f"prepared: expected a Prepared, got {type(prepared).__name__}")
    log = prepared.interactions
    if not isinstance(log, Interactions):
        raise TypeError(f"interactions: expected an Interactions, got {type(log).__name__}")
    if not isinstance(prepared.split, Split):
        raise TypeError(f"split: expected a Split, got {type(prepared.split).__name__}")
    values = require_positive_int("num_profile_values", prepared.num_profile_values)
    profile = prepared.profile_ids
    if not isinstance(profile, np.ndarray) or not np.issubdtype(profile.dtype, np.integer):
        raise TypeError(f"profile_ids: expected an integer numpy array, got {getattr(profile, 'dtype', profile)!r}")
    if profile.ndim != 2 or profile.shape[0] != log.num_users or profile.shape[1] == 0:
        raise ValueError(f"profile_ids: expected shape (U, C) = ({log.num_users}, C >= 1), got {profile.shape}")
    if profile.min() < 0 or profile.max() >= values:
        raise ValueError(f"profile_ids: expected rows of the profile table in [0, {values})")
    _index_column("train_ends", prepared.train_ends, 0, log.num_events)
    users = _index_column("valid_users", prepared.valid_users, 0, log.num_users)
    ends = _index_column("valid_ends", prepared.valid_ends, 0, log.num_events, users.shape[0])
    starts = _index_column("valid_starts", prepared.valid_starts, 0, log.num_events, users.shape[0])
    if np.any(starts < log.user_offsets[users]) or np.any(starts > ends) or np.any(ends >= log.user_offsets[users + 1]):
        raise ValueError("valid_starts, valid_ends: expected each validation row's history and target inside its "
                         "user's events")


def prepare(interactions: Interactions, cfg: UMIPipelineConfig, split: Split | None = None) -> Prepared:
    """Split by strong generalization (seed `cfg.seed`, T = `cfg.max_length`), or take another
    protocol's `split` of the log (refimpl.pipelines.registry), and lay out the rows."""
    if not isinstance(interactions, Interactions):
        raise TypeError(f"interactions: expected an Interactions, got {type(interactions).__name__}")
    validate_pipeline_config(cfg)
    if not interactions.profile:
        raise ValueError("interactions: UMI's models read user profile fields; this log has none")
    if split is None:
        split = strong_generalization(interactions, cfg.seed, cfg.max_length)
    elif not isinstance(split, Split):
        raise TypeError(f"split: expected a Split, got {type(split).__name__}")
    users, positions = training_events(interactions, split, min_history=1)
    train_ends = (interactions.user_offsets[users] + positions).astype(np.int64)
    eligible = _eligible_targets(interactions, cfg.target_behaviour)
    train_ends = train_ends[eligible[train_ends]]
    validation, valid_firsts = _targets_of(interactions, split.validation, eligible)
    test, _ = _targets_of(interactions, split.test, eligible)
    split = replace(split, validation=validation, test=test)
    sizes = [interactions.profile_values[name].shape[0] for name in interactions.profile]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    profile = np.stack([interactions.profile[name] for name in interactions.profile], axis=1) + offsets
    valid = split.validation
    rows = np.random.Generator(np.random.PCG64(cfg.seed + 1)).permutation(valid.num_rows)[: cfg.validation_rows]
    rows = np.sort(rows)
    return Prepared(
        interactions=interactions,
        split=split,
        profile_ids=profile.astype(np.int64),
        num_profile_values=int(sum(sizes)),
        train_ends=train_ends,
        valid_ends=valid_firsts[rows],
        valid_starts=valid.history_start[rows],
        valid_users=valid.users[rows],
    )


def _eligible_targets(interactions: Interactions, behaviour: str | None) -> BoolArray:
    """(E,) whether each event may be a target: every event, or those of behaviour `behaviour`."""
    if behaviour is None:
        return np.ones(interactions.num_events, dtype=bool)
    if interactions.behaviours is None or behaviour not in interactions.behaviour_names:
        raise ValueError(f"cfg.target_behaviour: expected one of the log's behaviours "
                         f"{interactions.behaviour_names}, got {behaviour!r}")
    eligible: BoolArray = interactions.behaviours == interactions.behaviour_names.index(behaviour)
    return eligible


def _targets_of(interactions: Interactions, requests: Requests, eligible: BoolArray) -> tuple[Requests, IntArray]:
    """The held-out rows with only their eligible target events (a row's targets are the events from
    its history's end on: to the user's last event under strong generalization, the one next event
    under leave-last-out); a row left without one is dropped. Also each kept row's first eligible
    target event (the validation rows' target)."""
    after = requests.history_end + np.diff(requests.target_offsets)
    events = [np.arange(s, e)[eligible[s:e]] for s, e in zip(requests.history_end, after, strict=True)]
    kept = np.array([e.shape[0] > 0 for e in events], dtype=bool)
    if not kept.any():
        raise ValueError("cfg.target_behaviour: no held-out user has a target of this behaviour")
    chosen = [e for e, k in zip(events, kept, strict=True) if k]
    counts = np.array([e.shape[0] for e in chosen], dtype=np.int64)
    rows = Requests(users=requests.users[kept], history_start=requests.history_start[kept],
                    history_end=requests.history_end[kept],
                    target_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                    targets=interactions.items[np.concatenate(chosen)].astype(np.int64))
    return rows, np.array([e[0] for e in chosen], dtype=np.int64)


def _windows(interactions: Interactions, starts: IntArray, ends: IntArray, length: int) -> tuple[IntArray, BoolArray]:
    """The events [max(start, end - length), end) of each row, oldest first, left-aligned in (R, length);
    padded positions hold item 0 and mask False."""
    first = np.maximum(starts, ends - length)
    index = first[:, None] + np.arange(length)[None, :]
    mask = index < ends[:, None]
    items: IntArray = interactions.items[np.where(mask, index, 0)].astype(np.int64)
    return np.where(mask, items, 0), mask


def _user_batch(prepared: Prepared, users: IntArray, starts: IntArray, ends: IntArray, cfg: UMIPipelineConfig,
                rng: np.random.Generator) -> UserBatch:
    items, mask = _windows(prepared.interactions, starts, ends, cfg.max_length)
    return UserBatch(items, mask, prepared.profile_ids[users],
                     draw_initial_logits(rng, users.shape[0], cfg.max_length, cfg.num_interests, dtype=cfg.dtype))


@dataclass(frozen=True)
class _Model:
    """A model as the pipeline drives it: its initial params, its training loss and gradients, the
    interests it serves with (B, K, D) and the item vectors they search (I, D)."""

    params: Params
    loss: Callable[[Params, UserBatch, IntArray, IntArray], tuple[float, Params]]
    interests: Callable[[Params, UserBatch], Array]
    items: Callable[[Params], Array]


def _multi_interest(init: Callable[[np.random.Generator, object], Params], forward: Callable[..., tuple[Array, object]],
                    loss: Callable[..., tuple[Array, Params]], model_cfg: object, mode: str,
                    rng: np.random.Generator) -> _Model:
    readout = ReadoutConfig(mode=mode)

    def loss_fn(p: Params, batch: UserBatch, positives: IntArray, negatives: IntArray) -> tuple[float, Params]:
        value, grads = loss(p, batch, positives, negatives, model_cfg, readout)
        return float(value), grads

    return _Model(init(rng, model_cfg), loss_fn, lambda p, batch: forward(p, batch, model_cfg)[0],
                  lambda p: p["item_table"])


def _umi_config(name: str, prepared: Prepared, cfg: UMIPipelineConfig) -> umi_model.UMIConfig:
    """The model config of UMI or one of its ablations (`name`) on the prepared log."""
    return umi_model.UMIConfig(prepared.interactions.num_items, prepared.num_profile_values, prepared.num_fields,
                               cfg.dim, cfg.profile_dim, cfg.num_interests, routing=CapsuleRoutingConfig(),
                               user_guided_attention=name != "UMI w/o DAR", interest_refinement=name != "UMI w/o IR",
                               attention_bias=cfg.attention_bias)


def _build(name: str, prepared: Prepared, cfg: UMIPipelineConfig, rng: np.random.Generator) -> _Model:
    log = prepared.interactions
    sizes: dict[str, int] = dict(num_items=log.num_items, num_profile_values=prepared.num_profile_values,
                                 num_fields=prepared.num_fields, dim=cfg.dim, profile_dim=cfg.profile_dim,
                                 num_interests=cfg.num_interests)
    hn = "harder_negatives"
    if name in ("MIND", "MIND+HN"):
        mind_cfg = mind_model.MINDConfig(sizes["num_items"], sizes["num_profile_values"], sizes["num_fields"],
                                         sizes["dim"], sizes["profile_dim"], sizes["num_interests"])
        return _multi_interest(mind_model.mind_init, mind_model.mind_forward, mind_model.mind_loss,  # type: ignore[arg-type]
                               mind_cfg, hn if name.endswith("+HN") else "standard", rng)
    if name in ("ComiRec-DR", "ComiRec-DR+HN"):
        comirec_cfg = comirec_model.ComiRecConfig(sizes["num_items"], sizes["dim"], sizes["num_interests"],
                                                  cfg.max_length)
        return _multi_interest(comirec_model.comirec_init, comirec_model.comirec_forward,  # type: ignore[arg-type]
                               comirec_model.comirec_loss, comirec_cfg, hn if name.endswith("+HN") else "standard",
                               rng)
    if name == "DSSM":
        dssm_cfg = dssm_model.DSSMConfig(sizes["num_items"], sizes["num_profile_values"], sizes["num_fields"],
                                         sizes["dim"], sizes["profile_dim"])
        return _multi_interest(dssm_model.dssm_init, dssm_model.dssm_forward, dssm_model.dssm_loss,  # type: ignore[arg-type]
                               dssm_cfg, "standard", rng)
    if name.startswith("UMI"):
        return _multi_interest(umi_model.umi_init, umi_model.umi_forward, umi_model.umi_loss,  # type: ignore[arg-type]
                               _umi_config(name, prepared, cfg), "standard" if name == "UMI w/o HN" else hn, rng)
    if name == "YouTube DNN":
        yt_cfg = ytdnn.YouTubeDNNConfig(num_items=log.num_items, num_categories=log.num_categories, dim=cfg.dim)
        category = log.item_category

        def yt_loss(p: Params, batch: UserBatch, positives: IntArray, negatives: IntArray) -> tuple[float, Params]:
            return ytdnn.youtube_dnn_loss_and_grads(p, batch.behaviour_ids, batch.mask, positives, negatives,
                                                    category, yt_cfg)

        return _Model(ytdnn.youtube_dnn_init(rng, yt_cfg), yt_loss,
                      lambda p, batch: ytdnn.user_forward(p, batch.behaviour_ids, batch.mask, category)[0][:, None, :],
                      lambda p: catalogue_vectors(p, category))
    raise ValueError(f"name: expected one of {MODEL_NAMES}, got {name!r}")


@dataclass(frozen=True)
class Trained:
    """A trained model: its name, params, loss curve and training time; `interests` and `items`
    give what serving searches with."""

    name: str
    params: Params
    curve: Curve
    seconds: float
    interests: Callable[[Params, UserBatch], Array]
    items: Callable[[Params], Array]


def _train_config(cfg: UMIPipelineConfig) -> TrainConfig:
    return TrainConfig(steps=cfg.steps, eval_every=cfg.eval_every, patience=cfg.patience,
                       min_improvement=cfg.min_improvement, validation_rows=cfg.validation_rows,
                       batch_size=cfg.batch_size, num_negatives=cfg.num_negatives, dim=cfg.dim,
                       num_interests=cfg.num_interests, lr=cfg.lr, lr_cuts=cfg.lr_cuts, lr_factor=cfg.lr_factor,
                       seed=cfg.seed, dtype=cfg.dtype, ema_decay=cfg.ema_decay)


def train_model(name: str, prepared: Prepared, cfg: UMIPipelineConfig,
                stream: TextIO | None = sys.stderr) -> Trained:
    """Train model `name` (one of MODEL_NAMES) by `refimpl.train.fit` on the prepared split."""
    require_choice("name", name, MODEL_NAMES)
    validate_pipeline_config(cfg)
    check_prepared(prepared)
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    model = _build(name, prepared, cfg, rng)
    if cfg.dtype != "float64":
        # drawn in float64 then cast: a float32 run starts from the float64 run's numbers, rounded
        model = replace(model, params={n: p.astype(cfg.dtype) for n, p in model.params.items()})
    log = prepared.interactions
    num_negatives = min(cfg.num_negatives, log.num_items)
    owner = log.event_users()

    def step(p: Params, r: np.random.Generator) -> tuple[float, Params]:
        rows = r.choice(prepared.train_ends.shape[0], size=min(cfg.batch_size, prepared.train_ends.shape[0]),
                        replace=False)
        ends = prepared.train_ends[rows]
        users = owner[ends]
        batch = _user_batch(prepared, users, log.user_offsets[users], ends, cfg, r)
        negatives = r.choice(log.num_items, size=num_negatives, replace=False).astype(np.int64)
        return model.loss(p, batch, log.items[ends], negatives)

    # validation rows are fixed once: their batches, negatives and routing initialisation
    valid_rng = np.random.Generator(np.random.PCG64(cfg.seed + 2))
    chunks = []
    for start in range(0, prepared.valid_ends.shape[0], cfg.batch_size):
        part = slice(start, start + cfg.batch_size)
        batch = _user_batch(prepared, prepared.valid_users[part], prepared.valid_starts[part],
                            prepared.valid_ends[part], cfg, valid_rng)
        negatives = valid_rng.choice(log.num_items, size=num_negatives, replace=False).astype(np.int64)
        chunks.append((batch, log.items[prepared.valid_ends[part]], negatives))
    total = sum(positives.shape[0] for _, positives, _ in chunks)
    chance = sum(chance_sampled_softmax(pos, neg) * pos.shape[0] for _, pos, neg in chunks) / total

    def valid_fn(p: Params) -> float:
        return float(sum(model.loss(p, batch, pos, neg)[0] * pos.shape[0] for batch, pos, neg in chunks) / total)

    clock = time.perf_counter()
    # UGANet held at its init: before the item table carries the categories, behaviours are noise to
    # the loss and Adam would close the gate for good (spec/umi.md, "Attention collapse")
    held = [n for n in model.params if n.startswith("uga_")]
    params, curve = fit(name, model.params, step, valid_fn, chance, _train_config(cfg), cfg.steps, rng, stream,
                        held=held, hold_steps=cfg.attention_hold if held else 0)
    return Trained(name, params, curve, time.perf_counter() - clock, model.interests, model.items)


@dataclass(frozen=True)
class Scores:
    """HitRate@N and Precision@N (percent) per cut-off of one row of a table."""

    hit_rate: dict[int, float]
    precision: dict[int, float]


def _rank(scores: Array, width: int) -> IntArray:
    """The `width` best items of each row (R, I), ties to the lower id."""
    ranked: IntArray = np.argsort(-scores, axis=1, kind="stable")[:, :width].astype(np.int64)
    return ranked


def _metrics(prepared: Prepared, scores: Array, cfg: UMIPipelineConfig) -> Scores:
    """Rank every test request's scores (R, I), drop seen items if the config says so, measure."""
    test = prepared.split.test
    top = max(cfg.cutoffs)
    if cfg.seen == "excluded":
        seen = seen_items(prepared.interactions, test)
        most_seen = int(np.diff(seen.offsets).max(initial=0))
        ranked = drop_seen(_rank(scores, min(top + most_seen, scores.shape[1])), seen, top)
    else:
        ranked = _rank(scores, min(top, scores.shape[1]))
    retrieved = [row[row >= 0] for row in ranked]
    targets = [test.target_items(r) for r in range(test.num_rows)]
    return Scores(
        {n: round(100.0 * hit_rate_at_n(retrieved, targets, n), 2) for n in cfg.cutoffs},
        {n: round(100.0 * precision_at_n(retrieved, targets, n), 2) for n in cfg.cutoffs},
    )


def evaluate(model: Trained, prepared: Prepared, cfg: UMIPipelineConfig, chunk: int = 256) -> Scores:
    """Serve the test requests by UMI eq. 1 over the whole catalogue and measure."""
    validate_pipeline_config(cfg)
    check_prepared(prepared)
    chunk = require_positive_int("chunk", chunk)
    test = prepared.split.test
    # serving draws the routing initialisation too: a fixed seed keeps evaluation reproducible
    rng = np.random.Generator(np.random.PCG64(0))
    items = model.items(model.params)
    parts = []
    for start in track(range(0, test.num_rows, chunk), f"{model.name} evaluation", unit="batch", delay=2.0):
        part = slice(start, start + chunk)
        batch = _user_batch(prepared, test.users[part], test.history_start[part], test.history_end[part], cfg, rng)
        parts.append(max_interest_score_forward(model.interests(model.params, batch), items)[0])
    return _metrics(prepared, np.concatenate(parts), cfg)


def behaviour_weights(model: Trained, prepared: Prepared, cfg: UMIPipelineConfig,
                      chunk: int = 256) -> tuple[Array, IntArray]:
    """UMI's user-guided attention a_i (UMI eq. 2) on every test request's served history, as
    serving computes it: the weights (R, T) and each position's event index into the log (R, T),
    -1 at padded positions (weight 0). `model` is UMI or an ablation that keeps the attention;
    permute `prepared.profile_ids` to see what the attention does without the user's own profile."""
    require_choice("model.name", model.name, tuple(n for n in MODEL_NAMES if n.startswith("UMI") and "DAR" not in n))
    validate_pipeline_config(cfg)
    check_prepared(prepared)
    chunk = require_positive_int("chunk", chunk)
    test = prepared.split.test
    umi_cfg = _umi_config(model.name, prepared, cfg)
    rng = np.random.Generator(np.random.PCG64(0))
    weights, events = [], []
    for start in range(0, test.num_rows, chunk):
        part = slice(start, start + chunk)
        batch = _user_batch(prepared, test.users[part], test.history_start[part], test.history_end[part], cfg, rng)
        weights.append(umi_model.umi_forward(model.params, batch, umi_cfg)[1].routing.item_weights)
        first = np.maximum(test.history_start[part], test.history_end[part] - cfg.max_length)
        events.append(np.where(batch.mask, first[:, None] + np.arange(cfg.max_length)[None, :], -1))
    return np.concatenate(weights), np.concatenate(events).astype(np.int64)


def non_learned_scores(name: str, prepared: Prepared, cfg: UMIPipelineConfig) -> Scores:
    """A non-learned baseline (one of BASELINES) counted on the training events only."""
    require_choice("name", name, BASELINES)
    validate_pipeline_config(cfg)
    check_prepared(prepared)
    log, split = prepared.interactions, prepared.split
    owner = log.event_users()
    training = (np.arange(log.num_events) < split.train_end[owner]) & _eligible_targets(log, cfg.target_behaviour)
    counts = np.bincount(log.items[training], minlength=log.num_items).astype(np.float64)
    test = split.test
    if name == POPULARITY:
        scores = np.broadcast_to(counts, (test.num_rows, log.num_items))
    else:
        in_category = counts / np.maximum(np.bincount(log.item_category, weights=counts,
                                                      minlength=log.num_categories), 1.0)[log.item_category]
        shares = np.zeros((test.num_rows, log.num_categories))
        rows = np.repeat(np.arange(test.num_rows), test.history_end - test.history_start)
        events = np.concatenate([np.arange(s, e) for s, e in zip(test.history_start, test.history_end, strict=True)])
        np.add.at(shares, (rows, log.item_category[log.items[events]]), 1.0)
        shares /= np.maximum(shares.sum(axis=1, keepdims=True), 1.0)
        # ties (an unseen category) fall back to popularity through the small second term
        scores = shares[:, log.item_category] * in_category + 1e-9 * counts / max(counts.max(), 1.0)
    return _metrics(prepared, np.asarray(scores), cfg)


@dataclass
class RunResult:
    """Every row of one run: scores and training records."""

    scores: dict[str, Scores] = field(default_factory=dict)
    training: dict[str, dict[str, float]] = field(default_factory=dict)


def run_models(interactions: Interactions, cfg: UMIPipelineConfig, names: tuple[str, ...] = MODEL_NAMES,
               baselines: tuple[str, ...] = BASELINES, stream: TextIO | None = sys.stderr) -> RunResult:
    """Prepare the split once, score the non-learned baselines, train and evaluate every model."""
    prepared = prepare(interactions, cfg)
    result = RunResult()
    for name in baselines:
        result.scores[name] = non_learned_scores(name, prepared, cfg)
    for name in names:
        model = train_model(name, prepared, cfg, stream)
        result.scores[name] = evaluate(model, prepared, cfg)
        result.training[name] = training_record(model.curve, model.seconds)
    return result

