"""Non-learned next-category predictors: the bars PGIN is measured against (spec/pgin.md).

- `rank_by_frequency`: the user's k most frequent categories, from each row's category counts and
  last occurrences over the history it is given (the whole history, or a recent window:
  refimpl.pipelines.pgin.category_stats builds them; refimpl.baselines.frequency_routes turns them
  into the frequency cascade's routes). This is the one frequency rule of the project. Nothing is
  fitted: it reads only the user's own past, so it needs no training data.
- `transition_counts` + `markov_top_k`: the k categories that most often followed the user's
  previous category in the TRAINING data (a first-order Markov chain over visit categories, its
  counts pooled over the training users).
- `frequency_markov_top_k`: both counts combined as naive Bayes, f_u(c) m(c | c') / p(c), with
  nothing fitted beyond the counts.

Ties are broken by a stated rule so that the predictors are deterministic: by the more recent
last occurrence (frequency), then by `prior` (C,) if given (e.g. the categories' frequency in the
training data: `category_prior`), then by the lower category id. Categories absent from a row's
history are ranked after every present one.

Shapes: categories, mask (B, L) with C categories; previous (B,); out (B, k) int64, most likely
first; counts (C, C) with counts[c, c'] = how often c' followed c.
"""

from __future__ import annotations

import numpy as np

from refimpl._check import Array, IntArray, Shapes, require_ids, require_positive_int

__all__ = [
    "category_prior",
    "frequency_markov_top_k",
    "markov_top_k",
    "rank_by_frequency",
    "top_k_accuracy",
    "transition_counts",
]


def _check_k(k: int, num_categories: int) -> int:
    k = require_positive_int("k", k)
    if k > num_categories:
        raise ValueError(f"k: expected at most num_categories = {num_categories}, got {k}")
    return k


def _check_prior(prior: Array | None, num_categories: int) -> Array:
    if prior is None:
        return np.zeros(num_categories)
    Shapes(C=num_categories).check_float("prior", prior, ("C",))
    return prior


def _check_ids(name: str, ids: IntArray, num_categories: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= num_categories):
        raise ValueError(
            f"{name}: category ids must be in [0, {num_categories}), got [{ids.min()}, {ids.max()}]"
        )


def category_prior(categories: IntArray, num_categories: int) -> Array:
    """Each category's share of `categories` (any shape, ids in [0, C)): the tie-break prior (C,)."""
    c = require_positive_int("num_categories", num_categories)
    require_ids("categories", categories, c)
    counts = np.bincount(categories.reshape(-1), minlength=c).astype(np.float64)
    result: Array = counts / max(counts.sum(), 1.0)
    return result


def rank_by_frequency(
    counts: Array, last_seen: IntArray, k: int, prior: Array | None = None
) -> IntArray:
    """The ranking rule of the frequency predictor (B, k), from each row's category counts (B, C)
    and the position of each category's last occurrence (B, C), -1 for a category not seen.

    Most frequent first; ties: the later last occurrence, then the higher `prior` (C,), then the
    lower id. A category with count 0 ranks after every seen one (by prior, then id).
    """
    shapes = Shapes()
    shapes.check_float("counts", counts, ("B", "C"))
    shapes.check_int("last_seen", last_seen, ("B", "C"))
    b, c = counts.shape
    k = _check_k(k, c)
    prior = _check_prior(prior, c)
    order = np.lexsort((
        np.broadcast_to(np.arange(c), (b, c)),
        np.broadcast_to(-prior, (b, c)),
        -last_seen,
        -counts,
    ), axis=1)  # the last key is the primary one
    result: IntArray = order[:, :k].astype(np.int64)
    return result


def transition_counts(previous: IntArray, following: IntArray, num_categories: int) -> Array:
    """counts (C, C): how often category following[s] came right after previous[s], (S,) each."""
    c = require_positive_int("num_categories", num_categories)
    shapes = Shapes()
    shapes.check_int("previous", previous, ("S",))
    shapes.check_int("following", following, ("S",))
    _check_ids("previous", previous, c)
    _check_ids("following", following, c)
    counts = np.zeros((c, c))
    np.add.at(counts, (previous, following), 1.0)
    return counts


def markov_top_k(counts: Array, previous: IntArray, k: int, prior: Array | None = None) -> IntArray:
    """The k categories that most often followed each row's previous category (B, k).

    counts (C, C) from `transition_counts` on training data; previous (B,). Ties (and rows whose
    previous category was never followed by anything): the higher `prior`, then the lower id.
    """
    shapes = Shapes()
    shapes.check_float("counts", counts, ("C", "C"))
    c = counts.shape[0]
    k = _check_k(k, c)
    shapes.check_int("previous", previous, ("B",))
    _check_ids("previous", previous, c)
    prior = _check_prior(prior, c)
    b = previous.shape[0]
    order = np.lexsort((
        np.broadcast_to(np.arange(c), (b, c)),
        np.broadcast_to(-prior, (b, c)),
        -counts[previous],
    ), axis=1)
    result: IntArray = order[:, :k].astype(np.int64)
    return result


def frequency_markov_top_k(
    counts: Array,
    last_seen: IntArray,
    transitions: Array,
    previous: IntArray,
    k: int,
    prior: Array,
) -> IntArray:
    """Both counts at once (B, k): rank category c by f_u(c) m(c | previous) / p(c), the naive-Bayes
    combination of the user's frequency and the Markov transition, with
    f_u(c) = (counts[b, c] + p(c)) / (sum_c counts[b, c] + 1) and
    m(c | c') = (transitions[c', c] + p(c)) / (sum_c transitions[c', c] + 1)
    (one pseudo-count spread by the prior p, so an unseen category keeps its prior rank).
    counts, last_seen (B, C) as rank_by_frequency; transitions (C, C) from transition_counts on
    training data; previous (B,); prior (C,) positive. Ties as rank_by_frequency."""
    shapes = Shapes()
    shapes.check_float("counts", counts, ("B", "C"))
    shapes.check_int("last_seen", last_seen, ("B", "C"))
    shapes.check_float("transitions", transitions, ("C", "C"))
    shapes.check_float("prior", prior, ("C",))
    shapes.check_int("previous", previous, ("B",))
    _check_ids("previous", previous, counts.shape[1])
    if np.any(prior <= 0):
        raise ValueError("prior: expected every category's prior > 0")
    frequency = (counts + prior) / (counts.sum(axis=1, keepdims=True) + 1.0)
    rows = transitions[previous]
    markov = (rows + prior) / (rows.sum(axis=1, keepdims=True) + 1.0)
    return rank_by_frequency(frequency * markov / prior, last_seen, k, prior)


def top_k_accuracy(top: IntArray, labels: IntArray) -> float:
    """The share of rows whose label is among their predicted categories: top (B, k), labels (B,)."""
    shapes = Shapes()
    shapes.check_int("top", top, ("B", "K"))
    shapes.check_int("labels", labels, ("B",))
    if top.shape[0] == 0:
        raise ValueError("top: expected at least one row, got 0")
    return float(np.mean(np.any(top == labels[:, None], axis=1)))
