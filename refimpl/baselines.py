"""Non-learned baselines: the bar a trained model must clear (spec/demo.md#baselines).

Every baseline reads the training data only (the users' sequences; never a held-out event) and
goes through the same retrieval and metric code as the models, so a model row and a baseline row
differ only in where the vectors come from:

- global popularity: every user gets the N items seen most often over all sequences;
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

from refimpl._check import Array
from refimpl.category_baselines import rank_by_frequency
from refimpl.data.synthetic import SyntheticData
from refimpl.pgin_training import category_stats
from refimpl.retrieval import Catalogue, ExactIndex
from refimpl.train import EvalConfig, Routes, Samples, Serving, hit_rate, merged_search


def item_popularity(data: SyntheticData) -> Array:
    """(I,) how often each item occurs in the users' sequences (the training data)."""
    counts: Array = np.bincount(data.events, minlength=data.num_items).astype(np.float64)
    return counts


def popularity_index(data: SyntheticData) -> ExactIndex:
    """Exact search over one-dimensional item vectors, the popularity counts (I, 1)."""
    catalogue = Catalogue.build(
        item_popularity(data)[:, None], data.item_category, num_categories=data.num_categories
    )
    return ExactIndex(catalogue)


def frequency_routes(
    data: SyntheticData,
    samples: Samples,
    k: int,
    window: int | None = None,
    prior: Array | None = None,
) -> Routes:
    """Each sample's k most frequent categories in its history (the recent `window` behaviours, or
    all of it), by the one frequency rule (refimpl.category_baselines.rank_by_frequency: ties to
    the category seen more recently; unseen categories by `prior`, then the lower id); weights are
    the counts; a category the window never shows is masked out."""
    k = min(k, data.num_categories)
    length = int(data.lengths().max()) if window is None else window
    stats = category_stats(data, samples, length)
    categories = rank_by_frequency(stats.counts, stats.last_seen, k, prior)
    weights = np.take_along_axis(stats.counts, categories, axis=1)
    return Routes(categories, weights, weights > 0)


def frequency_serving(data: SyntheticData, routes: Routes, index: ExactIndex | None = None) -> Serving:
    """The frequency cascade: popularity vectors, every query 1, the routes of frequency_routes."""
    s, k = routes.categories.shape
    return Serving(
        index or popularity_index(data), routes, np.ones((s, k, 1)), np.ones((s, 1)),
        np.ones((s, k), dtype=bool),
    )


def popularity_hit_rates(
    data: SyntheticData, samples: Samples, ev: EvalConfig, index: ExactIndex | None = None
) -> dict[int, float]:
    """HR@N per cut-off of the globally most popular N items, for every sample alike."""
    index = index or popularity_index(data)
    result = {}
    for n in ev.cutoffs:
        top = merged_search(index, np.ones((1, 1, 1)), n)
        ids = np.repeat(top, samples.size, axis=0)
        result[n] = hit_rate(ids, ids >= 0, samples.targets, n)
    return result
