"""Sampled softmax with accidental-hit removal and logQ correction (ULIM eq. 1-2, UMI eq. 10-11).

For row b with user vector u_b, positive item e_b and negatives e_bn (shared: e_n for every row):

    s_b   = <u_b, e_b> / tau  - [log q_b]                 positive logit
    s_bn  = <u_b, e_bn> / tau - [log q_bn]                negative logits (logQ: same correction)
    kept_bn = negative_id_bn != positive_id_b             accidental hits removed (score -inf)
    with_positive  (default):  l_b = -s_b + log(exp(s_b) + sum_{n kept} exp(s_bn))
    negatives_only (ULIM eq. 2 as printed): l_b = -s_b + log(sum_{n kept} exp(s_bn))
    loss = mean over counted rows of l_b

`with_positive` is the standard sampled softmax: l_b = -log p_b with p_b a probability, so
l_b >= 0 and finite for any finite logits. `negatives_only` is unbounded below: raising s_b
lowers l_b linearly without limit (l_b -> -inf as <u_b, e_b> -> +inf), so a model can drive the
loss down by inflating norms rather than by ranking; it exists for fidelity to the paper.

Counted rows: every row under `with_positive`. Under `negatives_only` a row whose negatives are
all removed as accidental hits has an empty denominator (l_b would be +inf); such a row is not
counted: its l_b is reported as 0, it passes no gradient, and the mean is over the counted rows
(loss 0 if no row is counted).

Shapes: user (B, D), positive (B, D), negatives (N, D) shared or (B, N, D) per row,
positive_ids (B,), negative_ids (N,) or (B, N), positive_q (B,), negative_q (N,) or (B, N) with
q in (0, 1] (probabilities the items are drawn with), loss () scalar array.
The papers sum over rows; this reduction is the mean (the sum is B times larger).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, BoolArray, IntArray, Shapes, require_choice
from refimpl.nn._upstream import check_loss_upstream

__all__ = [
    "SampledSoftmaxCache",
    "SampledSoftmaxConfig",
    "SampledSoftmaxGrads",
    "sampled_softmax_backward",
    "sampled_softmax_forward",
]

DENOMINATORS = ("with_positive", "negatives_only")


@dataclass(frozen=True)
class SampledSoftmaxConfig:
    temperature: float = 1.0
    denominator: str = "with_positive"
    remove_accidental_hits: bool = True


@dataclass(frozen=True)
class LogitLossCache:
    """What the backward of the loss over logits needs."""

    positive_probs: Array  # (B,) softmax weight of the positive (0 under negatives_only)
    negative_probs: Array  # (B, N) softmax weights of the negatives, 0 where removed
    row_counted: BoolArray  # (B,)
    count: int
    denominator: str


@dataclass(frozen=True)
class LogitLoss:
    """The loss over logits and its named intermediates."""

    loss: Array  # () mean over counted rows
    row_losses: Array  # (B,) 0 for rows not counted
    row_counted: BoolArray  # (B,)
    cache: LogitLossCache


@dataclass(frozen=True)
class SampledSoftmaxCache:
    user: Array  # (B, D)
    positive: Array  # (B, D)
    negatives: Array  # (N, D) or (B, N, D)
    shared: bool
    temperature: float
    positive_q: Array | None  # (B,)
    negative_q: Array | None  # (N,) or (B, N)
    positive_logits: Array  # (B,)
    negative_logits: Array  # (B, N), before removal
    negative_kept: BoolArray  # (B, N)
    logit_loss: LogitLoss


@dataclass(frozen=True)
class SampledSoftmaxGrads:
    user: Array  # (B, D)
    positive: Array  # (B, D)
    negatives: Array  # like negatives
    positive_q: Array | None  # (B,) when q was given
    negative_q: Array | None  # like negative_q when given


def check_config(cfg: SampledSoftmaxConfig) -> SampledSoftmaxConfig:
    """Refuse a non-positive or non-finite temperature, an unknown denominator (ValueError) and a
    non-bool remove_accidental_hits (TypeError)."""
    tau = cfg.temperature
    if not is_finite_number(tau) or tau <= 0:
        raise ValueError(f"cfg.temperature: expected a finite number > 0, got {tau!r}")
    require_choice("cfg.denominator", cfg.denominator, DENOMINATORS)
    if not isinstance(cfg.remove_accidental_hits, bool):
        raise TypeError(
            f"cfg.remove_accidental_hits: expected a bool, got {cfg.remove_accidental_hits!r}"
        )
    return cfg


def is_finite_number(value: object) -> bool:
    """A real, finite number (bool is refused: True is not a temperature)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return False
    return bool(np.isfinite(value))


def check_probabilities(name: str, q: Array) -> None:
    """q must lie in (0, 1]: log q is finite."""
    if not np.all((q > 0) & (q <= 1)):
        bad = tuple(int(i) for i in np.argwhere(~((q > 0) & (q <= 1)))[0])
        raise ValueError(f"{name}: expected probabilities in (0, 1], got {q[bad]!r} at {bad}")


def accidental_hits_kept(
    positive_ids: IntArray, negative_ids: IntArray, remove: bool
) -> BoolArray:
    """(B, N): True where a negative stays in the denominator."""
    ids = negative_ids[None, :] if negative_ids.ndim == 1 else negative_ids
    if not remove:
        return np.ones(np.broadcast_shapes(ids.shape, positive_ids[:, None].shape), dtype=bool)
    kept: BoolArray = ids != positive_ids[:, None]
    return kept


def softmax_loss_forward(
    positive_logits: Array, negative_logits: Array, negative_kept: BoolArray, denominator: str
) -> LogitLoss:
    """The row losses and mean loss from logits: positive (B,), negatives (B, N), kept (B, N).

    One pass of exponentials serves both the logsumexp and the softmax: with m_b the row's max over
    the entries in the denominator, e = exp(s - m_b) (0 where removed), Z_b = sum e,
    lse_b = m_b + log Z_b and p = e / Z_b."""
    require_choice("denominator", denominator, DENOMINATORS)
    dtype = positive_logits.dtype
    with_positive = denominator == "with_positive"
    row_counted: BoolArray = np.any(negative_kept, axis=1) | with_positive
    negative_exp = negative_logits.copy()
    np.copyto(negative_exp, -np.inf, where=~negative_kept)  # not in the denominator: exp(-inf) = 0 exactly
    positive_exp = positive_logits.copy() if with_positive else np.full_like(positive_logits, -np.inf)
    row_max = np.maximum(positive_exp, np.max(negative_exp, axis=1, initial=-np.inf))
    shift = np.where(row_counted, row_max, 0).astype(dtype)  # an empty row (every entry -inf) needs none
    negative_exp -= shift[:, None]
    np.exp(negative_exp, out=negative_exp)
    positive_exp = np.exp(positive_exp - shift)
    total = positive_exp + negative_exp.sum(axis=1)  # Z_b >= 1 on a counted row (its max gives exp(0))
    safe_total = np.where(row_counted, total, 1).astype(dtype)
    row_losses: Array = np.where(row_counted, shift + np.log(safe_total) - positive_logits, 0).astype(dtype)
    negative_exp /= safe_total[:, None]  # the softmax probabilities, 0 where removed
    positive_probs: Array = positive_exp / safe_total
    count = int(row_counted.sum())
    loss: Array = np.asarray(row_losses.sum() / max(count, 1), dtype=dtype)
    cache = LogitLossCache(positive_probs, negative_exp, row_counted, count, denominator)
    return LogitLoss(loss, row_losses, row_counted, cache)


def softmax_loss_backward(cache: LogitLossCache, d_loss: Array | float) -> tuple[Array, Array]:
    """d_positive_logits (B,) and d_negative_logits (B, N) from the scalar d_loss."""
    dtype = cache.negative_probs.dtype
    # in the forward pass this was: loss = sum over counted rows of (lse - positive_logit) / count,
    # lse = logsumexp over the kept logits, whose gradient is their softmax probability
    d_rows = (check_loss_upstream("d_loss", d_loss, dtype) * cache.row_counted / max(cache.count, 1)).astype(dtype)
    d_positive_logits: Array = d_rows * (cache.positive_probs - 1)
    d_negative_logits: Array = d_rows[:, None] * cache.negative_probs
    return d_positive_logits, d_negative_logits


def check_scored_items(
    shapes: Shapes,
    positive: Array,
    negatives: Array,
    positive_ids: IntArray,
    negative_ids: IntArray,
    positive_q: Array | None,
    negative_q: Array | None,
) -> bool:
    """Validate the items a user vector is scored against, B and D bound by the caller's `shapes`;
    returns whether the negatives are shared."""
    shapes.check_float("positive", positive, ("B", "D"))
    if not isinstance(negatives, np.ndarray) or negatives.ndim not in (2, 3):
        shape = getattr(negatives, "shape", type(negatives).__name__)
        raise ValueError(f"negatives: expected shape (N, D) or (B, N, D), got {shape}")
    shared = negatives.ndim == 2
    shapes.check_float("negatives", negatives, ("N", "D") if shared else ("B", "N", "D"))
    shapes.check_int("positive_ids", positive_ids, ("B",))
    shapes.check_int("negative_ids", negative_ids, ("N",) if shared else ("B", "N"))
    if (positive_q is None) != (negative_q is None):
        raise ValueError("positive_q, negative_q: give both (logQ correction) or neither")
    if positive_q is not None and negative_q is not None:
        shapes.check_float("positive_q", positive_q, ("B",))
        shapes.check_float("negative_q", negative_q, ("N",) if shared else ("B", "N"))
        check_probabilities("positive_q", positive_q)
        check_probabilities("negative_q", negative_q)
    return shared


def scores_loss_forward(
    positive_scores: Array,
    negative_scores: Array,
    positive_ids: IntArray,
    negative_ids: IntArray,
    cfg: SampledSoftmaxConfig,
    positive_q: Array | None,
    negative_q: Array | None,
) -> tuple[Array, Array, BoolArray, LogitLoss]:
    """Scores <u, e> (B,), (B, N) to logits s / tau - [log q], then the loss over the kept ones.

    Returns (positive_logits (B,), negative_logits (B, N) before removal, kept (B, N), loss)."""
    inv_tau = positive_scores.dtype.type(1.0 / cfg.temperature)
    positive_logits: Array = positive_scores * inv_tau
    negative_logits: Array = negative_scores * inv_tau
    if positive_q is not None and negative_q is not None:
        positive_logits -= np.log(positive_q)  # in place: the logits are ours, just made
        negative_logits -= np.log(negative_q)
    kept = accidental_hits_kept(positive_ids, negative_ids, cfg.remove_accidental_hits)
    logit_loss = softmax_loss_forward(positive_logits, negative_logits, kept, cfg.denominator)
    return positive_logits, negative_logits, kept, logit_loss


def logq_backward(
    positive_q: Array | None,
    negative_q: Array | None,
    d_positive_logits: Array,
    d_negative_logits: Array,
    shared: bool,
) -> tuple[Array | None, Array | None]:
    """d q of the correction s - log q: -d_s / q; a shared negative sums over rows."""
    if positive_q is None or negative_q is None:
        return None, None
    d_negative_sum = d_negative_logits.sum(axis=0) if shared else d_negative_logits
    return -d_positive_logits / positive_q, -d_negative_sum / negative_q


def scores_loss_backward(
    logit_loss: LogitLossCache,
    d_loss: Array | float,
    temperature: float,
    positive_q: Array | None,
    negative_q: Array | None,
    shared: bool,
) -> tuple[Array, Array, Array | None, Array | None]:
    """(d_positive_scores (B,), d_negative_scores (B, N), d_positive_q, d_negative_q)."""
    d_pos_logit, d_neg_logit = softmax_loss_backward(logit_loss, d_loss)
    # in the forward pass this was: logits = scores / tau - [log q]
    inv_tau = d_pos_logit.dtype.type(1.0 / temperature)
    d_positive_q, d_negative_q = logq_backward(positive_q, negative_q, d_pos_logit, d_neg_logit, shared)
    d_neg_logit *= inv_tau  # in place: (B, N) and ours, no longer needed as the logits' gradient
    return d_pos_logit * inv_tau, d_neg_logit, d_positive_q, d_negative_q


def sampled_softmax_forward(
    user: Array,
    positive: Array,
    negatives: Array,
    positive_ids: IntArray,
    negative_ids: IntArray,
    cfg: SampledSoftmaxConfig,
    positive_q: Array | None = None,
    negative_q: Array | None = None,
) -> tuple[Array, SampledSoftmaxCache]:
    """The mean sampled-softmax loss () of user vectors against positives and negatives."""
    shapes = Shapes()
    shapes.check_float("user", user, ("B", "D"))
    shared = check_scored_items(shapes, positive, negatives, positive_ids, negative_ids, positive_q, negative_q)
    check_config(cfg)
    positive_scores = np.einsum("bd,bd->b", user, positive)
    negative_scores = user @ negatives.T if shared else np.einsum("bd,bnd->bn", user, negatives)
    positive_logits, negative_logits, kept, logit_loss = scores_loss_forward(
        positive_scores, negative_scores, positive_ids, negative_ids, cfg, positive_q, negative_q
    )
    cache = SampledSoftmaxCache(
        user, positive, negatives, shared, float(cfg.temperature), positive_q, negative_q,
        positive_logits, negative_logits, kept, logit_loss,
    )
    return logit_loss.loss, cache


def sampled_softmax_backward(cache: SampledSoftmaxCache, d_loss: Array | float) -> SampledSoftmaxGrads:
    """Gradients of user, positive, negatives (and of q when it was given)."""
    d_pos_score, d_neg_score, d_positive_q, d_negative_q = scores_loss_backward(
        cache.logit_loss.cache, d_loss, cache.temperature, cache.positive_q, cache.negative_q, cache.shared
    )
    # in the forward pass this was: positive_scores = <user, positive>, negative_scores = <user, negatives>
    if cache.shared:
        d_user = d_pos_score[:, None] * cache.positive + d_neg_score @ cache.negatives
        # (D, B) x (B, N) then transposed: the same sums, and OpenBLAS runs it faster than
        # d_neg_score.T @ user, whose (B, N) operand it would read transposed
        d_negatives: Array = (cache.user.T @ d_neg_score).T
    else:
        d_user = d_pos_score[:, None] * cache.positive + np.einsum(
            "bn,bnd->bd", d_neg_score, cache.negatives
        )
        d_negatives = d_neg_score[:, :, None] * cache.user[:, None, :]
    d_positive: Array = d_pos_score[:, None] * cache.user
    return SampledSoftmaxGrads(d_user, d_positive, d_negatives, d_positive_q, d_negative_q)
