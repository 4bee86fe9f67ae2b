"""Multi-interest readout: K user interests scored against a positive and negatives (UMI eq. 10-14).

With interests v_bk (B, K, D), positive e_b and negatives e_bn (shared: e_n):

    k*_b  = argmax_k <v_bk, e_b>                               the positive's interest
    standard (MIND, ComiRec):  every item scores against v_{b k*_b}
        s_b = <v_{b k*_b}, e_b> / tau,    s_bn = <v_{b k*_b}, e_bn> / tau
    harder_negatives (UMI eq. 12-13): every item scores against its own argmax interest
        k_bn = argmax_k <v_bk, e_bn>,     s_bn = <v_{b k_bn}, e_bn> / tau = max_k <v_bk, e_bn> / tau
    loss = sampled softmax over (s_b, s_bn) (refimpl.nn.sampled_softmax: logQ, accidental hits,
           denominator, mean over counted rows all as there)

Ties break to the lowest interest index (numpy argmax). The gradient of a score flows to its
chosen interest only: the argmax is piecewise constant, so away from ties this is the exact
gradient. Since s_b is the same in both modes and each harder-negative logit is a max over
interests, which is >= its standard logit, and the loss increases in every negative logit, the
harder_negatives loss is >= the standard loss for every input (spec/multi_interest_readout.md).

Shapes: interests (B, K, D), positive (B, D), negatives (N, D) or (B, N, D), positive_ids (B,),
negative_ids (N,) or (B, N), positive_q (B,), negative_q like negative_ids; intermediates
positive_interest (B,) int64 and negative_interests (B, N) int64 (in `standard` the positive's
interest repeated); loss () scalar array.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from refimpl._check import Array, IntArray, Shapes, require_choice
from refimpl.nn.sampled_softmax import (
    LogitLoss,
    SampledSoftmaxConfig,
    check_config,
    check_scored_items,
    scores_loss_backward,
    scores_loss_forward,
)

__all__ = [
    "ReadoutCache",
    "ReadoutConfig",
    "ReadoutGrads",
    "multi_interest_readout_backward",
    "multi_interest_readout_forward",
]

MODES = ("standard", "harder_negatives")


@dataclass(frozen=True)
class ReadoutConfig:
    mode: str = "standard"
    loss: SampledSoftmaxConfig = field(default_factory=SampledSoftmaxConfig)


@dataclass(frozen=True)
class ReadoutCache:
    interests: Array  # (B, K, D)
    positive: Array  # (B, D)
    negatives: Array  # (N, D) or (B, N, D)
    shared: bool
    temperature: float
    positive_q: Array | None
    negative_q: Array | None
    positive_interest: IntArray  # (B,) int64
    negative_interests: IntArray  # (B, N) int64
    positive_logits: Array  # (B,)
    negative_logits: Array  # (B, N), before accidental-hit removal
    logit_loss: LogitLoss


@dataclass(frozen=True)
class ReadoutGrads:
    interests: Array  # (B, K, D), nonzero only at chosen interests
    positive: Array  # (B, D)
    negatives: Array  # like negatives
    positive_q: Array | None
    negative_q: Array | None


def interest_scores(interests: Array, negatives: Array) -> Array:
    """<v_bk, e_bn> for every row, negative and interest: (B, N, K)."""
    if negatives.ndim == 2:
        # shared negatives: one (B K, D) @ (D, N) product, where einsum would loop entry by entry
        b, k, d = interests.shape
        by_interest = interests.reshape(b * k, d) @ negatives.T  # (B K, N)
        scores: Array = by_interest.reshape(b, k, negatives.shape[0]).transpose(0, 2, 1)
    else:
        scores = np.einsum("bkd,bnd->bnk", interests, negatives)
    return scores


def choose_interests(
    positive_scores: Array, negative_scores: Array, mode: str
) -> tuple[IntArray, IntArray]:
    """k*_b (B,) from positive scores (B, K), and k_bn (B, N) from negative scores (B, N, K): the
    positive's interest repeated (`standard`) or each negative's own argmax (`harder_negatives`).
    int64, ties to the lowest index."""
    positive_interest = np.argmax(positive_scores, axis=1).astype(np.int64)
    if mode == "standard":
        shape = negative_scores.shape[:2]
        return positive_interest, np.broadcast_to(positive_interest[:, None], shape).astype(np.int64)
    return positive_interest, np.argmax(negative_scores, axis=2).astype(np.int64)


def multi_interest_readout_forward(
    interests: Array,
    positive: Array,
    negatives: Array,
    positive_ids: IntArray,
    negative_ids: IntArray,
    cfg: ReadoutConfig,
    positive_q: Array | None = None,
    negative_q: Array | None = None,
) -> tuple[Array, ReadoutCache]:
    """The sampled-softmax loss () of the multi-interest readout in `cfg.mode`."""
    shapes = Shapes()
    shapes.check_float("interests", interests, ("B", "K", "D"))
    if shapes.size("K") == 0:
        raise ValueError(f"interests: expected at least one interest (B, K >= 1, D), got {interests.shape}")
    shared = check_scored_items(shapes, positive, negatives, positive_ids, negative_ids, positive_q, negative_q)
    require_choice("cfg.mode", cfg.mode, MODES)
    check_config(cfg.loss)
    positive_scores = np.einsum("bkd,bd->bk", interests, positive)
    negative_scores = interest_scores(interests, negatives)
    positive_interest, negative_interests = choose_interests(positive_scores, negative_scores, cfg.mode)
    chosen_positive = np.take_along_axis(positive_scores, positive_interest[:, None], axis=1)[:, 0]
    chosen_negative = np.take_along_axis(negative_scores, negative_interests[:, :, None], axis=2)[:, :, 0]
    positive_logits, negative_logits, _, logit_loss = scores_loss_forward(
        chosen_positive, chosen_negative, positive_ids, negative_ids, cfg.loss, positive_q, negative_q
    )
    cache = ReadoutCache(
        interests, positive, negatives, shared, float(cfg.loss.temperature), positive_q,
        negative_q, positive_interest, negative_interests, positive_logits, negative_logits,
        logit_loss,
    )
    return logit_loss.loss, cache


def multi_interest_readout_backward(cache: ReadoutCache, d_loss: Array | float) -> ReadoutGrads:
    """Gradients: d_interests (B, K, D) only at the chosen interests, d_positive, d_negatives."""
    # in the forward pass this was: loss = scores_loss(chosen_positive, chosen_negative, ...)
    d_pos_score, d_neg_score, d_positive_q, d_negative_q = scores_loss_backward(
        cache.logit_loss.cache, d_loss, cache.temperature, cache.positive_q, cache.negative_q, cache.shared
    )
    interests = cache.interests
    b, k, d = interests.shape
    n = d_neg_score.shape[1]
    rows = np.arange(b)
    # in the forward pass this was: chosen_negative = negative_scores[b, n, negative_interests[b, n]],
    # negative_scores = interests . negatives: each score routes its gradient to one interest
    negative_routing = d_neg_score[:, :, None] * (
        cache.negative_interests[:, :, None] == np.arange(k)
    )  # (B, N, K): d s_bn at k = k_bn, 0 elsewhere
    if cache.shared:
        # d v_bk = sum_n routing_bnk e_n and d e_n = sum_{b,k} routing_bnk v_bk: two matrix
        # products over (B K) rows (BLAS), where einsum would loop entry by entry
        by_interest = negative_routing.transpose(0, 2, 1).reshape(b * k, n)  # (B K, N)
        d_interests = (by_interest @ cache.negatives).reshape(b, k, d)
        d_negatives: Array = by_interest.T @ interests.reshape(b * k, d)
    else:
        d_interests = np.einsum("bnk,bnd->bkd", negative_routing, cache.negatives)
        chosen_vectors = interests[rows[:, None], cache.negative_interests]  # (B, N, D)
        d_negatives = d_neg_score[:, :, None] * chosen_vectors
    # in the forward pass this was: chosen_positive = interests[b, positive_interest[b]] . positive[b]
    d_interests[rows, cache.positive_interest] += d_pos_score[:, None] * cache.positive
    d_positive: Array = d_pos_score[:, None] * interests[rows, cache.positive_interest]
    return ReadoutGrads(d_interests, d_positive, d_negatives, d_positive_q, d_negative_q)
