"""Multi-head scaled dot-product attention: one kernel for MHSA and target attention
(spec/attention.md).

Scaled dot-product attention is eq. 1 of Vaswani et al. 2017 ("Attention is all you need"),
`softmax(Q K^T / sqrt(d_k)) V`, run per head as their multi-head attention (section 3.2.2); ULIM's
short-term encoder (MHSA), its long-term target attention and PGIN use it unchanged. For each
head h (width D_h = D / H) and query row i:

    q = q_in Wq + bq,   k = kv_in Wk + bk,   v = kv_in Wv + bv          split into H heads
    s_hij   = q_hi . k_hj / sqrt(D_h)                                    scores
    w_hij   = exp(s_hij) m_j / sum_j' exp(s_hij') m_j'                   masked softmax over keys j
    ctx_hi  = sum_j w_hij v_hj                                           heads merged back to D
    out_i   = r_i (ctx_i Wo + bo)

with key mask m (True = valid) and row validity r_i = query_mask_i and (any_j m_j).

Shapes: q_in (B, Q, D), kv_in (B, L, D), key_mask (B, L), query_mask (B, Q), every W (D, D) used as
`x @ W`, every b (D,), out (B, Q, D), weights (B, H, Q, L).

MHSA is attention(x, x, mask) with query_mask = mask; target attention is one query per row
(Q = 1). `torch.nn.MultiheadAttention(D, H, batch_first=True)` computes the same numbers given
in_proj_weight = concat(Wq.T, Wk.T, Wv.T), in_proj_bias = concat(bq, bk, bv),
out_proj.weight = Wo.T, out_proj.bias = bo, and key_padding_mask = ~key_mask.

Edge cases: a row whose keys are all masked gets zero weights and a zero output row (torch gives
NaN); a masked query row is zero; neither passes any gradient. Large scores are safe: the softmax
subtracts the row maximum over valid keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, BoolArray, Shapes, require_positive_int
from refimpl.nn._upstream import check_upstream
from refimpl.nn.linear import affine, affine_backward

__all__ = [
    "AttentionCache",
    "AttentionConfig",
    "AttentionParams",
    "attention_backward",
    "attention_forward",
    "mhsa_backward",
    "mhsa_forward",
    "target_attention_backward",
    "target_attention_forward",
]

PARAM_NAMES = ("Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo")


@dataclass(frozen=True)
class AttentionParams:
    Wq: Array  # (D, D)
    bq: Array  # (D,)
    Wk: Array  # (D, D)
    bk: Array  # (D,)
    Wv: Array  # (D, D)
    bv: Array  # (D,)
    Wo: Array  # (D, D)
    bo: Array  # (D,)


@dataclass(frozen=True)
class AttentionConfig:
    num_heads: int = 1


@dataclass(frozen=True)
class AttentionCache:
    params: AttentionParams
    q_in: Array  # (B, Q, D)
    kv_in: Array  # (B, L, D)
    q: Array  # (B, H, Q, D_h)
    k: Array  # (B, H, L, D_h)
    v: Array  # (B, H, L, D_h)
    weights: Array  # (B, H, Q, L)
    context: Array  # (B, Q, D), heads merged
    row_valid: BoolArray  # (B, Q)
    scale: float


def _split_heads(x: Array, heads: int) -> Array:
    """(B, N, D) -> (B, H, N, D_h)."""
    b, n, d = x.shape
    return x.reshape(b, n, heads, d // heads).transpose(0, 2, 1, 3)


def _merge_heads(x: Array) -> Array:
    """(B, H, N, D_h) -> (B, N, D)."""
    b, h, n, dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, n, h * dh)


def masked_softmax(scores: Array, mask: BoolArray) -> Array:
    """Softmax over the last axis restricted to `mask` (broadcast); all-masked rows give zeros.

    The row maximum over valid entries is subtracted first, so scores in the thousands are safe.
    """
    if not isinstance(scores, np.ndarray) or scores.dtype not in (np.float32, np.float64):
        raise TypeError(f"scores: expected a float32 or float64 array, got {_describe(scores)}")
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        raise TypeError(f"mask: expected a bool array (True = valid), got {_describe(mask)}")
    try:
        broadcast = np.broadcast_shapes(scores.shape, mask.shape)
    except ValueError:
        broadcast = ()
    if broadcast != scores.shape:
        raise ValueError(f"mask: shape {mask.shape} does not broadcast to scores {scores.shape}")
    # initial=-inf: a zero-length axis (no keys at all) is an all-masked row, not an error.
    valid_max = np.max(np.where(mask, scores, -np.inf), axis=-1, keepdims=True, initial=-np.inf)
    shift = np.where(np.isfinite(valid_max), valid_max, 0)
    exp = np.where(mask, np.exp(np.where(mask, scores - shift, 0)), 0).astype(scores.dtype)
    total = exp.sum(axis=-1, keepdims=True)
    result: Array = exp / np.where(total > 0, total, 1)
    return result


def softmax_backward(weights: Array, d_weights: Array) -> Array:
    """d_scores of a softmax over the last axis: w * (d_w - sum(d_w * w)).

    Masked entries (w = 0) get zero gradient, so this serves `masked_softmax` too.
    """
    shapes = Shapes()
    dims = tuple(f"axis{i}" for i in range(np.ndim(weights)))
    shapes.check_float("weights", weights, dims)
    shapes.check_float("d_weights", d_weights, dims)
    result: Array = weights * (d_weights - np.sum(d_weights * weights, axis=-1, keepdims=True))
    return result


def _describe(value: object) -> str:
    dtype = getattr(value, "dtype", None)
    return f"{type(value).__name__} of dtype {dtype}" if dtype is not None else type(value).__name__


def check_attention_params(params: AttentionParams, shapes: Shapes) -> None:
    """Every W (D, D) and b (D,), one float dtype shared with the other arguments of `shapes`."""
    if not isinstance(params, AttentionParams):
        raise TypeError(f"params: expected AttentionParams, got {type(params).__name__}")
    for name in PARAM_NAMES:
        dims = ("D", "D") if name.startswith("W") else ("D",)
        shapes.check_float(name, getattr(params, name), dims)


def attention_forward(
    params: AttentionParams,
    q_in: Array,
    kv_in: Array,
    key_mask: BoolArray,
    cfg: AttentionConfig,
    query_mask: BoolArray | None = None,
) -> tuple[Array, AttentionCache]:
    """Multi-head attention of queries q_in (B, Q, D) over keys/values kv_in (B, L, D).

    key_mask (B, L) and query_mask (B, Q) are bool, True = valid (query_mask None: all valid).
    Returns out (B, Q, D) and the cache for `attention_backward`.
    """
    shapes = Shapes()
    shapes.check_float("q_in", q_in, ("B", "Q", "D"))
    shapes.check_float("kv_in", kv_in, ("B", "L", "D"))
    shapes.check_bool("key_mask", key_mask, ("B", "L"))
    if query_mask is None:
        query_mask = np.ones(q_in.shape[:2], dtype=bool)
    shapes.check_bool("query_mask", query_mask, ("B", "Q"))
    check_attention_params(params, shapes)
    heads = require_positive_int("cfg.num_heads", cfg.num_heads)
    d = shapes.size("D")
    if d % heads != 0:
        raise ValueError(f"cfg.num_heads: {heads} heads do not divide the width D = {d}")

    scale = 1.0 / float(np.sqrt(d // heads))
    q = _split_heads(affine(q_in, params.Wq, params.bq), heads)
    k = _split_heads(affine(kv_in, params.Wk, params.bk), heads)
    v = _split_heads(affine(kv_in, params.Wv, params.bv), heads)
    row_valid = query_mask & key_mask.any(axis=1, keepdims=True)
    scores = (q @ k.transpose(0, 1, 3, 2)) * scale
    key_weights = masked_softmax(scores, key_mask[:, None, None, :])
    weights = np.where(row_valid[:, None, :, None], key_weights, 0)
    context = _merge_heads(weights @ v)
    out: Array = np.where(row_valid[:, :, None], affine(context, params.Wo, params.bo), 0)
    cache = AttentionCache(params, q_in, kv_in, q, k, v, weights, context, row_valid, scale)
    return out, cache


def attention_backward(
    cache: AttentionCache, d_out: Array, d_weights: Array | None = None
) -> tuple[AttentionParams, Array, Array]:
    """Gradients of the params (as AttentionParams), d_q_in (B, Q, D) and d_kv_in (B, L, D).

    `d_weights` (B, H, Q, L), optional, is an upstream gradient on the attention weights
    themselves, for callers that use the weights as an output (the PGIN pointer).
    Masked query rows and rows without a valid key pass no gradient; masked keys get none either
    (their softmax weight is exactly 0)."""
    check_upstream("d_out", d_out, cache.q_in.shape, cache.q_in.dtype)
    if d_weights is not None:
        check_upstream("d_weights", d_weights, cache.weights.shape, cache.weights.dtype)
    p = cache.params
    heads = cache.q.shape[1]
    d_projected = np.where(cache.row_valid[:, :, None], d_out, 0)
    d_Wo, d_bo, d_context_merged = affine_backward(cache.context, p.Wo, d_projected)
    d_context = _split_heads(d_context_merged, heads)
    d_weights_total = d_context @ cache.v.transpose(0, 1, 3, 2)
    if d_weights is not None:
        d_weights_total = d_weights_total + d_weights
    d_v = cache.weights.transpose(0, 1, 3, 2) @ d_context
    d_scores = softmax_backward(cache.weights, d_weights_total) * cache.scale
    d_Wq, d_bq, d_q_in = affine_backward(cache.q_in, p.Wq, _merge_heads(d_scores @ cache.k))
    d_k = _merge_heads(d_scores.transpose(0, 1, 3, 2) @ cache.q)
    d_Wk, d_bk, d_kv_in = affine_backward(cache.kv_in, p.Wk, d_k)
    d_Wv, d_bv, d_kv_in_values = affine_backward(cache.kv_in, p.Wv, _merge_heads(d_v))
    d_kv_in += d_kv_in_values
    grads = AttentionParams(Wq=d_Wq, bq=d_bq, Wk=d_Wk, bk=d_bk, Wv=d_Wv, bv=d_bv, Wo=d_Wo, bo=d_bo)
    return grads, d_q_in, d_kv_in


def mhsa_forward(
    params: AttentionParams, x: Array, mask: BoolArray, cfg: AttentionConfig
) -> tuple[Array, AttentionCache]:
    """Multi-head self attention: attention(x, x) with `mask` on both keys and queries."""
    shapes = Shapes()
    shapes.check_float("x", x, ("B", "L", "D"))
    shapes.check_bool("mask", mask, ("B", "L"))
    check_attention_params(params, shapes)
    return attention_forward(params, x, x, mask, cfg, query_mask=mask)


def mhsa_backward(cache: AttentionCache, d_out: Array) -> tuple[AttentionParams, Array]:
    """Gradients of the params and d_x: x feeds both the queries and the keys/values."""
    grads, d_q_in, d_kv_in = attention_backward(cache, d_out)
    return grads, d_q_in + d_kv_in


def target_attention_forward(
    params: AttentionParams, query: Array, seq: Array, mask: BoolArray, cfg: AttentionConfig
) -> tuple[Array, AttentionCache]:
    """One query vector per row attends over a sequence: query (B, D), seq (B, L, D) -> (B, D)."""
    shapes = Shapes()
    shapes.check_float("query", query, ("B", "D"))
    shapes.check_float("seq", seq, ("B", "L", "D"))
    shapes.check_bool("mask", mask, ("B", "L"))
    check_attention_params(params, shapes)
    out, cache = attention_forward(params, query[:, None, :], seq, mask, cfg)
    return out[:, 0, :], cache


def target_attention_backward(
    cache: AttentionCache, d_out: Array, d_weights: Array | None = None
) -> tuple[AttentionParams, Array, Array]:
    """Gradients of the params, d_query (B, D) and d_seq (B, L, D); `d_weights` (B, H, 1, L) as in
    `attention_backward`."""
    check_upstream("d_out", d_out, cache.q_in.shape[::2], cache.q_in.dtype)
    grads, d_q_in, d_kv_in = attention_backward(cache, d_out[:, None, :], d_weights)
    return grads, d_q_in[:, 0, :], d_kv_in
