"""IFA's Table 2 and 3 models on planted request data (spec/ifa.md#the-demo).

Every model scores the whole candidate set of a request with the same feature layout, towers and
ESMM loss as IFA (refimpl/models/ifa.py), and differs only in what reads the behaviours:

    h_m = [e_u ; e_m ; e_x,m ; f_m (; r_m)]      f_m: the sequence block, r_m: RAM (if the model has it)
    a_m = MLP_imp(h_m),  c_m = MLP_clk(h_m)
    loss = the ESMM loss of (a, c) (IFA eq. 5)

    AvgPooling   f_m = mean of the recent window (the same for every candidate)
    DIN          f_m = target attention of candidate m over the recent window
    SIM-hard     f_m = target attention over the candidate's category subsequence (most recent T)
    SIM-soft     f_m = target attention over the k behaviours of the lifelong sequence with the
                 largest inner product e_m . e_l (refimpl.nn.top_k_attention, score "inner_product")
    TWIN         f_m = the same, the k picked by the attention's own head-0 score (score "attention")
    IFA-FSM      TWIN's f_m with IFA's RAM (IFA with its FSM replaced by TWIN's two-step attention)
    IFA          f_m = FSM (linear attention over the whole lifelong sequence), r_m = RAM:
                 refimpl.models.ifa.ifa_forward itself

e_u is the user's profile segment (no per-user id: a user id would let a model memorise a user's
clicks instead of reading the sequences). Width E, heads, tower sizes, batch, learning rate and the
stopping rule (refimpl.train.fit) are the same for every model.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from refimpl._check import (
    Array,
    BoolArray,
    IntArray,
    Shapes,
    require_choice,
    require_ids,
    require_int,
    require_positive_int,
    require_real,
)
from refimpl.data.category_subsequence import category_subsequences
from refimpl.data.requests import RequestData, check_request_data
from refimpl.metrics import auc
from refimpl.models._params import (
    Params,
    attention_block,
    attention_block_grads,
    attention_block_shapes,
    check_param_names,
    check_param_shapes,
    normal_init,
)
from refimpl.models.ifa import (
    IFABatch,
    IFACache,
    IFAConfig,
    esmm_loss_backward,
    esmm_loss_forward,
    ifa_backward,
    ifa_forward,
    ifa_params_from_dict,
    ifa_params_to_dict,
)
from refimpl.nn.attention import (
    AttentionCache,
    AttentionConfig,
    TargetAttentionCache,
    attention_backward,
    attention_forward,
    target_attention_backward,
    target_attention_forward,
)
from refimpl.nn.embedding import EmbeddingCache, embedding_backward, embedding_forward
from refimpl.nn.linear import LinearParams
from refimpl.nn.linear_attention import (
    LinearAttentionCache,
    LinearAttentionConfig,
    linear_self_attention_backward,
    linear_self_attention_forward,
)
from refimpl.nn.mlp import MLPCache, MLPConfig, MLPParams, mlp_backward, mlp_forward, sigmoid
from refimpl.nn.pooling import PoolCache, masked_mean_pool_backward, masked_mean_pool_forward
from refimpl.nn.top_k_attention import (
    TopKAttentionCache,
    TopKAttentionConfig,
    top_k_attention_backward,
    top_k_attention_forward,
)
from refimpl.progress import track
from refimpl.train import LR_SCHEDULES, Curve, TrainConfig, fit

__all__ = [
    "RANKERS",
    "RankerConfig",
    "RankerSpec",
    "RankingInputs",
    "Split",
    "TrainedRanker",
    "evaluate",
    "non_learned_scores",
    "prepare_inputs",
    "ranker_backward",
    "ranker_forward",
    "ranker_init",
    "split_requests",
    "train_ranker",
]

SEQUENCE_BLOCKS = ("avg", "din", "sim_hard", "sim_soft", "twin", "linear")
TOP_K_SCORES = {"sim_soft": "inner_product", "twin": "attention"}
OBJECTIVES = ("impression", "click", "click_shown")
ATTENTION_INITS = ("unit_variance", "fan_in")  # RankerConfig.attention_init


@dataclass(frozen=True)
class RankerSpec:
    """A model of the tables: what reads the behaviours, and whether RAM reads the candidate set."""

    sequence: str
    ram: bool

    def __post_init__(self) -> None:
        require_choice("RankerSpec.sequence", self.sequence, SEQUENCE_BLOCKS)
        if not isinstance(self.ram, bool):
            raise TypeError(f"RankerSpec.ram: expected a bool, got {self.ram!r}")
        if self.sequence == "linear" and not self.ram:
            raise ValueError("RankerSpec.ram: the linear sequence block is IFA's FSM and comes with RAM")


RANKERS: dict[str, RankerSpec] = {
    "AvgPooling": RankerSpec("avg", False),
    "DIN": RankerSpec("din", False),
    "SIM-hard": RankerSpec("sim_hard", False),
    "SIM-soft": RankerSpec("sim_soft", False),
    "TWIN": RankerSpec("twin", False),
    "IFA": RankerSpec("linear", True),
    "IFA-FSM": RankerSpec("twin", True),
}


@dataclass(frozen=True)
class RankerConfig:
    """What every model of a run shares (sizes and the training rule)."""

    width: int = 16  # E
    hidden: int = 64  # the towers' hidden layer
    num_heads: int = 2
    subsequence_length: int = 64  # T, SIM-hard's category subsequence
    top_k: int = 64  # k, the behaviours SIM-soft and TWIN keep per candidate
    batch_size: int = 32  # requests per step
    lr: float = 1e-2
    lr_schedule: str = "constant"  # or "cosine" (refimpl.train.scheduled_lr)
    lr_cuts: int = 0  # validation plateaus that cut the lr by lr_factor before one stops training
    lr_factor: float = 0.3
    steps: int = 400  # the cap
    eval_every: int = 40
    patience: int = 4
    min_improvement: float = 0.001
    dtype: str = "float32"  # the params' (and so every activation's) float type
    attention_init: str = "unit_variance"  # or "fan_in" (`ranker_init` says what each draws)

    def __post_init__(self) -> None:
        for name in ("width", "hidden", "num_heads", "subsequence_length", "top_k", "batch_size", "steps", "eval_every",
                     "patience"):
            require_positive_int(f"RankerConfig.{name}", getattr(self, name))
        if self.width % self.num_heads:
            raise ValueError(f"RankerConfig.num_heads: {self.num_heads} heads do not divide width {self.width}")
        require_real("RankerConfig.lr", self.lr, low=0.0, low_open=True)
        require_real("RankerConfig.min_improvement", self.min_improvement, low=0.0)
        require_choice("RankerConfig.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        require_int("RankerConfig.lr_cuts", self.lr_cuts, low=0)
        if not 0.0 < require_real("RankerConfig.lr_factor", self.lr_factor) < 1.0:
            raise ValueError(f"RankerConfig.lr_factor: expected a factor in (0, 1), got {self.lr_factor!r}")
        require_choice("RankerConfig.dtype", self.dtype, ("float32", "float64"))
        require_choice("RankerConfig.attention_init", self.attention_init, ATTENTION_INITS)

def _train_config(cfg: RankerConfig, seed: int) -> TrainConfig:
    """The refimpl.train.fit settings of `cfg` (fit reads the lr and its schedule, eval_every,
    patience, min_improvement)."""
    return TrainConfig(steps=cfg.steps, eval_every=cfg.eval_every, patience=cfg.patience,
                       min_improvement=cfg.min_improvement, batch_size=cfg.batch_size, dim=cfg.width,
                       num_heads=cfg.num_heads, lr=cfg.lr, lr_schedule=cfg.lr_schedule, lr_cuts=cfg.lr_cuts,
                       lr_factor=cfg.lr_factor, seed=seed)


@dataclass(frozen=True)
class RankingInputs:
    """What the models read for B requests: IFA's batch (user_ids are the profile segments, the
    sequence is the whole lifelong one), the recent window (B, R) and SIM-hard's subsequences of
    each candidate's category (B, M, T)."""

    batch: IFABatch
    recent_ids: IntArray  # (B, R)
    recent_mask: BoolArray  # (B, R)
    subsequence_ids: IntArray  # (B, M, T)
    subsequence_mask: BoolArray  # (B, M, T)

    @property
    def size(self) -> int:
        return int(self.batch.cand_ids.shape[0])

    def take(self, rows: IntArray) -> RankingInputs:
        """The requests `rows` (integer indices into the batch axis)."""
        _check_inputs(self)
        if not isinstance(rows, np.ndarray) or not np.issubdtype(rows.dtype, np.integer) or rows.ndim != 1:
            raise TypeError(f"rows: expected a 1-d integer numpy array, got {type(rows).__name__}")
        if rows.size and (rows.min() < 0 or rows.max() >= self.size):
            raise ValueError(f"rows: expected indices in [0, {self.size}), got {rows.min()}..{rows.max()}")
        b = self.batch
        batch = IFABatch(b.user_ids[rows], b.cand_ids[rows], b.cross_ids[rows], b.cand_mask[rows],
                         b.seq_ids[rows], b.seq_mask[rows], b.impression[rows], b.click[rows])
        return RankingInputs(batch, self.recent_ids[rows], self.recent_mask[rows], self.subsequence_ids[rows],
                             self.subsequence_mask[rows])


def _check_inputs(inputs: RankingInputs, name: str = "inputs") -> RankingInputs:
    """Every array of `inputs` of its shape and dtype; errors name the field."""
    if not isinstance(inputs, RankingInputs):
        raise TypeError(f"{name}: expected RankingInputs, got {type(inputs).__name__}")
    b = inputs.batch
    if not isinstance(b, IFABatch):
        raise TypeError(f"{name}.batch: expected an IFABatch, got {type(b).__name__}")
    shapes = Shapes()
    for field_name, dims in (("user_ids", ("B",)), ("cand_ids", ("B", "M")), ("cross_ids", ("B", "M")),
                             ("seq_ids", ("B", "L")), ("impression", ("B", "M")), ("click", ("B", "M"))):
        shapes.check_int(field_name, getattr(b, field_name), dims)
    for field_name in ("impression", "click"):
        require_ids(field_name, getattr(b, field_name), 2)
    shapes.check_bool("cand_mask", b.cand_mask, ("B", "M"))
    shapes.check_bool("seq_mask", b.seq_mask, ("B", "L"))
    shapes.check_int("recent_ids", inputs.recent_ids, ("B", "R"))
    shapes.check_bool("recent_mask", inputs.recent_mask, ("B", "R"))
    shapes.check_int("subsequence_ids", inputs.subsequence_ids, ("B", "M", "T"))
    shapes.check_bool("subsequence_mask", inputs.subsequence_mask, ("B", "M", "T"))
    return inputs


def _check_split(split: Split, size: int) -> Split:
    """Non-empty 1-d request indices in [0, size)."""
    if not isinstance(split, Split):
        raise TypeError(f"split: expected a Split, got {type(split).__name__}")
    for part in ("train", "valid", "test"):
        rows = require_ids(part, getattr(split, part), size, ("S",))
        if rows.size == 0:
            raise ValueError(f"{part}: expected at least one request, got none")
    return split


def _check_params(params: Params, spec: RankerSpec, cfg: RankerConfig) -> None:
    """The names and shapes of `spec`'s params at cfg's sizes (the table rows read from the tables)."""
    _check_spec(spec, cfg)
    check_param_names(params, _param_shapes(spec, {"items": 1, "segments": 1, "cross": 1}, cfg), spec.sequence)
    vocab = {key: int(np.shape(params[table])[0]) for key, table in
             (("items", "item_table"), ("segments", "user_table"), ("cross", "cross_table"))}
    check_param_shapes(params, _param_shapes(spec, vocab, cfg), spec.sequence)
    for key, table in (("items", "item_table"), ("segments", "user_table"), ("cross", "cross_table")):
        if vocab[key] == 0:
            raise ValueError(f"{table}: expected at least one row, got shape {params[table].shape}")


def _check_spec(spec: RankerSpec, cfg: RankerConfig) -> None:
    if not isinstance(spec, RankerSpec):
        raise TypeError(f"spec: expected a RankerSpec, got {type(spec).__name__}")
    if not isinstance(cfg, RankerConfig):
        raise TypeError(f"cfg: expected a RankerConfig, got {type(cfg).__name__}")


def prepare_inputs(data: RequestData, subsequence_length: int) -> RankingInputs:
    """Every request of `data` as model inputs (the category subsequences computed once)."""
    check_request_data(data)
    length = require_positive_int("subsequence_length", subsequence_length)
    n, m = data.candidates.shape
    seq_mask = np.ones(data.sequence.shape, dtype=bool)
    subsequence, subsequence_mask = category_subsequences(
        data.sequence, data.sequence_categories(), seq_mask, data.item_category[data.candidates], length
    )
    recent = data.recent()
    batch = IFABatch(data.segment, data.candidates, data.cross, np.ones((n, m), dtype=bool), data.sequence,
                     seq_mask, data.impression, data.click)
    return RankingInputs(batch, recent, np.ones(recent.shape, dtype=bool), subsequence, subsequence_mask)


def _param_shapes(spec: RankerSpec, vocab: dict[str, int], cfg: RankerConfig) -> dict[str, tuple[int, ...]]:
    e = cfg.width
    shapes: dict[str, tuple[int, ...]] = {
        "item_table": (vocab["items"], e), "user_table": (vocab["segments"], e), "cross_table": (vocab["cross"], e),
    }
    if spec.sequence != "avg":
        shapes.update(attention_block_shapes("fsm", e))
    if spec.ram:
        shapes.update(attention_block_shapes("ram", e))
    blocks = 5 if spec.ram else 4
    for tower in ("impression", "click"):
        shapes.update({f"{tower}_W0": (blocks * e, cfg.hidden), f"{tower}_b0": (cfg.hidden,),
                       f"{tower}_W1": (cfg.hidden, 1), f"{tower}_b1": (1,)})
    return shapes


def ranker_init(rng: np.random.Generator, spec: RankerSpec, data: RequestData, cfg: RankerConfig) -> Params:
    """Fresh params of `spec` for the catalogue of `data`: refimpl.models._params.normal_init (tables
    N(0, 1/E), so rows of unit norm and entries of variance 1/E; other matrices N(0, 1/fan_in);
    vectors 0), then, with cfg.attention_init "unit_variance", every attention block's input
    projections Wq, Wk, Wv (FSM and RAM, all E x E) times sqrt(E), i.e. N(0, 1): q, k and v of
    embedded rows start with unit-variance entries (spec/ifa.md, "The plateau and the init")."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy Generator, got {type(rng).__name__}")
    _check_spec(spec, cfg)
    check_request_data(data)
    vocab = {"items": data.config.num_items, "segments": data.config.num_segments, "cross": data.config.num_cross}
    params = normal_init(_param_shapes(spec, vocab, cfg), rng, np.dtype(cfg.dtype))
    if cfg.attention_init == "unit_variance":
        # N(0, 1/fan_in) assumes unit-variance inputs; on rows of variance 1/E it starts the logits
        # q.k/sqrt(D_h) at std 1/E (a uniform attention, average pooling, whose Wq, Wk gradients are
        # 1/E of Wv's) and the pooled output at a few hundredths: the plateau every model sat on
        scale = np.sqrt(cfg.width)
        for name in [f"{block}_{w}" for block in ("fsm", "ram") for w in ("Wq", "Wk", "Wv")]:
            if name in params:
                params[name] = (params[name] * scale).astype(params[name].dtype)
    return params


@dataclass(frozen=True)
class RankerOutput:
    loss: Array  # ()
    p_imp: Array  # (B, M)
    p_clk: Array  # (B, M)
    score: Array  # (B, M) = p_imp p_clk


@dataclass(frozen=True)
class _SequenceCache:
    kind: str
    keys: EmbeddingCache | None  # the embedded behaviours: recent window, subsequences or lifelong
    pool: PoolCache | None
    attention: AttentionCache | TargetAttentionCache | TopKAttentionCache | None
    cand_mask: BoolArray  # (B, M)


@dataclass(frozen=True)
class RankerCache:
    spec: RankerSpec
    ifa: IFACache | None
    embeddings: tuple[EmbeddingCache, EmbeddingCache, EmbeddingCache] | None  # user, candidate, cross
    sequence: _SequenceCache | None
    ram: LinearAttentionCache | None
    towers: tuple[MLPCache, MLPCache] | None
    esmm: Any


def _tower(params: Params, name: str) -> MLPParams:
    return MLPParams((LinearParams(params[f"{name}_W0"], params[f"{name}_b0"]),
                      LinearParams(params[f"{name}_W1"], params[f"{name}_b1"])))


TOWER = MLPConfig(("relu", "identity"))


def _sequence_forward(params: Params, inputs: RankingInputs, spec: RankerSpec, e_cand: Array,
                      heads: int, top_k: int) -> tuple[Array, _SequenceCache]:
    """f (B, M, E): the sequence block of `spec` for every candidate."""
    b, m, e = e_cand.shape
    cand_mask = inputs.batch.cand_mask
    table = params["item_table"]
    if spec.sequence in TOP_K_SCORES:
        e_seq, keys = embedding_forward(table, inputs.batch.seq_ids, "seq_ids")
        cfg = TopKAttentionConfig(k=top_k, num_heads=heads, score=TOP_K_SCORES[spec.sequence])
        out, top = top_k_attention_forward(attention_block(params, "fsm"), e_cand, e_seq, inputs.batch.seq_mask,
                                           cfg, cand_mask)
        return out, _SequenceCache(spec.sequence, keys, None, top, cand_mask)
    if spec.sequence in ("avg", "din"):
        e_recent, keys = embedding_forward(table, inputs.recent_ids, "recent_ids")
        if spec.sequence == "avg":
            pooled, pool = masked_mean_pool_forward(e_recent, inputs.recent_mask)
            out = np.where(cand_mask[..., None], pooled[:, None, :], 0)
            return out, _SequenceCache("avg", keys, pool, None, cand_mask)
        out, attention = attention_forward(attention_block(params, "fsm"), e_cand, e_recent, inputs.recent_mask,
                                           AttentionConfig(heads), query_mask=cand_mask)
        return out, _SequenceCache("din", keys, None, attention, cand_mask)
    e_sub, keys = embedding_forward(table, inputs.subsequence_ids, "subsequence_ids")
    t = inputs.subsequence_ids.shape[2]
    flat, target = target_attention_forward(attention_block(params, "fsm"), e_cand.reshape(b * m, e),
                                            e_sub.reshape(b * m, t, e), inputs.subsequence_mask.reshape(b * m, t),
                                            AttentionConfig(heads))
    out = np.where(cand_mask[..., None], flat.reshape(b, m, e), 0)
    return out, _SequenceCache("sim_hard", keys, None, target, cand_mask)


def _sequence_backward(cache: _SequenceCache, d_out: Array, grads: Params) -> Array:
    """Adds the block's param and item-table gradients to `grads`; returns d_e_cand (B, M, E)."""
    b, m, e = d_out.shape
    d_out = np.where(cache.cand_mask[..., None], d_out, 0)
    assert cache.keys is not None
    if cache.kind == "avg":
        assert cache.pool is not None
        d_keys = masked_mean_pool_backward(cache.pool, d_out.sum(axis=1))
        grads["item_table"] = grads["item_table"] + embedding_backward(cache.keys, d_keys)
        return np.zeros_like(d_out)
    if cache.kind == "din":
        assert isinstance(cache.attention, AttentionCache)
        block, d_cand, d_keys = attention_backward(cache.attention, d_out)
    elif cache.kind in TOP_K_SCORES:
        assert isinstance(cache.attention, TopKAttentionCache)
        block, d_cand, d_keys = top_k_attention_backward(cache.attention, d_out)
    else:
        assert isinstance(cache.attention, TargetAttentionCache)
        block, d_flat, d_sub = target_attention_backward(cache.attention, d_out.reshape(b * m, e))
        d_cand, d_keys = d_flat.reshape(b, m, e), d_sub.reshape(*cache.keys.ids.shape, e)
    grads.update(attention_block_grads(block, "fsm"))
    grads["item_table"] = grads["item_table"] + embedding_backward(cache.keys, d_keys)
    return d_cand


def ranker_forward(params: Params, inputs: RankingInputs, spec: RankerSpec,
                   cfg: RankerConfig) -> tuple[RankerOutput, RankerCache]:
    """Scores and ESMM loss of `spec` on `inputs`; IFA is refimpl.models.ifa.ifa_forward itself."""
    _check_params(params, spec, cfg)
    _check_inputs(inputs)
    num_heads = cfg.num_heads
    if spec.sequence == "linear":
        out, ifa_cache = ifa_forward(ifa_params_from_dict(params), inputs.batch, IFAConfig(num_heads=num_heads))
        return (RankerOutput(out.loss, out.p_imp, out.p_clk, out.score),
                RankerCache(spec, ifa_cache, None, None, None, None, None))
    batch = inputs.batch
    e_user, user_cache = embedding_forward(params["user_table"], batch.user_ids, "user_ids")
    e_cand, cand_cache = embedding_forward(params["item_table"], batch.cand_ids, "cand_ids")
    e_cross, cross_cache = embedding_forward(params["cross_table"], batch.cross_ids, "cross_ids")
    seq_out, seq_cache = _sequence_forward(params, inputs, spec, e_cand, num_heads, cfg.top_k)
    b, m, e = e_cand.shape
    blocks = [np.broadcast_to(e_user[:, None, :], (b, m, e)), e_cand, e_cross, seq_out]
    ram_cache = None
    if spec.ram:
        ram_out, ram_cache = linear_self_attention_forward(attention_block(params, "ram"), e_cand, batch.cand_mask,
                                                           LinearAttentionConfig(num_heads=num_heads))
        blocks.append(ram_out)
    features = np.concatenate(blocks, axis=-1)
    a, imp_cache = mlp_forward(_tower(params, "impression"), features, TOWER)
    c, clk_cache = mlp_forward(_tower(params, "click"), features, TOWER)
    loss, _, esmm = esmm_loss_forward(a[..., 0], c[..., 0], batch.impression, batch.click, batch.cand_mask)
    p_imp = np.where(batch.cand_mask, sigmoid(a[..., 0]), 0)
    p_clk = np.where(batch.cand_mask, sigmoid(c[..., 0]), 0)
    cache = RankerCache(spec, None, (user_cache, cand_cache, cross_cache), seq_cache, ram_cache,
                        (imp_cache, clk_cache), esmm)
    return RankerOutput(loss, p_imp, p_clk, p_imp * p_clk), cache


def ranker_backward(cache: RankerCache, d_loss: Array) -> Params:
    """The gradient of every param (the names of `ranker_init`)."""
    if not isinstance(cache, RankerCache):
        raise TypeError(f"cache: expected the RankerCache of ranker_forward, got {type(cache).__name__}")
    if cache.ifa is not None:
        return ifa_params_to_dict(ifa_backward(cache.ifa, d_loss))
    assert cache.embeddings is not None and cache.towers is not None and cache.sequence is not None
    d_a, d_c = esmm_loss_backward(cache.esmm, d_loss)
    grads: Params = {}
    d_features = None
    for tower, tower_cache, d_logit in (("impression", cache.towers[0], d_a), ("click", cache.towers[1], d_c)):
        tower_grads, d_in = mlp_backward(tower_cache, d_logit[..., None])
        for index, layer in enumerate(tower_grads.layers):
            grads[f"{tower}_W{index}"], grads[f"{tower}_b{index}"] = layer.W, layer.b
        d_features = d_in if d_features is None else d_features + d_in
    assert d_features is not None
    parts = np.split(d_features, 5 if cache.spec.ram else 4, axis=-1)
    user_cache, cand_cache, cross_cache = cache.embeddings
    grads["item_table"] = np.zeros((cand_cache.vocab, parts[1].shape[-1]), dtype=parts[1].dtype)
    d_cand = parts[1] + _sequence_backward(cache.sequence, parts[3], grads)
    if cache.ram is not None:
        ram_grads, d_cand_ram = linear_self_attention_backward(cache.ram, parts[4])
        grads.update(attention_block_grads(ram_grads, "ram"))
        d_cand = d_cand + d_cand_ram
    grads["item_table"] = grads["item_table"] + embedding_backward(cand_cache, d_cand)
    grads["user_table"] = embedding_backward(user_cache, parts[0].sum(axis=1))
    grads["cross_table"] = embedding_backward(cross_cache, parts[2])
    return grads


# ----------------------------------------------------------------------------- data split, training


@dataclass(frozen=True)
class Split:
    """Request indices (disjoint users): training, validation (the stopping rule), test (the tables)."""

    train: IntArray
    valid: IntArray
    test: IntArray


def split_requests(num_requests: int, valid_share: float, test_share: float, seed: int) -> Split:
    """A random split of the requests (one per user) by the given shares."""
    n = require_positive_int("num_requests", num_requests)
    require_int("seed", seed, low=0)
    valid_share = require_real("valid_share", valid_share, low=0.0, high=0.5)
    test_share = require_real("test_share", test_share, low=0.0, high=0.5)
    order = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    n_valid, n_test = max(1, int(n * valid_share)), max(1, int(n * test_share))
    if n_valid + n_test >= n:
        raise ValueError(f"num_requests: {n} requests leave none for training at these shares")
    return Split(np.sort(order[n_valid + n_test:]), np.sort(order[:n_valid]), np.sort(order[n_valid:n_valid + n_test]))


def _esmm_rates(inputs: RankingInputs) -> tuple[float, float]:
    b = inputs.batch
    shown = b.impression[b.cand_mask].mean()
    return float(shown), float(b.click[b.cand_mask].mean())


def _chance_esmm(train: RankingInputs, valid: RankingInputs) -> float:
    """The ESMM loss on `valid` of a model that learned nothing: every candidate gets the training
    rates, p_imp = P(shown) and p_imp p_clk = P(click)."""
    p_imp, p_click = _esmm_rates(train)
    a = np.full(valid.batch.cand_ids.shape, np.log(p_imp / (1 - p_imp)))
    p_clk = p_click / p_imp
    c = np.full(valid.batch.cand_ids.shape, np.log(p_clk / (1 - p_clk)))
    loss, _, _ = esmm_loss_forward(a, c, valid.batch.impression, valid.batch.click, valid.batch.cand_mask)
    return float(loss)


@dataclass(frozen=True)
class TrainedRanker:
    name: str
    spec: RankerSpec
    params: Params
    curve: Curve
    seconds: float


def _chunks(size: int, step: int) -> list[IntArray]:
    return [np.arange(start, min(start + step, size)) for start in range(0, size, step)]


def _predict(params: Params, inputs: RankingInputs, spec: RankerSpec, cfg: RankerConfig,
             chunk: int = 256, progress: str | None = None) -> tuple[float, Array, Array]:
    """(ESMM loss, p_imp (N, M), p_clk (N, M)) over every request of `inputs`, a chunk at a time;
    with a `progress` description, under a progress bar (not in validation: fit's bar is showing)."""
    losses, p_imp, p_clk = [], [], []
    chunks = _chunks(inputs.size, chunk)
    for rows in chunks if progress is None else track(chunks, progress, unit="batch", delay=2.0):
        out, _ = ranker_forward(params, inputs.take(rows), spec, cfg)
        losses.append(float(out.loss) * rows.size)
        p_imp.append(out.p_imp)
        p_clk.append(out.p_clk)
    return sum(losses) / inputs.size, np.concatenate(p_imp), np.concatenate(p_clk)


def train_ranker(name: str, spec: RankerSpec, data: RequestData, inputs: RankingInputs, split: Split,
                 cfg: RankerConfig, seed: int, stream: TextIO | None = sys.stderr) -> TrainedRanker:
    """`spec` trained by refimpl.train.fit on the training requests (batches of cfg.batch_size
    requests), stopped on the validation requests' ESMM loss."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {type(name).__name__}")
    _check_spec(spec, cfg)
    check_request_data(data)
    _check_split(split, _check_inputs(inputs).size)
    require_int("seed", seed, low=0)
    if stream is not None and not callable(getattr(stream, "write", None)):
        raise TypeError(f"stream: expected a text stream or None, got {type(stream).__name__}")
    train, valid = inputs.take(split.train), inputs.take(split.valid)
    rng = np.random.Generator(np.random.PCG64(seed))
    params = ranker_init(rng, spec, data, cfg)

    def step(p: Params, step_rng: np.random.Generator) -> tuple[float, Params]:
        rows = np.sort(step_rng.choice(train.size, size=min(cfg.batch_size, train.size), replace=False))
        out, cache = ranker_forward(p, train.take(rows), spec, cfg)
        return float(out.loss), ranker_backward(cache, np.ones((), dtype=out.loss.dtype))

    def validation(p: Params) -> float:
        return _predict(p, valid, spec, cfg)[0]

    start = time.perf_counter()
    params, curve = fit(name, params, step, validation, _chance_esmm(train, valid), _train_config(cfg, seed),
                        cfg.steps, rng, stream)
    return TrainedRanker(name, spec, params, curve, time.perf_counter() - start)


def _aucs(p_imp: Array, score: Array, p_clk: Array, test: RankingInputs) -> dict[str, float]:
    """AUC per objective: impression by p_imp and click by p_imp p_clk over every candidate (ESMM's
    entire space), and click among the shown candidates by p_clk (a CTR model's AUC)."""
    b = test.batch
    shown = b.cand_mask & (b.impression == 1)
    return {"impression": auc(p_imp, b.impression, b.cand_mask), "click": auc(score, b.click, b.cand_mask),
            "click_shown": auc(p_clk, b.click, shown)}


def evaluate(model: TrainedRanker, inputs: RankingInputs, split: Split, cfg: RankerConfig) -> dict[str, float]:
    """The test AUCs of a trained model (`_aucs`)."""
    if not isinstance(model, TrainedRanker):
        raise TypeError(f"model: expected a TrainedRanker, got {type(model).__name__}")
    _check_split(split, _check_inputs(inputs).size)
    test = inputs.take(split.test)
    _, p_imp, p_clk = _predict(model.params, test, model.spec, cfg, progress=f"{model.name} evaluation")
    return _aucs(p_imp, p_imp * p_clk, p_clk, test)


def non_learned_scores(data: RequestData, inputs: RankingInputs, split: Split) -> dict[str, dict[str, float]]:
    """Test AUCs of scores with no learned parameter:
    - item popularity: per candidate item, its impression rate, click rate and CTR on the training
      requests, each smoothed towards the global rate with a prior of 10 appearances;
    - category frequency: the share of the candidate's category in the user's lifelong sequence
      (the same score for every objective)."""
    check_request_data(data)
    _check_split(split, _check_inputs(inputs).size)
    b, test = inputs.batch, inputs.take(split.test)
    rows = split.train
    items = b.cand_ids[rows].reshape(-1)
    shown, clicked = b.impression[rows].reshape(-1), b.click[rows].reshape(-1)
    vocab, prior = data.config.num_items, 10.0
    appear = np.bincount(items, minlength=vocab)
    shown_count = np.bincount(items, weights=shown, minlength=vocab)
    click_count = np.bincount(items, weights=clicked, minlength=vocab)
    imp_rate = (shown_count + prior * shown.mean()) / (appear + prior)
    click_rate = (click_count + prior * clicked.mean()) / (appear + prior)
    ctr = (click_count + prior * clicked.sum() / max(shown.sum(), 1)) / (shown_count + prior)
    cand = test.batch.cand_ids
    popularity = _aucs(imp_rate[cand], click_rate[cand], ctr[cand], test)
    categories = data.item_category
    seq_cat = categories[test.batch.seq_ids]
    freq = (seq_cat[:, None, :] == categories[cand][:, :, None]).mean(axis=2)
    return {"item popularity": popularity, "category frequency": _aucs(freq, freq, freq, test)}

