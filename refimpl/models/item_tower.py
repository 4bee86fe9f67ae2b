"""The item tower shared by ULIM and YouTube DNN (ULIM 2.1; spec/ulim.md#item-tower).

    e(i) = [item_table[i]; category_table[cat(i)]] W_t + b_t          (D)

An item's vector is its id embedding and its category's embedding, concatenated and mapped by one
affine layer (refimpl.nn.embedding, refimpl.nn.linear). ULIM embeds behaviours, positives,
negatives and the retrieval catalogue with it; YouTube DNN uses the same item side (its user
vector pools the tower's input, refimpl.models.youtube_dnn).

The tower reads four params of the model's flat dict: `item_table` (I, D), `category_table`
(C, D), `tower_W` (2D, D) and `tower_b` (D,) (`tower_param_shapes`).

- `item_tower_forward/backward`: the tower for any array of ids (..., ) -> (..., D);
- `catalogue_features_forward/backward`: the tower's input for every item (I, 2D);
- `catalogue_tower_forward/backward`: the tower for every item (I, D), E[i] = e(i);
- `catalogue_vectors`: every item's vector (I, D), validated: what retrieval searches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, BoolArray, IntArray, Shapes, require_ids
from refimpl.models._params import Params, check_param_arrays
from refimpl.nn.embedding import EmbeddingCache, embedding_backward, embedding_forward
from refimpl.nn.linear import LinearCache, LinearParams, linear_backward, linear_forward

__all__ = [
    "catalogue_vectors",
]


def tower_param_shapes(num_items: int, num_categories: int, dim: int) -> dict[str, tuple[int, ...]]:
    """The tower's params and their shapes, under the names every model using it stores them."""
    return {
        "item_table": (num_items, dim),
        "category_table": (num_categories, dim),
        "tower_W": (2 * dim, dim),
        "tower_b": (dim,),
    }


@dataclass(frozen=True)
class TowerCache:
    items: EmbeddingCache
    categories: EmbeddingCache
    linear: LinearCache
    dim: int


def item_tower_forward(
    params: Params, items: IntArray, categories: IntArray, mask: BoolArray | None = None
) -> tuple[Array, TowerCache]:
    """e = [item_table[items]; category_table[categories]] W_t + b_t, shape (..., D)."""
    if mask is not None:
        items = np.where(mask, items, 0)
        categories = np.where(mask, categories, 0)
    item_part, item_cache = embedding_forward(params["item_table"], items, "items")
    category_part, category_cache = embedding_forward(
        params["category_table"], categories, "categories"
    )
    joint = np.concatenate([item_part, category_part], axis=-1)
    out, linear_cache = linear_forward(LinearParams(params["tower_W"], params["tower_b"]), joint)
    return out, TowerCache(item_cache, category_cache, linear_cache, item_part.shape[-1])


def item_tower_backward(cache: TowerCache, d_out: Array) -> Params:
    grads, d_joint = linear_backward(cache.linear, d_out)
    return {
        "item_table": embedding_backward(cache.items, d_joint[..., : cache.dim]),
        "category_table": embedding_backward(cache.categories, d_joint[..., cache.dim :]),
        "tower_W": grads.W,
        "tower_b": grads.b,
    }


@dataclass(frozen=True)
class CatalogueFeaturesCache:
    categories: EmbeddingCache
    dim: int


def catalogue_features_forward(
    params: Params, item_category: IntArray
) -> tuple[Array, CatalogueFeaturesCache]:
    """The tower's input for every item, [item_table[i]; category_table[cat(i)]] (I, 2D)."""
    category_part, category_cache = embedding_forward(
        params["category_table"], item_category.astype(np.int64), "item_category"
    )
    joint = np.concatenate([params["item_table"], category_part], axis=-1)
    return joint, CatalogueFeaturesCache(category_cache, category_part.shape[-1])


def catalogue_features_backward(cache: CatalogueFeaturesCache, d_joint: Array) -> Params:
    """d_item_table (I, D) and d_category_table (C, D) for upstream d_joint (I, 2D)."""
    return {
        "item_table": d_joint[:, : cache.dim],
        "category_table": embedding_backward(cache.categories, d_joint[:, cache.dim :]),
    }


@dataclass(frozen=True)
class CatalogueTowerCache:
    features: CatalogueFeaturesCache
    linear: LinearCache


def catalogue_tower_forward(
    params: Params, item_category: IntArray
) -> tuple[Array, CatalogueTowerCache]:
    """E (I, D): the tower applied to every item, E[i] = e(i). A model gathers its behaviours,
    positives and negatives from E (refimpl.nn.embedding), which equals embedding each of them
    with item_tower_forward but runs the affine map once per item instead of once per use."""
    joint, features = catalogue_features_forward(params, item_category)
    out, linear_cache = linear_forward(LinearParams(params["tower_W"], params["tower_b"]), joint)
    return out, CatalogueTowerCache(features, linear_cache)


def catalogue_tower_backward(cache: CatalogueTowerCache, d_out: Array) -> Params:
    grads, d_joint = linear_backward(cache.linear, d_out)
    return {
        **catalogue_features_backward(cache.features, d_joint),
        "tower_W": grads.W,
        "tower_b": grads.b,
    }


def catalogue_vectors(params: Params, item_category: IntArray) -> Array:
    """Every item's tower vector (I, D): what retrieval searches.

    params: a model's (only the item/category tables and the tower are read); item_category (I,).
    """
    check_param_arrays(params)
    shapes = Shapes()
    shapes.check_float("item_table", params.get("item_table"), ("I", "D"))
    shapes.check_float("category_table", params.get("category_table"), ("C", "D"))
    shapes.check_float("tower_W", params.get("tower_W"), (2 * shapes.size("D"), "D"))
    shapes.check_float("tower_b", params.get("tower_b"), ("D",))
    shapes.check_int("item_category", item_category, ("I",))
    require_ids("item_category", item_category, shapes.size("C"))
    vectors, _ = catalogue_tower_forward(params, item_category)
    return vectors


