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
- category frequency as a category predictor: the top-K accuracy of the same routes (what PGIN
  must beat).

Ties: categories of equal count go to the lower id; items of equal popularity to the lower id
(the exact back end's rule).
"""

from __future__ import annotations

import numpy as np

from refimpl._check import Array, IntArray
from refimpl.data.synthetic import SyntheticData
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
    data: SyntheticData, samples: Samples, k: int, window: int | None = None
) -> Routes:
    """Each sample's k most frequent categories in its history (the recent `window` behaviours, or
    all of it), most frequent first, ties to the lower id; weights are the counts; a category the
    window never shows is masked out."""
    k = min(k, data.num_categories)
    counts = np.zeros((samples.size, data.num_categories))
    for row, (user, position) in enumerate(zip(samples.users, samples.positions, strict=True)):
        start = int(data.offsets[user])
        first = start if window is None else max(start, start + int(position) - window)
        history = data.events[first : start + int(position)]
        counts[row] = np.bincount(data.item_category[history], minlength=data.num_categories)
    order = np.lexsort((np.broadcast_to(np.arange(data.num_categories), counts.shape), -counts),
                       axis=1)[:, :k]
    weights = np.take_along_axis(counts, order, axis=1)
    categories: IntArray = order.astype(np.int64)
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


def top_k_accuracy(routes: Routes, targets: IntArray, k: int) -> float:
    """Share of samples whose target category is among the first k (valid) routes."""
    hit = (routes.categories[:, :k] == targets[:, None]) & routes.mask[:, :k]
    return float(hit.any(axis=1).mean())
