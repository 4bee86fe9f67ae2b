"""Evaluation metrics (spec/metrics.md): AUC for IFA's ranking, HitRate@N and Precision@N as UMI
eq. 15-16, and HR@N as ULIM Table 1 reports it.

AUC is the Mann-Whitney statistic: the probability that a random positive outscores a random
negative, a tie counting one half,

    AUC = (sum of the mid-ranks of the positives - P (P + 1) / 2) / (P N)

with P positives, N negatives and tied scores given the mean of the ranks they span.

Top-N metrics, for users u with a ranked retrieved list R_u (its first N items, R_u^N) and a set
of ground-truth items T_u:

    HitRate@N   = (1 / |U|) sum_u  |R_u^N ∩ T_u| / |T_u|                       UMI eq. 15
    Precision@N = (1 / |U|) sum_u  |R_u^N ∩ T_u| / N                           UMI eq. 16
    HR@N (ULIM) = (1 / |U|) sum_u  1[ |R_u^N ∩ T_u| > 0 ]                      users with a hit

Intersections are of sets: an item retrieved twice in the top N counts once. A list shorter than
N (a category with fewer items than its quota) is used as it is; Precision still divides by N.
HitRate@N is the per-user share of targets retrieved (UMI's protocol gives a user several targets);
HR@N is the share of users with at least one target in their top N (ULIM's protocol gives each user
one target, where the two are equal).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "auc",
    "hit_rate_at_n",
    "hr_at_n",
    "precision_at_n",
]

Ranked = Sequence[ArrayLike] | NDArray[np.integer[Any]]


def _as_binary_labels(labels: ArrayLike, size: int) -> NDArray[np.bool_]:
    array = np.asarray(labels)
    if array.shape != (size,):
        raise ValueError(f"labels: expected shape ({size},) like scores, got {array.shape}")
    if array.dtype == np.bool_:
        result: NDArray[np.bool_] = array
        return result
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"labels: expected 0/1 or bool labels, got values {np.unique(array)[:5]}")
    return array.astype(bool)


def _mid_ranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    mid: NDArray[np.float64] = (last - (counts - 1) / 2.0)[inverse]
    return mid


def auc(scores: ArrayLike, labels: ArrayLike, mask: ArrayLike | None = None) -> float:
    """ROC AUC of `scores` for binary `labels` (any shape, flattened), ties counting one half.

    `mask` (True = counted) selects the entries to use, e.g. the valid candidates. Raises
    ValueError when the (masked) input holds only one class, is empty, or has a non-finite score;
    TypeError for complex or bool scores (a metric takes array-likes: lists are fine).
    """
    raw = np.asarray(scores)
    if raw.dtype == np.bool_ or not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
        raise TypeError(f"scores: expected real (integer or float) scores, got {raw.dtype}")
    score_array = raw.astype(np.float64)
    if np.shape(labels) != score_array.shape:
        raise ValueError(
            f"labels: expected the shape of scores {score_array.shape}, got {np.shape(labels)}"
        )
    flat_scores = score_array.reshape(-1)
    flat_labels = _as_binary_labels(np.asarray(labels).reshape(-1), flat_scores.size)
    if mask is not None:
        mask_array = np.asarray(mask)
        if mask_array.dtype != np.bool_ or mask_array.shape != score_array.shape:
            raise ValueError(
                f"mask: expected a bool array of shape {score_array.shape}, got "
                f"{mask_array.dtype} {mask_array.shape}"
            )
        flat_scores = flat_scores[mask_array.reshape(-1)]
        flat_labels = flat_labels[mask_array.reshape(-1)]
    if not np.isfinite(flat_scores).all():
        raise ValueError("scores: AUC needs finite scores, got NaN or inf")
    positives = int(flat_labels.sum())
    negatives = flat_labels.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError(
            f"labels: AUC is undefined for one class ({positives} positives, {negatives} "
            "negatives); it needs at least one of each"
        )
    ranks = _mid_ranks(flat_scores)
    u_statistic = float(ranks[flat_labels].sum()) - positives * (positives + 1) / 2.0
    return u_statistic / (positives * negatives)


def _hits(retrieved: Ranked, relevant: Sequence[Iterable[Any]], n: int) -> list[tuple[int, int]]:
    """Per user: (|R_u^N ∩ T_u|, |T_u|), after validating the arguments."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    if len(retrieved) != len(relevant):
        raise ValueError(
            f"relevant: expected one ground-truth set per user ({len(retrieved)} retrieved lists), "
            f"got {len(relevant)}"
        )
    if len(retrieved) == 0:
        raise ValueError("retrieved: the metrics need at least one user, got 0")
    counts: list[tuple[int, int]] = []
    for user, (ranked, targets) in enumerate(zip(retrieved, relevant, strict=True)):
        ranked_array = np.asarray(ranked)
        if ranked_array.ndim != 1:
            raise ValueError(f"retrieved[{user}]: expected a 1-D ranked list, got shape {ranked_array.shape}")
        top = set(ranked_array[:n].tolist())
        target_set = set(np.asarray(list(targets)).reshape(-1).tolist())
        counts.append((len(top & target_set), len(target_set)))
    return counts


def hit_rate_at_n(retrieved: Ranked, relevant: Sequence[Iterable[Any]], n: int) -> float:
    """UMI eq. 15: the mean over users of the share of their ground-truth items in their top N,
    |R_u^N ∩ T_u| / |T_u|. Every user needs at least one ground-truth item (ValueError otherwise)."""
    counts = _hits(retrieved, relevant, n)
    empty = [user for user, (_, size) in enumerate(counts) if size == 0]
    if empty:
        raise ValueError(f"relevant: HitRate@N needs a ground-truth item for every user; users {empty[:10]} have none")
    return sum(hit / size for hit, size in counts) / len(counts)


def precision_at_n(retrieved: Ranked, relevant: Sequence[Iterable[Any]], n: int) -> float:
    """UMI eq. 16: the mean over users of |top N ∩ ground truth| / N."""
    counts = _hits(retrieved, relevant, n)
    return sum(hit / n for hit, _ in counts) / len(counts)


def hr_at_n(retrieved: Ranked, relevant: Sequence[Iterable[Any]], n: int) -> float:
    """ULIM's HR@N: the share of users with at least one ground-truth item in their top N (with
    ULIM's one target per user, the share of targets retrieved)."""
    counts = _hits(retrieved, relevant, n)
    return sum(1 for hit, _ in counts if hit > 0) / len(counts)
