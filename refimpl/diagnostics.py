"""Diagnostics against the planted truth of the synthetic data (spec/demo.md#diagnostics).

The generator keeps every item's latent x_i and popularity b_i, and every user's long-term
categories and taste tau in each (refimpl.data.synthetic); events of a long-term visit to category c
are drawn with P(i | c, tau) proportional to exp(kappa tau . x_i + b_i). Two questions:

- `item_agreement`: do the learned item vectors recover the planted latents? The Spearman rank
  correlation, over random pairs of items of one category, between the learned inner product
  <e_i, e_j> and the planted one <x_i, x_j> (0: no recovery; the pairs are drawn with `rng`).
- `taste_agreement`: does the long-term vector of a category track the user's planted taste in it?
  For each user whose route category is one of its planted long-term categories, the Spearman
  rank correlation, over the items of that category, between the learned score <v_l, e_i> and the
  planted logit kappa tau . x_i + b_i; the mean over such users. The same measured for the
  in-category popularity ranking (what the frequency cascade uses) is the bar.
"""

from __future__ import annotations

import numpy as np
from scipy import stats  # type: ignore[import-untyped]

from refimpl._check import Array, BoolArray, IntArray, Shapes, require_ids, require_int, require_positive_int
from refimpl.data.interactions import from_synthetic
from refimpl.data.synthetic import SyntheticData

__all__ = [
    "item_agreement",
    "planted_logits",
    "taste_agreement",
]


def _check_data(data: SyntheticData) -> None:
    """The planted truth is read only from a SyntheticData the generator could have made."""
    if not isinstance(data, SyntheticData):
        raise TypeError(f"data: expected the generator's SyntheticData, got {type(data).__name__}")
    from_synthetic(data)  # checks every array of `data` by field name


def _check_item_vectors(name: str, vectors: Array, data: SyntheticData) -> None:
    Shapes(I=data.num_items).check_float(name, vectors, ("I", "D"))
    if vectors.shape[1] == 0:
        raise ValueError(f"{name}: expected item vectors of width D >= 1, got shape {vectors.shape}")


def _spearman(a: Array, b: Array) -> float:
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(stats.spearmanr(a, b).statistic)


def item_agreement(
    vectors: Array, data: SyntheticData, rng: np.random.Generator, pairs: int = 20_000
) -> float:
    """Spearman correlation of learned and planted inner products over same-category item pairs:
    vectors (I, D), `pairs` pairs drawn with `rng`."""
    _check_data(data)
    _check_item_vectors("vectors", vectors, data)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    pairs = require_positive_int("pairs", pairs)
    first = rng.integers(0, data.num_items, size=pairs)
    groups = data.category_items()
    second = np.array([rng.choice(groups[c]) for c in data.item_category[first]])
    keep = first != second
    first, second = first[keep], second[keep]
    learned = np.einsum("pd,pd->p", vectors[first], vectors[second])
    planted = np.einsum("pd,pd->p", data.item_latent[first], data.item_latent[second])
    return _spearman(learned, planted)


def planted_logits(data: SyntheticData, user: int, category: int) -> tuple[IntArray, Array] | None:
    """(items of the category, their planted logits kappa tau . x_i + b_i) for one of the user's
    long-term categories; None if the category is not one of them."""
    _check_data(data)
    user = require_int("user", user, low=0)
    category = require_int("category", category, low=0)
    if user >= data.num_users:
        raise ValueError(f"user: expected a user in [0, {data.num_users}), got {user}")
    if category >= data.num_categories:
        raise ValueError(f"category: expected a category in [0, {data.num_categories}), got {category}")
    where = np.flatnonzero(data.interests[user] == category)
    if where.size == 0:
        return None
    items = np.flatnonzero(data.item_category == category)
    taste = data.tastes[user][int(where[0])]
    logits = data.config.taste_sharpness * data.item_latent[items] @ taste
    return items, logits + data.item_popularity[items]


def taste_agreement(
    data: SyntheticData,
    users: IntArray,
    categories: IntArray,
    long_vectors: Array,
    present: BoolArray,
    item_vectors: Array,
) -> tuple[float, float, int]:
    """(mean Spearman of <v_l, e_i> with the planted logits, the same for in-category popularity
    counts, number of (user, route) pairs measured) over the routes (S, K) whose category is one of
    the user's planted long-term categories and that have history (`present`): users (S,),
    categories (S, K), long_vectors (S, K, D), present (S, K), item_vectors (I, D)."""
    _check_data(data)
    _check_item_vectors("item_vectors", item_vectors, data)
    shapes = Shapes(D=item_vectors.shape[1])
    require_ids("users", users, data.num_users, ("S",))
    require_ids("categories", categories, data.num_categories, ("S", "K"))
    shapes.check_int("users", users, ("S",))
    shapes.check_int("categories", categories, ("S", "K"))
    shapes.check_float("long_vectors", long_vectors, ("S", "K", "D"))
    shapes.check_bool("present", present, ("S", "K"))
    counts = np.bincount(data.events, minlength=data.num_items).astype(np.float64)
    learned, popularity = [], []
    for row, user in enumerate(users):
        for k, category in enumerate(categories[row]):
            truth = planted_logits(data, int(user), int(category)) if present[row, k] else None
            if truth is None:
                continue
            items, logits = truth
            learned.append(_spearman(item_vectors[items] @ long_vectors[row, k], logits))
            popularity.append(_spearman(counts[items], logits))
    if not learned:
        return 0.0, 0.0, 0
    return float(np.mean(learned)), float(np.mean(popularity)), len(learned)
