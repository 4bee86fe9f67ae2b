"""Category-homogeneous training batches with shared in-category negatives (ULIM 2.1.2).

ULIM learns to rank items WITHIN an interest cluster: every batch holds positives of one category
and one set of N negatives, shared by every row, drawn from that same category. A model then
cannot lower its loss by telling categories apart (category leakage), which would inflate offline
metrics and collapse training.

`category_batches` (spec/batching.md):
1. refuses samples whose stated category is not their positive item's category;
2. groups the samples by category (categories ascending); with `shuffle`, permutes each group;
3. cuts each group into batches of at most `batch_size` rows (the last one shorter unless
   `drop_last`); with `shuffle`, permutes the order of all batches;
4. draws one seed per batch from the generator (in batch order), then for each batch draws N
   negatives from the batch's category with a generator of its own seed:
   - `sampler="uniform"`: every item of the category equally likely;
   - `sampler="popularity"`: proportional to `item_popularity` (> 0 for every item);
   without replacement when the category has at least N items; otherwise by `small_category`:
   `"with_replacement"` (default) draws N with replacement (N stays fixed, duplicates possible),
   `"all_items"` takes every item of the category once (the batch has fewer than N negatives);
5. refuses (ValueError naming the ids) a batch whose positives or negatives are not all of its
   category, by `refimpl.nn.ulim_loss.require_category_pure`: the check ULIM's loss entry point runs.

q (for the logQ correction) is the per-draw probability of an item under the category's sampling
distribution: 1/|category| (uniform) or popularity_i / sum of the category's popularity; it is
returned for the positives too, since the correction applies to them alike.

The batches of a category depend only on the samples, that category's items (ids and
popularity), the config and the generator's state: items of other categories cannot change them,
not even through the random stream (each batch draws from its own seeded generator, so a
category's pool size does not shift the draws of the batches after it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import (
    Array,
    IntArray,
    Shapes,
    require_bool,
    require_choice,
    require_positive_int,
)
from refimpl.nn.ulim_loss import require_category_pure

__all__ = [
    "BatchingConfig",
    "CategoryBatch",
    "category_batches",
    "check_batching_config",
]

SAMPLERS = ("uniform", "popularity")
SMALL_CATEGORY = ("with_replacement", "all_items")


@dataclass(frozen=True)
class BatchingConfig:
    batch_size: int = 256
    num_negatives: int = 64
    sampler: str = "uniform"
    small_category: str = "with_replacement"
    shuffle: bool = True
    drop_last: bool = False


@dataclass(frozen=True)
class CategoryBatch:
    """One category-homogeneous batch: B rows, N shared negatives."""

    category: int
    sample_index: IntArray  # (B,) rows of the samples, int64
    users: IntArray  # (B,) int64
    positive_ids: IntArray  # (B,) int64
    negative_ids: IntArray  # (N,) int64, all of `category`
    positive_q: Array  # (B,) float64, per-draw sampling probability of each positive
    negative_q: Array  # (N,) float64


def check_batching_config(cfg: BatchingConfig) -> BatchingConfig:
    require_positive_int("cfg.batch_size", cfg.batch_size)
    require_positive_int("cfg.num_negatives", cfg.num_negatives)
    require_choice("cfg.sampler", cfg.sampler, SAMPLERS)
    require_choice("cfg.small_category", cfg.small_category, SMALL_CATEGORY)
    require_bool("cfg.shuffle", cfg.shuffle)
    require_bool("cfg.drop_last", cfg.drop_last)
    return cfg


def _check_samples(
    users: IntArray, positive_ids: IntArray, categories: IntArray, item_categories: IntArray
) -> None:
    shapes = Shapes()
    shapes.check_int("users", users, ("S",))
    shapes.check_int("positive_ids", positive_ids, ("S",))
    shapes.check_int("categories", categories, ("S",))
    shapes.check_int("item_categories", item_categories, ("I",))
    num_items = item_categories.shape[0]
    outside = positive_ids[(positive_ids < 0) | (positive_ids >= num_items)]
    if outside.size:
        raise ValueError(
            f"positive_ids: ids {np.unique(outside).tolist()} are outside the catalogue [0, {num_items})"
        )
    wrong = np.flatnonzero(item_categories[positive_ids] != categories)
    if wrong.size:
        raise ValueError(
            f"categories: samples {wrong[:10].tolist()} state categories "
            f"{categories[wrong[:10]].tolist()} but their positive ids "
            f"{positive_ids[wrong[:10]].tolist()} are of categories "
            f"{item_categories[positive_ids[wrong[:10]]].tolist()}"
        )


def _check_popularity(item_popularity: Array | None, num_items: int, sampler: str) -> None:
    if sampler != "popularity":
        return
    if item_popularity is None:
        raise ValueError("item_popularity: required by sampler='popularity'")
    Shapes(I=num_items).check_float("item_popularity", item_popularity, ("I",))
    if not np.all(np.isfinite(item_popularity) & (item_popularity > 0)):
        bad = np.flatnonzero(~(np.isfinite(item_popularity) & (item_popularity > 0)))
        raise ValueError(f"item_popularity: must be finite and > 0; items {bad[:10].tolist()} are not")


def sampling_distribution(
    category: int,
    item_categories: IntArray,
    sampler: str,
    item_popularity: Array | None = None,
) -> tuple[IntArray, Array]:
    """The items of `category` (ascending ids, int64) and their per-draw probabilities (float64)."""
    pool = np.flatnonzero(item_categories == category).astype(np.int64)
    if sampler == "uniform" or item_popularity is None:
        probs = np.full(pool.shape, 1.0 / max(pool.size, 1), dtype=np.float64)
    else:
        weights = item_popularity[pool].astype(np.float64)
        probs = weights / weights.sum()
    return pool, probs


def draw_negatives(
    rng: np.random.Generator, pool: IntArray, probs: Array, cfg: BatchingConfig
) -> tuple[IntArray, Array]:
    """N negative ids from `pool` and their probabilities q (see the module doc for the policy)."""
    n = cfg.num_negatives
    uniform = cfg.sampler == "uniform"
    if pool.size >= n:
        index = rng.choice(pool.size, size=n, replace=False, p=None if uniform else probs)
    elif cfg.small_category == "with_replacement":
        index = rng.choice(pool.size, size=n, replace=True, p=None if uniform else probs)
    else:
        index = np.arange(pool.size)
    return pool[index].astype(np.int64), probs[index]


def _sample_groups(
    categories: IntArray, cfg: BatchingConfig, rng: np.random.Generator
) -> list[tuple[int, IntArray]]:
    """(category, sample rows) of every batch, in the order they are yielded."""
    groups: list[tuple[int, IntArray]] = []
    for category in np.unique(categories):
        rows = np.flatnonzero(categories == category).astype(np.int64)
        if cfg.shuffle:
            rows = rng.permutation(rows)
        for start in range(0, rows.size, cfg.batch_size):
            chunk = rows[start : start + cfg.batch_size]
            if cfg.drop_last and chunk.size < cfg.batch_size:
                continue
            groups.append((int(category), chunk))
    if cfg.shuffle:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    return groups


def category_batches(
    users: IntArray,
    positive_ids: IntArray,
    categories: IntArray,
    item_categories: IntArray,
    cfg: BatchingConfig,
    rng: np.random.Generator,
    item_popularity: Array | None = None,
) -> list[CategoryBatch]:
    """Category-homogeneous batches of the samples (users, positive_ids, categories), each (S,).

    item_categories (I,) is the category of every item id; item_popularity (I,) the weights of
    `sampler="popularity"`. Every random draw comes from `rng`.
    """
    check_batching_config(cfg)
    _check_samples(users, positive_ids, categories, item_categories)
    _check_popularity(item_popularity, item_categories.shape[0], cfg.sampler)
    groups = _sample_groups(categories, cfg, rng)
    # One generator per batch, seeded before any negative is drawn: a category's pool size then
    # cannot shift the random stream of the batches that follow (no leakage through the RNG).
    batch_seeds = rng.integers(0, 2**63, size=len(groups), dtype=np.int64)
    batches = []
    distributions: dict[int, tuple[IntArray, Array]] = {}
    for (category, rows), seed in zip(groups, batch_seeds, strict=True):
        if category not in distributions:
            distributions[category] = sampling_distribution(
                category, item_categories, cfg.sampler, item_popularity
            )
        pool, probs = distributions[category]
        batch_rng = np.random.Generator(np.random.PCG64(int(seed)))
        negative_ids, negative_q = draw_negatives(batch_rng, pool, probs, cfg)
        positives = positive_ids[rows].astype(np.int64)
        require_category_pure(category, item_categories, positives, negative_ids)
        positive_q = probs[np.searchsorted(pool, positives)]
        batches.append(
            CategoryBatch(
                category, rows, users[rows].astype(np.int64), positives, negative_ids,
                positive_q, negative_q,
            )
        )
    return batches
