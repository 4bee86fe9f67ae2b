"""Non-learned baselines: the bar a trained model must clear (spec/demo.md#baselines).

Every baseline reads the training data only (the users' sequences; never a held-out event) and
goes through the same retrieval and metric code as the models, so a model row and a baseline row
differ only in where the vectors come from:

- global popularity: every user gets the N items seen most often among the split's training
  events;
- frequency cascade: the routes are the user's K most frequent categories (over the whole history,
  or over the recent `window` behaviours), each route returns its category's most popular items
  and the short-term route the globally most popular ones, under the cascade's own quota split
  (refimpl.retrieval.cascade). It is the cascade with one-dimensional vectors: every item's vector
  is its popularity count and every query is 1, so the inner product ranks by popularity;
- the category predictors PGIN must beat are in refimpl.category_baselines (the frequency routes
  here rank by its one rule, `rank_by_frequency`).

Ties: categories of equal count go to the one seen more recently (`rank_by_frequency`); items of
equal popularity to the lower id (the exact back end's rule).
"""

from __future__ import annotations

import numpy as np

from refimpl._check import Array, require_positive_int
from refimpl.category_baselines import rank_by_frequency
from refimpl.data.interactions import Interactions
from refimpl.data.protocols import SeenItems, Split
from refimpl.pipelines.evaluation import EvalConfig, Routes, Serving, search_hit_rates
from refimpl.pipelines.inputs import Samples
from refimpl.pipelines.pgin import category_stats
from refimpl.retrieval import Catalogue, ExactIndex

__all__ = [
    "frequency_routes",
    "frequency_serving",
    "item_popularity",
    "popularity_hit_rates",
    "popularity_index",
]


def _log_and_split(log: Interactions, split: Split) -> None:
    if not isinstance(log, Interactions):
        raise TypeError(f"log: expected an Interactions, got {type(log).__name__}")
    if not isinstance(split, Split):
        raise TypeError(f"split: expected a Split, got {type(split).__name__}")
    if split.train_end.shape != (log.num_users,):
        raise ValueError(f"train_end: expected shape ({log.num_users},), got {split.train_end.shape}")
    if np.any(split.train_end < log.user_offsets[:-1]) or np.any(split.train_end > log.user_offsets[1:]):
        raise ValueError("train_end: expected every user's training end inside its events")


def item_popularity(log: Interactions, split: Split) -> Array:
    """(I,) how often each item occurs among the split's training events."""
    _log_and_split(log, split)
    starts = log.user_offsets[:-1]
    counts_per_user = split.train_end - starts
    events = np.repeat(starts - np.concatenate([[0], np.cumsum(counts_per_user)[:-1]]), counts_per_user)
    events = events + np.arange(int(counts_per_user.sum()))
    counts: Array = np.bincount(log.items[events], minlength=log.num_items).astype(np.float64)
    return counts


def popularity_index(log: Interactions, split: Split) -> ExactIndex:
    """Exact search over one-dimensional item vectors, the popularity counts (I, 1)."""
    catalogue = Catalogue.build(
        item_popularity(log, split)[:, None], log.item_category, num_categories=log.num_categories
    )
    return ExactIndex(catalogue)


def frequency_routes(
    log: Interactions,
    samples: Samples,
    k: int,
    window: int | None = None,
    prior: Array | None = None,
) -> Routes:
    """Each sample's k most frequent categories in its history (the recent `window` behaviours, or
    all of it), by the one frequency rule (refimpl.category_baselines.rank_by_frequency: ties to
    the category seen more recently; unseen categories by `prior`, then the lower id); weights are
    the counts; a category the window never shows is masked out."""
    if not isinstance(log, Interactions):
        raise TypeError(f"log: expected an Interactions, got {type(log).__name__}")
    k = min(require_positive_int("k", k), log.num_categories)
    length = int(log.lengths().max()) if window is None else require_positive_int("window", window)
    stats = category_stats(log, samples, length)
    categories = rank_by_frequency(stats.counts, stats.last_seen, k, prior)
    weights = np.take_along_axis(stats.counts, categories, axis=1)
    return Routes(categories, weights, weights > 0)


def frequency_serving(log: Interactions, split: Split, routes: Routes, index: ExactIndex | None = None) -> Serving:
    """The frequency cascade: popularity vectors, every query 1, the routes of frequency_routes."""
    if not isinstance(routes, Routes):
        raise TypeError(f"routes: expected a Routes, got {type(routes).__name__}")
    s, k = routes.categories.shape
    return Serving(
        index or popularity_index(log, split), routes, np.ones((s, k, 1)), np.ones((s, 1)),
        np.ones((s, k), dtype=bool),
    )


def popularity_hit_rates(
    log: Interactions, split: Split, samples: Samples, ev: EvalConfig, index: ExactIndex | None = None,
    seen: SeenItems | None = None,
) -> dict[int, float]:
    """HR@N per cut-off of the globally most popular N items (of the split's training events), for
    every sample alike (`seen`: the samples' seen items, required when ev.seen is "excluded")."""
    if not isinstance(samples, Samples):
        raise TypeError(f"samples: expected a Samples, got {type(samples).__name__}")
    index = index or popularity_index(log, split)
    return search_hit_rates(index, np.ones((samples.size, 1, 1)), samples.targets, ev, seen)
