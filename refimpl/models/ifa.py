"""IFA: Interaction Fidelity Attention over the whole candidate set and the whole lifelong sequence.

For a user u with M candidates (item ids c_m, one cross-feature id x_m each) and L behaviours s_l,
all embedded with width E (items share one table for candidates and behaviours):

    e_u = U[u],  e_m = I[c_m],  e_x,m = X[x_m],  e_l = I[s_l]
    f_m = FSM(e_m; e_1..L)      linear cross attention, candidates -> sequence   (IFA's FSM)
    r_m = RAM(e_m; e_1..M)      linear self attention over the candidate set     (IFA's RAM)
    h_m = [e_u; e_m; e_x,m; f_m; r_m]                                             (5E,)
    a_m = MLP_imp(h_m),  c_m = MLP_clk(h_m)                                       logits
    p_imp = sigmoid(a),  p_clk = sigmoid(c),  score = p_imp * p_clk               ranking score
    loss = mean over valid m of  BCE(p_imp, y_imp) + BCE(p_imp * p_clk, y_clk)    (ESMM)

Both attentions are `refimpl.nn.linear_attention` (degree-normalized, phi = softplus by default,
heads H), with the key masks of the sequence and of the candidate set; invalid candidates are
masked as queries (zero FSM/RAM rows) and as RAM keys, and carry no loss. MLP towers: ReLU hidden
layers and an identity output of width 1.

Stable BCE, no clipping: both terms are written in the logits a, c so no log(0) can occur,

    BCE(p_imp, y)       = softplus(a) - y a
    BCE(p_imp p_clk, y) = softplus(-a) + softplus(-c) - (1 - y) LSE(-a, -c, -a - c)

using -log(s(a) s(c)) = softplus(-a) + softplus(-c) and 1 - s(a) s(c) = (e^-a + e^-c + e^-a-c) /
((1 + e^-a)(1 + e^-c)). The mean is over every valid candidate of the batch (sum / count); a
batch without a valid candidate has loss 0.

Shapes: user_ids (B,), cand_ids, cross_ids, cand_mask, impression, click (B, M), seq_ids, seq_mask
(B, L); tables (V, E), (U, E), (X, E); FSM/RAM projections (E, E) and (E,); towers 5E -> ... -> 1.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from refimpl._check import Array, BoolArray, IntArray, Shapes, require_positive_int
from refimpl.nn._upstream import check_loss_upstream
from refimpl.nn.attention import PARAM_NAMES, AttentionParams
from refimpl.nn.embedding import EmbeddingCache, embedding_backward, embedding_forward
from refimpl.nn.linear import LinearParams
from refimpl.nn.linear_attention import (
    LinearAttentionCache,
    LinearAttentionConfig,
    linear_attention_backward,
    linear_attention_forward,
    linear_self_attention_backward,
    linear_self_attention_forward,
)
from refimpl.nn.mlp import MLPCache, MLPConfig, MLPParams, mlp_backward, mlp_forward, sigmoid

__all__ = [
    "EsmmCache",
    "IFABatch",
    "IFACache",
    "IFAConfig",
    "IFAOutput",
    "IFAParams",
    "esmm_loss_backward",
    "esmm_loss_forward",
    "ifa_backward",
    "ifa_forward",
    "init_ifa_params",
    "rank_candidates",
]

TOWERS = ("impression", "click")
FEATURE_BLOCKS = 5  # user, item, cross, FSM out, RAM out


@dataclass(frozen=True)
class IFAParams:
    item_table: Array  # (V, E), candidates and behaviours
    user_table: Array  # (U, E)
    cross_table: Array  # (X, E)
    fsm: AttentionParams  # (E, E) projections
    ram: AttentionParams  # (E, E) projections
    impression: MLPParams  # 5E -> ... -> 1
    click: MLPParams  # 5E -> ... -> 1


@dataclass(frozen=True)
class IFAConfig:
    num_heads: int = 1
    phi: str = "softplus"
    eps: float = 1e-6


@dataclass(frozen=True)
class IFABatch:
    user_ids: IntArray  # (B,)
    cand_ids: IntArray  # (B, M)
    cross_ids: IntArray  # (B, M)
    cand_mask: BoolArray  # (B, M)
    seq_ids: IntArray  # (B, L)
    seq_mask: BoolArray  # (B, L)
    impression: IntArray  # (B, M) in {0, 1}
    click: IntArray  # (B, M) in {0, 1}


@dataclass(frozen=True)
class IFAOutput:
    loss: Array  # ()
    fsm_out: Array  # (B, M, E)
    ram_out: Array  # (B, M, E)
    impression_logit: Array  # (B, M)
    click_logit: Array  # (B, M)
    p_imp: Array  # (B, M), 0 for invalid candidates
    p_clk: Array  # (B, M), 0 for invalid candidates
    score: Array  # (B, M) = p_imp * p_clk, 0 for invalid candidates
    per_candidate_loss: Array  # (B, M), 0 for invalid candidates


@dataclass(frozen=True)
class EsmmCache:
    impression_logit: Array  # (B, M)
    click_logit: Array  # (B, M)
    y_imp: Array  # (B, M)
    y_clk: Array  # (B, M)
    weights: Array  # (B, M): mask / count


@dataclass(frozen=True)
class IFACache:
    embeddings: tuple[EmbeddingCache, EmbeddingCache, EmbeddingCache, EmbeddingCache]
    fsm: LinearAttentionCache
    ram: LinearAttentionCache
    towers: tuple[MLPCache, MLPCache]
    esmm: EsmmCache
    batch_size: int
    num_candidates: int


def _tower_config(tower: MLPParams) -> MLPConfig:
    return MLPConfig(activations=("relu",) * (len(tower.layers) - 1) + ("identity",))


def _check_params(params: IFAParams) -> int:
    """Validate the shapes that the components do not see together; returns E."""
    shapes = Shapes()
    shapes.check_float("item_table", params.item_table, ("V", "E"))
    shapes.check_float("user_table", params.user_table, ("U", "E"))
    shapes.check_float("cross_table", params.cross_table, ("X", "E"))
    width = shapes.size("E")
    for tower_name in TOWERS:
        layers = getattr(params, tower_name).layers
        if len(layers) == 0:
            raise ValueError(f"{tower_name}: the tower needs at least one layer")
        shapes.check_float(f"{tower_name}_W0", layers[0].W, (FEATURE_BLOCKS * width, f"H_{tower_name}"))
        last = len(layers) - 1
        shapes.check_float(f"{tower_name}_W{last}", layers[-1].W, (f"H_{tower_name}_last", 1))
    return width


def _check_batch(batch: IFABatch) -> None:
    shapes = Shapes()
    shapes.check_int("user_ids", batch.user_ids, ("B",))
    shapes.check_int("cand_ids", batch.cand_ids, ("B", "M"))
    shapes.check_int("cross_ids", batch.cross_ids, ("B", "M"))
    shapes.check_bool("cand_mask", batch.cand_mask, ("B", "M"))
    shapes.check_int("seq_ids", batch.seq_ids, ("B", "L"))
    shapes.check_bool("seq_mask", batch.seq_mask, ("B", "L"))
    for name in ("impression", "click"):
        labels = shapes.check_int(name, getattr(batch, name), ("B", "M"))
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"{name}: labels must be 0 or 1, got values {np.unique(labels)[:5]}")


def softplus(x: Array) -> Array:
    """log(1 + e^x) without overflow, in the dtype of x."""
    return np.logaddexp(0, x)


def _log_one_minus_ctcvr_parts(a: Array, c: Array) -> tuple[Array, Array, Array, Array]:
    """LSE(-a, -c, -a-c) and its softmax weights (w_a, w_c, w_ac), max-shifted for stability."""
    terms = np.stack([-a, -c, -a - c])
    top = terms.max(axis=0)
    exp = np.exp(terms - top)
    total = exp.sum(axis=0)
    return top + np.log(total), exp[0] / total, exp[1] / total, exp[2] / total


def esmm_loss_forward(
    impression_logit: Array, click_logit: Array, impression: IntArray, click: IntArray, mask: BoolArray
) -> tuple[Array, Array, EsmmCache]:
    """ESMM loss from logits: (loss (), per-candidate loss (B, M) zero where masked, cache).

    impression, click (B, M) integer labels 0/1; mask (B, M) bool. With no valid candidate
    (B = 0, or mask all False) the loss is 0 and its gradient 0: nothing was observed.
    """
    shapes = Shapes()
    shapes.check_float("impression_logit", impression_logit, ("B", "M"))
    shapes.check_float("click_logit", click_logit, ("B", "M"))
    for name, labels in (("impression", impression), ("click", click)):
        shapes.check_int(name, labels, ("B", "M"))
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"{name}: labels must be 0 or 1, got values {np.unique(labels)[:5]}")
    shapes.check_bool("mask", mask, ("B", "M"))
    dtype = impression_logit.dtype
    y_imp = impression.astype(dtype)
    y_clk = click.astype(dtype)
    a, c = impression_logit, click_logit
    lse, _, _, _ = _log_one_minus_ctcvr_parts(a, c)
    per = (softplus(a) - y_imp * a) + (softplus(-a) + softplus(-c) - (1 - y_clk) * lse)
    count = int(mask.sum())
    weights = (mask / max(count, 1)).astype(dtype)
    per_masked: Array = np.where(mask, per, 0).astype(dtype)
    loss: Array = np.asarray(np.sum(per * weights), dtype=dtype)
    return loss, per_masked, EsmmCache(a, c, y_imp, y_clk, weights)


def esmm_loss_backward(cache: EsmmCache, d_loss: Array) -> tuple[Array, Array]:
    """d_impression_logit and d_click_logit (B, M).

    d/da = (s(a) - y_imp) - s(-a) + (1 - y_clk)(w_a + w_ac),  d/dc = -s(-c) + (1 - y_clk)(w_c + w_ac)
    with w the softmax weights of LSE(-a, -c, -a - c).
    """
    a, c = cache.impression_logit, cache.click_logit
    _, w_a, w_c, w_ac = _log_one_minus_ctcvr_parts(a, c)
    scale = check_loss_upstream("d_loss", d_loss, cache.weights.dtype) * cache.weights
    not_clicked = 1 - cache.y_clk
    d_a = scale * ((sigmoid(a) - cache.y_imp) - sigmoid(-a) + not_clicked * (w_a + w_ac))
    d_c = scale * (-sigmoid(-c) + not_clicked * (w_c + w_ac))
    return d_a, d_c


def ifa_forward(params: IFAParams, batch: IFABatch, cfg: IFAConfig) -> tuple[IFAOutput, IFACache]:
    """The whole model: embeddings, FSM, RAM, towers, ESMM loss and ranking scores."""
    width = _check_params(params)
    _check_batch(batch)
    attention_cfg = LinearAttentionConfig(num_heads=cfg.num_heads, phi=cfg.phi, eps=cfg.eps)
    e_user, user_cache = embedding_forward(params.user_table, batch.user_ids, "user_ids")
    e_cand, cand_cache = embedding_forward(params.item_table, batch.cand_ids, "cand_ids")
    e_cross, cross_cache = embedding_forward(params.cross_table, batch.cross_ids, "cross_ids")
    e_seq, seq_cache = embedding_forward(params.item_table, batch.seq_ids, "seq_ids")
    fsm_out, fsm_cache = linear_attention_forward(
        params.fsm, e_cand, e_seq, batch.seq_mask, attention_cfg, query_mask=batch.cand_mask
    )
    ram_out, ram_cache = linear_self_attention_forward(params.ram, e_cand, batch.cand_mask, attention_cfg)
    b, m = batch.cand_ids.shape
    user_rows = np.broadcast_to(e_user[:, None, :], (b, m, width))
    features = np.concatenate([user_rows, e_cand, e_cross, fsm_out, ram_out], axis=-1)
    impression_logit, impression_cache = mlp_forward(params.impression, features, _tower_config(params.impression))
    click_logit, click_cache = mlp_forward(params.click, features, _tower_config(params.click))
    a, c = impression_logit[..., 0], click_logit[..., 0]
    loss, per, esmm_cache = esmm_loss_forward(a, c, batch.impression, batch.click, batch.cand_mask)
    p_imp = np.where(batch.cand_mask, sigmoid(a), 0).astype(a.dtype)
    p_clk = np.where(batch.cand_mask, sigmoid(c), 0).astype(a.dtype)
    output = IFAOutput(loss, fsm_out, ram_out, a, c, p_imp, p_clk, p_imp * p_clk, per)
    cache = IFACache(
        (user_cache, cand_cache, cross_cache, seq_cache),
        fsm_cache,
        ram_cache,
        (impression_cache, click_cache),
        esmm_cache,
        b,
        m,
    )
    return output, cache


def ifa_backward(cache: IFACache, d_loss: Array) -> IFAParams:
    """Gradients of every parameter of the model for the upstream gradient d_loss of the loss."""
    d_a, d_c = esmm_loss_backward(cache.esmm, d_loss)
    impression_grads, d_features_imp = mlp_backward(cache.towers[0], d_a[..., None])
    click_grads, d_features_clk = mlp_backward(cache.towers[1], d_c[..., None])
    d_user_rows, d_cand, d_cross, d_fsm, d_ram = np.split(
        d_features_imp + d_features_clk, FEATURE_BLOCKS, axis=-1
    )
    fsm_grads, d_cand_fsm, d_seq = linear_attention_backward(cache.fsm, d_fsm)
    ram_grads, d_cand_ram = linear_self_attention_backward(cache.ram, d_ram)
    user_cache, cand_cache, cross_cache, seq_cache = cache.embeddings
    d_item_table = embedding_backward(cand_cache, d_cand + d_cand_fsm + d_cand_ram) + (
        embedding_backward(seq_cache, d_seq)
    )
    return IFAParams(
        item_table=d_item_table,
        user_table=embedding_backward(user_cache, d_user_rows.sum(axis=1)),
        cross_table=embedding_backward(cross_cache, d_cross),
        fsm=fsm_grads,
        ram=ram_grads,
        impression=impression_grads,
        click=click_grads,
    )


def rank_candidates(score: Array, cand_mask: BoolArray) -> IntArray:
    """Candidate indices (B, M) by descending score; invalid candidates last; ties by lower index."""
    shapes = Shapes()
    shapes.check_float("score", score, ("B", "M"))
    shapes.check_bool("cand_mask", cand_mask, ("B", "M"))
    keyed = np.where(cand_mask, -score.astype(np.float64), np.inf)
    order: IntArray = np.argsort(keyed, axis=-1, kind="stable")
    return order


def ifa_params_to_dict(params: IFAParams) -> dict[str, Array]:
    """Flat names: tables by name, fsm_Wq .. ram_bo, impression_W0, impression_b0, ..., click_*."""
    flat = {name: getattr(params, name) for name in ("item_table", "user_table", "cross_table")}
    for block in ("fsm", "ram"):
        for name in PARAM_NAMES:
            flat[f"{block}_{name}"] = getattr(getattr(params, block), name)
    for tower in TOWERS:
        for index, layer in enumerate(getattr(params, tower).layers):
            flat[f"{tower}_W{index}"] = layer.W
            flat[f"{tower}_b{index}"] = layer.b
    return flat


def ifa_params_from_dict(flat: dict[str, Array]) -> IFAParams:
    """Inverse of `ifa_params_to_dict`; a missing name is a ValueError naming it."""

    def get(name: str) -> Array:
        if name not in flat:
            raise ValueError(f"params: missing {name!r} (have {sorted(flat)})")
        return flat[name]

    def tower(prefix: str) -> MLPParams:
        depth = sum(1 for name in flat if name.startswith(f"{prefix}_W"))
        return MLPParams(
            layers=tuple(
                LinearParams(W=get(f"{prefix}_W{i}"), b=get(f"{prefix}_b{i}")) for i in range(depth)
            )
        )

    return IFAParams(
        item_table=get("item_table"),
        user_table=get("user_table"),
        cross_table=get("cross_table"),
        fsm=AttentionParams(**{name: get(f"fsm_{name}") for name in PARAM_NAMES}),
        ram=AttentionParams(**{name: get(f"ram_{name}") for name in PARAM_NAMES}),
        impression=tower("impression"),
        click=tower("click"),
    )


def init_ifa_params(
    rng: np.random.Generator,
    num_items: int,
    num_users: int,
    num_cross: int,
    width: int,
    hidden: tuple[int, ...] = (16,),
    dtype: Any = np.float64,
) -> IFAParams:
    """Embeddings ~ N(0, 0.5^2), projections and tower weights ~ N(0, 1/fan_in), biases 0."""
    for name, size in (("num_items", num_items), ("num_users", num_users), ("num_cross", num_cross),
                       ("width", width), *((f"hidden[{i}]", h) for i, h in enumerate(hidden))):
        require_positive_int(name, size)

    def table(rows: int) -> Array:
        result: Array = (0.5 * rng.standard_normal((rows, width))).astype(dtype)
        return result

    def weight(fan_in: int, fan_out: int) -> Array:
        result: Array = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(dtype)
        return result

    def attention() -> AttentionParams:
        return AttentionParams(
            **{
                name: weight(width, width) if name.startswith("W") else np.zeros(width, dtype=dtype)
                for name in PARAM_NAMES
            }
        )

    def tower() -> MLPParams:
        sizes = (FEATURE_BLOCKS * width, *hidden, 1)
        return MLPParams(
            layers=tuple(
                LinearParams(W=weight(i, o), b=np.zeros(o, dtype=dtype))
                for i, o in itertools.pairwise(sizes)
            )
        )

    return IFAParams(
        item_table=table(num_items),
        user_table=table(num_users),
        cross_table=table(num_cross),
        fsm=attention(),
        ram=attention(),
        impression=tower(),
        click=tower(),
    )


def ifa_batch_from_dict(inputs: dict[str, Any]) -> IFABatch:
    """An IFABatch from a case's inputs (by field name)."""
    return IFABatch(**{f.name: inputs[f.name] for f in fields(IFABatch)})
