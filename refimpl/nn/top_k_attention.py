"""Top-k target attention: select the k behaviours of a long sequence most relevant to each
candidate, then target attention of the candidate over those k (spec/top_k_attention.md).

This is the two-stage search of the lifelong-sequence baselines IFA compares against: a General
Search Unit (GSU) scores every behaviour against the candidate and keeps the top k, an Exact Search
Unit (ESU) runs multi-head target attention over the k (SIM, Pi et al. 2020, "Search-based user
interest modeling", its soft search; TWIN, Chang et al. 2023, its consistency-preserved GSU; no copy
of either paper was at hand, so their equations are cited by name, not number). For request b,
candidate m (query c_bm, D) and behaviour j (e_bj, D, valid where seq_mask_bj):

    SIM-soft (score = "inner_product": SIM's soft search, the inner product of the candidate's and
              the behaviour's embeddings, with its two projections the identity):
        r_bmj = c_bm . e_bj
    TWIN     (score = "attention": the consistency-preserved GSU, the ESU's own target-attention
              score with head 0's parameters, on item-only features: no cross-feature bias):
        r_bmj = q_0,bm . k_0,bj / sqrt(D_h),   q = c Wq + bq,  k = e Wk + bk  (head 0's columns)

    S_bm  = the k valid positions j of largest r_bmj (all of them when fewer than k are valid),
            ties at the k-th place broken towards the LOWER position; listed in increasing position
    out_bm = v_bm * TA(c_bm; e_bj for j in S_bm)       refimpl.nn.attention.target_attention, H heads
    v_bm   = cand_mask_bm and S_bm non-empty

The selection is piecewise constant in every input, so no gradient flows through the scores r:
d_candidates, d_seq and the parameter gradients are those of the target attention over the
selected behaviours (gathered rows e_bj, j in S_bm), scattered back to their positions in seq
(a behaviour selected by several candidates sums their gradients; an unselected one gets 0). In
TWIN the GSU is trained only through the ESU, whose parameters it shares.

Shapes: candidates (B, M, D), seq (B, L, D), seq_mask (B, L) bool, cand_mask (B, M) bool (None: all
valid), params `AttentionParams` (every W (D, D), b (D,)), out (B, M, D); the selection
indices (B, M, k) int64 and selected_mask (B, M, k) bool with k = min(cfg.k, L) slots.

Edge cases: k >= the number of valid behaviours selects every valid one (the other slots are
masked positions, selected_mask False); masked positions are never selected as valid; a candidate
masked by cand_mask, or a request without a valid behaviour, gets a zero row and no gradient (the
row rule of refimpl.nn.attention); L = 0 gives k = 0 slots and zero rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, BoolArray, IntArray, Shapes, require_choice, require_positive_int
from refimpl.nn._upstream import check_upstream
from refimpl.nn.attention import (
    AttentionConfig,
    AttentionParams,
    TargetAttentionCache,
    _weight_heads,
    check_attention_params,
    target_attention_backward,
    target_attention_forward,
)
from refimpl.nn.embedding import EmbeddingCache, embedding_backward

__all__ = [
    "SCORES",
    "TopKAttentionCache",
    "TopKAttentionConfig",
        "select_top_k",
    "top_k_attention_backward",
    "top_k_attention_forward",
]

SCORES = ("inner_product", "attention")  # SIM-soft's GSU, TWIN's consistency-preserved GSU


@dataclass(frozen=True)
class TopKAttentionConfig:
    """k: behaviours kept per candidate (TWIN and SIM keep 100); num_heads: the ESU's heads H;
    score: the GSU's relevance, "inner_product" (SIM-soft) or "attention" (TWIN)."""

    k: int
    num_heads: int = 1
    score: str = "attention"


@dataclass(frozen=True)
class TopKAttentionCache:
    attention: TargetAttentionCache  # the ESU over rows (B*M): query (B*M, D), seq (B*M, k, D)
    scores: Array  # (B, M, L) r_bmj at every position (masks not applied)
    indices: IntArray  # (B, M, k) selected positions, increasing
    selected_mask: BoolArray  # (B, M, k) the slot holds a valid behaviour of a valid candidate
    seq_shape: tuple[int, int, int]  # (B, L, D)


def _check_config(cfg: TopKAttentionConfig, width: int) -> tuple[int, int, str]:
    if not isinstance(cfg, TopKAttentionConfig):
        raise TypeError(f"cfg: expected TopKAttentionConfig, got {type(cfg).__name__}")
    k = require_positive_int("cfg.k", cfg.k)
    heads = require_positive_int("cfg.num_heads", cfg.num_heads)
    if width % heads != 0:
        raise ValueError(f"cfg.num_heads: {heads} heads do not divide the width D = {width}")
    return k, heads, require_choice("cfg.score", cfg.score, SCORES)


def _check_inputs(
    params: AttentionParams,
    candidates: Array,
    seq: Array,
    seq_mask: BoolArray,
    cfg: TopKAttentionConfig,
    cand_mask: BoolArray | None,
) -> tuple[int, int, str, BoolArray]:
    """Validate a call by the caller's argument names; returns k, H, the score and the cand_mask."""
    shapes = Shapes()
    shapes.check_float("candidates", candidates, ("B", "M", "D"))
    shapes.check_float("seq", seq, ("B", "L", "D"))
    shapes.check_bool("seq_mask", seq_mask, ("B", "L"))
    if cand_mask is None:
        cand_mask = np.ones(candidates.shape[:2], dtype=bool)
    shapes.check_bool("cand_mask", cand_mask, ("B", "M"))
    check_attention_params(params, shapes)
    k, heads, score = _check_config(cfg, shapes.size("D"))
    return k, heads, score, cand_mask


def _relevance_scores(
    params: AttentionParams, candidates: Array, seq: Array, heads: int, score: str
) -> Array:
    """The GSU's r (B, M, L) of every behaviour for every candidate (module docstring), masks not
    applied. "attention" folds head 0's key projection into the query (refimpl/nn/attention.py):
    q_0 . k_0j = e_j . (Wk_0 q_0) + q_0 . bk_0, O(L D) per candidate instead of projecting L keys."""
    if score == "inner_product":
        inner: Array = candidates @ seq.transpose(0, 2, 1)  # (B, M, D) @ (B, D, L)
        return inner
    d = candidates.shape[2]
    d_head = d // heads
    q0 = candidates @ params.Wq[:, :d_head] + params.bq[:d_head]  # (B, M, D_h), head 0
    folded = q0 @ _weight_heads(params.Wk, heads)[0].T  # (B, M, D): g_0 = Wk_0 q_0
    scale = 1.0 / float(np.sqrt(d_head))
    # the key bias adds q_0 . bk_0 to every behaviour of a row: kept so r is the ESU's head-0 score
    row_bias = q0 @ params.bk[:d_head]  # (B, M)
    attention: Array = (folded @ seq.transpose(0, 2, 1) + row_bias[:, :, None]) * scale
    return attention


def select_top_k(scores: Array, valid: BoolArray, k: int) -> tuple[IntArray, BoolArray]:
    """The positions of the k largest valid scores of each row, in increasing position order.

    scores (..., L) float, valid (..., L) bool (broadcast to scores). Among equal scores at the
    k-th place the lower positions are taken. A row with fewer than k valid positions keeps all of
    them and fills its other slots with invalid positions (increasing too); selected_mask says which
    slots hold a valid one. Returns indices (..., min(k, L)) int64 and selected_mask, same shape.
    """
    require_positive_int("k", k)
    if not isinstance(scores, np.ndarray) or scores.dtype not in (np.float32, np.float64):
        raise TypeError(f"scores: expected a float32 or float64 array, got {type(scores).__name__}")
    if not isinstance(valid, np.ndarray) or valid.dtype != np.bool_:
        raise TypeError(f"valid: expected a bool array (True = valid), got {type(valid).__name__}")
    try:
        broadcast = np.broadcast_shapes(scores.shape, valid.shape)
    except ValueError:
        broadcast = ()
    if scores.ndim == 0 or broadcast != scores.shape:
        raise ValueError(f"valid: shape {valid.shape} does not broadcast to scores {scores.shape} (..., L)")
    valid = np.broadcast_to(valid, scores.shape)
    if not np.isfinite(scores).all() and not np.isfinite(scores[valid]).all():
        raise ValueError("scores: expected finite scores at valid positions (an overflow upstream?)")
    length = scores.shape[-1]
    slots = min(k, length)
    if slots == 0:
        return np.zeros((*scores.shape[:-1], 0), dtype=np.int64), np.zeros((*scores.shape[:-1], 0), dtype=bool)
    # Rank by (larger score first, lower position first) in O(L) per row. Invalid positions score
    # -inf, below every (finite) valid score, so they fill only the slots of rows with fewer than k
    # valid positions, lower positions first like any tie. A partition of the values (cheaper than
    # one of their positions) finds each row's k-th largest; the positions reaching it are the
    # answer wherever exactly k do, and the flat nonzero lists them row by row in increasing order
    # (several times cheaper than a 2-d nonzero, which also builds the row indices). Where more
    # do (ties at the k-th place), the row takes every score above the k-th and the first ties.
    masked = np.where(valid, scores, -np.inf)
    flat = masked.reshape(-1, length)
    kth = np.partition(flat, length - slots, axis=-1)[:, length - slots : length - slots + 1]  # (rows, 1)
    take = flat >= kth
    surplus = np.count_nonzero(take, axis=-1) > slots
    if surplus.any():
        rows, rows_kth = flat[surplus], kth[surplus]
        room = slots - np.count_nonzero(rows > rows_kth, axis=-1)[:, None]
        tied = rows == rows_kth
        take[surplus] = (rows > rows_kth) | (tied & (np.cumsum(tied, axis=-1) <= room))
    offsets = np.arange(flat.shape[0], dtype=np.int64)[:, None] * length
    indices = (np.flatnonzero(take).reshape(-1, slots) - offsets).reshape(*scores.shape[:-1], slots)
    selected: BoolArray = np.take_along_axis(valid, indices, axis=-1)
    return indices, selected


def top_k_attention_forward(
    params: AttentionParams,
    candidates: Array,
    seq: Array,
    seq_mask: BoolArray,
    cfg: TopKAttentionConfig,
    cand_mask: BoolArray | None = None,
) -> tuple[Array, TopKAttentionCache]:
    """Each of the M candidates of a request attends over its own top-k behaviours of seq.

    candidates (B, M, D), seq (B, L, D), seq_mask (B, L) and cand_mask (B, M) bool (True = valid;
    None: every candidate valid). Returns out (B, M, D) and the cache for the backward."""
    k, heads, score, cand_mask = _check_inputs(params, candidates, seq, seq_mask, cfg, cand_mask)
    b, m, d = candidates.shape
    scores = _relevance_scores(params, candidates, seq, heads, score)  # (B, M, L)
    valid = seq_mask[:, None, :] & cand_mask[:, :, None]  # (B, M, L)
    indices, selected = select_top_k(scores, valid, k)
    slots = indices.shape[2]
    # the selected behaviours of every candidate: (B, M, k, D), then one target-attention row each
    # (one take of flat rows: cheaper than indexing with two broadcast index arrays)
    flat = (np.arange(b)[:, None, None] * seq.shape[1] + indices).reshape(-1)
    gathered = np.take(seq.reshape(b * seq.shape[1], d), flat, axis=0).reshape(b, m, slots, d)
    out, attention = target_attention_forward(
        params,
        candidates.reshape(b * m, d),
        gathered.reshape(b * m, slots, d),
        selected.reshape(b * m, slots),
        AttentionConfig(num_heads=heads),
    )
    cache = TopKAttentionCache(attention, scores, indices, selected, (b, seq.shape[1], d))
    return out.reshape(b, m, d), cache


def top_k_attention_backward(
    cache: TopKAttentionCache, d_out: Array
) -> tuple[AttentionParams, Array, Array]:
    """Gradients of the params, d_candidates (B, M, D) and d_seq (B, L, D), through the selected
    behaviours only (the selection passes none: module docstring)."""
    b, length, d = cache.seq_shape
    m, slots = cache.indices.shape[1:]
    check_upstream("d_out", d_out, (b, m, d), cache.attention.query.dtype)
    grads, d_query, d_gathered = target_attention_backward(cache.attention, d_out.reshape(b * m, d))
    # in the forward pass this was: gathered_bmi = seq_b,indices_bmi, a gather like an embedding
    # lookup, so its backward is the embedding's scatter: repeated picks of a behaviour sum their
    # gradients (the sums of np.add.at, in its order, at about a third of its time)
    flat = (np.arange(b)[:, None, None] * length + cache.indices).reshape(-1)
    d_seq = embedding_backward(EmbeddingCache(flat, b * length, d_out.dtype, d), d_gathered.reshape(b * m * slots, d))
    return grads, d_query.reshape(b, m, d), d_seq.reshape(b, length, d)
