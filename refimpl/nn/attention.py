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
(Q = 1), computed at O(L D) per row and head by folding the key and value projections into the
query (spec/attention.md#target-attention):

    g_h     = Wk_h q_h                  the query through the key projection (D,)
    s_hj    = seq_j . g_h / sqrt(D_h)   = q_h . k_hj / sqrt(D_h) - q_h . bk_h / sqrt(D_h)
    p_h     = sum_j w_hj seq_j          the weighted sequence (D,)
    ctx_h   = p_h Wv_h + r bv_h         = sum_j w_hj v_hj, as the weights of a valid row sum to 1

where Wk_h, Wv_h (D, D_h) are head h's columns of Wk, Wv. The dropped q_h . bk_h is the same for
every key of the row, which the softmax ignores. `target_attention_projected_*` computes the same
numbers through the projected keys and values (O(L D^2)): the executable definition, held equal
by a property test (tests/test_attention.py).

`torch.nn.MultiheadAttention(D, H, batch_first=True)` computes the same numbers given
in_proj_weight = concat(Wq.T, Wk.T, Wv.T), in_proj_bias = concat(bq, bk, bv),
out_proj.weight = Wo.T, out_proj.bias = bo, and key_padding_mask = ~key_mask.

Edge cases: a row whose keys are all masked gets zero weights and a zero output row (torch gives
NaN); a masked query row is zero; neither passes any gradient. Large scores are safe: the softmax
subtracts the row maximum over valid keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class TargetAttentionCache:
    """What `target_attention_backward` needs; `weights` and `context` keep the kernel's query axis
    (Q = 1) so that callers read them as from an `AttentionCache`."""

    params: AttentionParams
    query: Array  # (B, D)
    seq: Array  # (B, L, D)
    q: Array  # (B, H, D_h) projected query
    folded_query: Array  # (B, H, D) g_h = Wk_h q_h
    weights: Array  # (B, H, 1, L)
    pooled: Array  # (B, H, D) p_h = sum_j w_hj seq_j
    context: Array  # (B, 1, D), heads merged
    row_valid: BoolArray  # (B,)
    scale: float


def _split_heads(x: Array, heads: int) -> Array:
    """(B, N, D) -> (B, H, N, D_h)."""
    b, n, d = x.shape
    return x.reshape(b, n, heads, d // heads).transpose(0, 2, 1, 3)


def _merge_heads(x: Array) -> Array:
    """(B, H, N, D_h) -> (B, N, D)."""
    b, h, n, dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, n, h * dh)


SCORE_BLOCK_BYTES = 1 << 19  # bytes of scores per block of batch rows: a block stays in the CPU cache


def _row_blocks(scores: Array) -> list[slice]:
    """Slices of the batch (first) axis whose blocks of the (B, H, Q, L) scores hold about
    SCORE_BLOCK_BYTES (as many float32 scores as twice the float64 ones: each block costs a few
    Python calls, so the blocks are as large as the cache allows). The softmax and its backward
    make several passes over the scores; block by block those passes run in the CPU cache instead
    of main memory (each row's numbers are the same either way: rows never mix)."""
    batch, per_row = scores.shape[0], max(1, int(np.prod(scores.shape[1:])) * scores.itemsize)
    step = max(1, SCORE_BLOCK_BYTES // per_row)
    return [slice(start, min(start + step, batch)) for start in range(0, batch, step)]


def _weight_heads(W: Array, heads: int) -> Array:
    """(D, D) used as x @ W -> (H, D, D_h): head h's columns of W."""
    d = W.shape[0]
    return W.reshape(d, heads, d // heads).transpose(1, 0, 2)


def masked_softmax(scores: Array, mask: BoolArray) -> Array:
    """Softmax over the last axis restricted to `mask` (broadcast); all-masked rows give zeros.

    The row maximum over valid entries is subtracted first, so scores in the thousands are safe.
    Masked entries must hold finite scores (they are set to -inf, whose exp is exactly 0).
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
    return _softmax_in_place(scores + mask_bias(mask, scores.dtype))


def mask_bias(mask: BoolArray, dtype: np.dtype[Any]) -> Array:
    """0 where `mask` is True, -inf where it is False: added to scores it masks them (at the
    mask's own, usually much smaller, broadcast shape)."""
    bias: Array = np.where(mask, 0, -np.inf).astype(dtype)
    return bias


_SHORT_AXIS = 8
"""A last axis up to this long (capsule routing's K interests) takes its row maximum slice by slice."""


def _row_max(scores: Array) -> Array:
    """max over the last axis, keepdims. numpy reduces a short last axis at a call per row, so up
    to _SHORT_AXIS entries the maximum is taken over the slices instead: the same numbers (a maximum
    is exact in any order). initial=-inf: a zero-length axis (no keys at all) is an all-masked row,
    not an error."""
    width = scores.shape[-1]
    if not 0 < width <= _SHORT_AXIS:
        row_max: Array = np.max(scores, axis=-1, keepdims=True, initial=-np.inf)
        return row_max
    row_max = scores[..., :1].copy()
    for k in range(1, width):
        np.maximum(row_max, scores[..., k:k + 1], out=row_max)
    return row_max


def _softmax_in_place(scores: Array, row_valid: BoolArray | None = None) -> Array:
    """Softmax over the last axis of scores whose masked entries are -inf, overwriting them (the
    attention kernel's (B, H, Q, L) arrays are its largest: no temporaries of their size).
    A row of -inf only (every entry masked, or no entry at all) gives zeros, and so does every row
    where `row_valid` (broadcast to scores.shape[:-1] + (1,)) is False."""
    row_max = _row_max(scores)
    scores -= np.where(np.isfinite(row_max), row_max, 0)
    np.exp(scores, out=scores)
    total = scores.sum(axis=-1, keepdims=True)
    keep = total > 0 if row_valid is None else (total > 0) & row_valid
    scores /= np.where(keep, total, np.inf)  # x / inf = 0: a dropped row costs no extra pass
    return scores


def softmax_backward(weights: Array, d_weights: Array) -> Array:
    """d_scores of a softmax over the last axis: w * (d_w - sum(d_w * w)).

    Masked entries (w = 0) get zero gradient, so this serves `masked_softmax` too.
    """
    shapes = Shapes()
    dims = tuple(f"axis{i}" for i in range(np.ndim(weights)))
    shapes.check_float("weights", weights, dims)
    shapes.check_float("d_weights", d_weights, dims)
    result: Array = d_weights - np.sum(d_weights * weights, axis=-1, keepdims=True)
    result *= weights
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
    # (q / sqrt(D_h)) k^T: the scale on the (B, H, Q, D_h) queries, not on the (B, H, Q, L) scores,
    # the kernel's largest array, which is updated in place, a block of batch rows at a time
    q_scaled, k_t = q * scale, k.transpose(0, 1, 3, 2)
    bias = mask_bias(key_mask[:, None, None, :], q.dtype)
    weights = np.empty((*q.shape[:3], k.shape[2]), dtype=q.dtype)  # (B, H, Q, L)
    context_heads = np.empty(q.shape, dtype=q.dtype)  # (B, H, Q, D_h)
    for rows in _row_blocks(weights):
        scores = np.matmul(q_scaled[rows], k_t[rows], out=weights[rows])
        scores += bias[rows]
        _softmax_in_place(scores, row_valid[rows, None, :, None])  # masked queries: zero rows
        np.matmul(scores, v[rows], out=context_heads[rows])
    context = _merge_heads(context_heads)
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
    # in the forward pass this was: out_i = r_i (ctx_i Wo + bo)
    d_projected = np.where(cache.row_valid[:, :, None], d_out, 0)
    d_Wo, d_bo, d_context_merged = affine_backward(cache.context, p.Wo, d_projected)
    # in the forward pass this was: ctx = the heads ctx_h merged back to D
    d_context = _split_heads(d_context_merged, heads)
    v_t = cache.v.transpose(0, 1, 3, 2)
    d_q, d_k, d_v = (np.empty(x.shape, dtype=x.dtype) for x in (cache.q, cache.k, cache.v))
    for rows in _row_blocks(cache.weights):  # the (B, H, Q, L) arrays a block at a time
        weights = cache.weights[rows]
        # in the forward pass this was: ctx_hi = sum_j w_hij v_hj (d_w here, d_s in place below)
        d_scores = d_context[rows] @ v_t[rows]
        if d_weights is not None:  # the weights are an output too: their own upstream adds on
            d_scores += d_weights[rows]
        np.matmul(weights.transpose(0, 1, 3, 2), d_context[rows], out=d_v[rows])
        # in the forward pass this was: w_hij = exp(s_hij) m_j / sum_j' exp(s_hij') m_j'
        # d_s = w * (d_w - sum_j w_j d_w_j) (einsum: the row sums without a product array)
        d_scores -= np.einsum("bhql,bhql->bhq", d_scores, weights)[..., None]
        d_scores *= weights
        # in the forward pass this was: s_hij = q_hi . k_hj / sqrt(D_h); the 1/sqrt(D_h) goes on
        # the (B, H, *, D_h) d_q, d_k after the loop, not on the (B, H, Q, L) d_s
        np.matmul(d_scores, cache.k[rows], out=d_q[rows])
        np.matmul(d_scores.transpose(0, 1, 3, 2), cache.q[rows], out=d_k[rows])
    d_q *= cache.scale
    d_k *= cache.scale
    # in the forward pass this was: q = q_in Wq + bq, k = kv_in Wk + bk, v = kv_in Wv + bv, split
    # into heads; kv_in feeds both k and v, so its two gradients add
    d_Wq, d_bq, d_q_in = affine_backward(cache.q_in, p.Wq, _merge_heads(d_q))
    d_Wk, d_bk, d_kv_in = affine_backward(cache.kv_in, p.Wk, _merge_heads(d_k))
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


def _check_target(
    params: AttentionParams, query: Array, seq: Array, mask: BoolArray, cfg: AttentionConfig
) -> int:
    """Validate a target-attention call; returns the number of heads."""
    shapes = Shapes()
    shapes.check_float("query", query, ("B", "D"))
    shapes.check_float("seq", seq, ("B", "L", "D"))
    shapes.check_bool("mask", mask, ("B", "L"))
    check_attention_params(params, shapes)
    heads = require_positive_int("cfg.num_heads", cfg.num_heads)
    if shapes.size("D") % heads != 0:
        raise ValueError(f"cfg.num_heads: {heads} heads do not divide the width D = {shapes.size('D')}")
    return heads


def target_attention_forward(
    params: AttentionParams, query: Array, seq: Array, mask: BoolArray, cfg: AttentionConfig
) -> tuple[Array, TargetAttentionCache]:
    """One query vector per row attends over a sequence: query (B, D), seq (B, L, D) -> (B, D).

    The O(L D) form (module docstring): the sequence enters two (H, D) x (D, L) products per row
    and is never projected."""
    heads = _check_target(params, query, seq, mask, cfg)
    d = query.shape[1]
    scale = 1.0 / float(np.sqrt(d // heads))
    q = affine(query, params.Wq, params.bq).reshape(-1, heads, d // heads)  # (B, H, D_h)
    # g_h = Wk_h q_h for every row: (H, B, D_h) @ (H, D_h, D) -> (H, B, D)
    folded = (q.transpose(1, 0, 2) @ _weight_heads(params.Wk, heads).transpose(0, 2, 1)).transpose(1, 0, 2)
    scores = (folded @ seq.transpose(0, 2, 1)) * scale  # (B, H, L): seq_j . g_h / sqrt(D_h)
    weights = masked_softmax(scores, mask[:, None, :])  # all-masked rows: zeros
    pooled = weights @ seq  # (B, H, D): p_h = sum_j w_hj seq_j
    row_valid: BoolArray = np.any(mask, axis=1)
    # ctx_h = p_h Wv_h + r bv_h: (H, B, D) @ (H, D, D_h) -> (H, B, D_h), then heads merged
    context = (pooled.transpose(1, 0, 2) @ _weight_heads(params.Wv, heads)).transpose(1, 0, 2).reshape(-1, d)
    context += np.where(row_valid[:, None], params.bv, 0)
    out: Array = np.where(row_valid[:, None], affine(context, params.Wo, params.bo), 0)
    cache = TargetAttentionCache(
        params, query, seq, q, folded, weights[:, :, None, :], pooled, context[:, None, :], row_valid, scale
    )
    return out, cache


def target_attention_backward(
    cache: TargetAttentionCache, d_out: Array, d_weights: Array | None = None
) -> tuple[AttentionParams, Array, Array]:
    """Gradients of the params, d_query (B, D) and d_seq (B, L, D); `d_weights` (B, H, 1, L) as in
    `attention_backward`. d_bk is exactly 0 (the key bias cancels in the softmax)."""
    check_upstream("d_out", d_out, cache.query.shape, cache.query.dtype)
    if d_weights is not None:
        check_upstream("d_weights", d_weights, cache.weights.shape, cache.weights.dtype)
    p = cache.params
    b, heads, d = cache.pooled.shape
    weights = cache.weights[:, :, 0, :]  # (B, H, L)
    # in the forward pass this was: out = r (ctx Wo + bo)
    d_projected = np.where(cache.row_valid[:, None], d_out, 0)
    d_Wo, d_bo, d_context = affine_backward(cache.context[:, 0, :], p.Wo, d_projected)
    # in the forward pass this was: ctx_h = p_h Wv_h + r bv_h, heads merged
    d_context_heads = d_context.reshape(b, heads, d // heads).transpose(1, 0, 2)  # (H, B, D_h)
    d_bv = np.ones(b, dtype=d_context.dtype) @ d_context  # rows without a valid key have d_context 0
    # d_Wv_h = p_h^T d_ctx_h: (H, D, B) @ (H, B, D_h) -> (H, D, D_h) -> head h's columns of (D, D)
    d_Wv = (cache.pooled.transpose(1, 2, 0) @ d_context_heads).transpose(1, 0, 2).reshape(d, d)
    d_pooled = (d_context_heads @ _weight_heads(p.Wv, heads).transpose(0, 2, 1)).transpose(1, 0, 2)  # (B, H, D)
    # in the forward pass this was: p_h = sum_j w_hj seq_j
    d_w = d_pooled @ cache.seq.transpose(0, 2, 1)  # (B, H, L)
    if d_weights is not None:  # the weights are an output too: their own upstream adds on
        d_w = d_w + d_weights[:, :, 0, :]
    # in the forward pass this was: w_h = masked_softmax(s_h), s_hj = seq_j . g_h / sqrt(D_h)
    d_scores = softmax_backward(weights, d_w) * cache.scale
    d_folded = d_scores @ cache.seq  # (B, H, D)
    # seq feeds the pooled sum and the scores: d_seq = w^T d_p + d_s^T g, one product over 2H
    d_seq: Array = np.concatenate([weights, d_scores], axis=1).transpose(0, 2, 1) @ np.concatenate(
        [d_pooled, cache.folded_query], axis=1
    )
    # in the forward pass this was: g_h = Wk_h q_h, so d_q_h = d_g_h Wk_h (H, B, D_h) and
    # d_Wk_h = d_g_h^T q_h (H, D, D_h); bk never entered (it cancels in the softmax)
    d_folded_heads, q_heads = d_folded.transpose(1, 0, 2), cache.q.transpose(1, 0, 2)
    d_q = (d_folded_heads @ _weight_heads(p.Wk, heads)).transpose(1, 0, 2).reshape(b, d)
    d_Wk = (d_folded_heads.transpose(0, 2, 1) @ q_heads).transpose(1, 0, 2).reshape(d, d)
    # in the forward pass this was: q = query Wq + bq, split into heads
    d_Wq, d_bq, d_query = affine_backward(cache.query, p.Wq, d_q)
    grads = AttentionParams(
        Wq=d_Wq, bq=d_bq, Wk=d_Wk, bk=np.zeros_like(p.bk), Wv=d_Wv, bv=d_bv, Wo=d_Wo, bo=d_bo
    )
    return grads, d_query, d_seq


def target_attention_projected_forward(
    params: AttentionParams, query: Array, seq: Array, mask: BoolArray, cfg: AttentionConfig
) -> tuple[Array, AttentionCache]:
    """The executable definition of target attention: the kernel with one query per row, keys and
    values projected (O(L D^2)). Same arguments and numbers as `target_attention_forward`."""
    _check_target(params, query, seq, mask, cfg)
    out, cache = attention_forward(params, query[:, None, :], seq, mask, cfg)
    return out[:, 0, :], cache


def target_attention_projected_backward(
    cache: AttentionCache, d_out: Array, d_weights: Array | None = None
) -> tuple[AttentionParams, Array, Array]:
    """Gradients of `target_attention_projected_forward`, as `target_attention_backward`."""
    check_upstream("d_out", d_out, cache.q_in.shape[::2], cache.q_in.dtype)
    grads, d_q_in, d_kv_in = attention_backward(cache, d_out[:, None, :], d_weights)
    return grads, d_q_in[:, 0, :], d_kv_in
