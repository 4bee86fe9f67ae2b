"""ULIM's training loss (ULIM eq. 1-2): L = alpha * L_long + beta * L_short.

Both terms are the sampled softmax of refimpl.nn.sampled_softmax over ONE category-homogeneous
batch (ULIM 2.1.2: long- and short-term interests are optimised jointly within an interest
cluster): the same positives e_b and the same shared in-category negatives e_n, scored once by
the long-term vector v_l(c) of the positive's category (L_long) and once by the short-term vector
v_s (L_short). The entry point refuses, with a ValueError naming the ids, a batch whose positives
or negatives are not all of `batch_category` (`require_category_pure`, which
refimpl.data.batching runs on every batch it builds).

Shapes: long_user, short_user, positive (B, D); negatives (N, D) shared (or (B, N, D));
positive_ids (B,); negative_ids (N,) (or (B, N)); item_categories (I,); positive_q (B,),
negative_q like negative_ids; loss, long_loss, short_loss () scalar arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from refimpl._check import Array, IntArray, Shapes, caller_names, require_array, require_int, require_real
from refimpl.nn._upstream import check_loss_upstream
from refimpl.nn.sampled_softmax import (
    SampledSoftmaxCache,
    SampledSoftmaxConfig,
    is_finite_number,
    sampled_softmax_backward,
    sampled_softmax_forward,
)

__all__ = [
    "UlimLossCache",
    "UlimLossConfig",
    "UlimLossGrads",
    "composite_loss",
    "require_category_pure",
    "ulim_loss_backward",
    "ulim_loss_forward",
]


@dataclass(frozen=True)
class UlimLossConfig:
    alpha: float = 1.0  # weight of L_long
    beta: float = 1.0  # weight of L_short
    loss: SampledSoftmaxConfig = field(default_factory=SampledSoftmaxConfig)


@dataclass(frozen=True)
class UlimLossCache:
    alpha: float
    beta: float
    long_loss: Array  # ()
    short_loss: Array  # ()
    long: SampledSoftmaxCache
    short: SampledSoftmaxCache


@dataclass(frozen=True)
class UlimLossGrads:
    long_user: Array  # (B, D)
    short_user: Array  # (B, D)
    positive: Array  # (B, D), both terms summed
    negatives: Array  # like negatives, both terms summed
    positive_q: Array | None
    negative_q: Array | None


def require_category_pure(
    batch_category: int,
    item_categories: IntArray,
    positive_ids: IntArray,
    negative_ids: IntArray,
) -> None:
    """Raise ValueError naming every positive and negative id not of `batch_category`.

    item_categories (I,) maps item id to category; the ids may have any shape. Ids outside
    [0, I) are refused too, by name, and non-integer ids or categories are a TypeError.
    """
    Shapes().check_int("item_categories", item_categories, ("I",))
    require_int("batch_category", batch_category)
    num_items = item_categories.shape[0]
    named = {
        "positive_ids": _catalogue_ids("positive_ids", positive_ids, num_items),
        "negative_ids": _catalogue_ids("negative_ids", negative_ids, num_items),
    }
    problems = []
    for name, flat in named.items():
        foreign = flat[item_categories[flat] != batch_category]
        if foreign.size:
            unique = np.unique(foreign)
            problems.append(
                f"{name} {unique.tolist()} are of categories {item_categories[unique].tolist()}"
            )
    if problems:
        raise ValueError(
            f"batch of category {batch_category} is not category-pure: " + "; ".join(problems)
        )


def _catalogue_ids(name: str, ids: IntArray, num_items: int) -> IntArray:
    """`ids` flattened, refused unless they are integers in the catalogue [0, I)."""
    flat: IntArray = require_array(name, ids).reshape(-1)
    if not np.issubdtype(flat.dtype, np.integer):
        raise TypeError(f"{name}: expected integer item ids, got {flat.dtype}")
    outside = flat[(flat < 0) | (flat >= num_items)]
    if outside.size:
        raise ValueError(f"{name}: ids {sorted(set(outside.tolist()))} are outside the catalogue [0, {num_items})")
    return flat


def composite_loss(long_loss: Array, short_loss: Array, alpha: float, beta: float) -> Array:
    """ULIM eq. 1: alpha * L_long + beta * L_short, in the dtype of the parts."""
    shapes = Shapes()
    shapes.check_float("long_loss", long_loss, ())
    shapes.check_float("short_loss", short_loss, ())
    for name, weight in (("alpha", alpha), ("beta", beta)):
        require_real(name, weight, low=0.0)
    dtype = long_loss.dtype
    result: Array = np.asarray(dtype.type(alpha) * long_loss + dtype.type(beta) * short_loss)
    return result


def _check_weights(cfg: UlimLossConfig) -> None:
    for name in ("alpha", "beta"):
        value = getattr(cfg, name)
        if not is_finite_number(value):
            raise ValueError(f"cfg.{name}: expected a finite number, got {value!r}")
        if value < 0:
            raise ValueError(f"cfg.{name}: expected a weight >= 0, got {value!r}")


def ulim_loss_forward(
    long_user: Array,
    short_user: Array,
    positive: Array,
    negatives: Array,
    positive_ids: IntArray,
    negative_ids: IntArray,
    batch_category: int,
    item_categories: IntArray,
    cfg: UlimLossConfig,
    positive_q: Array | None = None,
    negative_q: Array | None = None,
) -> tuple[Array, UlimLossCache]:
    """ULIM's loss () over one category-pure batch; refuses a mixed batch."""
    _check_weights(cfg)
    require_category_pure(batch_category, item_categories, positive_ids, negative_ids)
    with caller_names(user="long_user"):
        long_loss, long_cache = sampled_softmax_forward(
            long_user, positive, negatives, positive_ids, negative_ids, cfg.loss, positive_q,
            negative_q,
        )
    with caller_names(user="short_user"):
        short_loss, short_cache = sampled_softmax_forward(
            short_user, positive, negatives, positive_ids, negative_ids, cfg.loss, positive_q,
            negative_q,
        )
    loss = composite_loss(long_loss, short_loss, cfg.alpha, cfg.beta)
    cache = UlimLossCache(
        float(cfg.alpha), float(cfg.beta), long_loss, short_loss, long_cache, short_cache
    )
    return loss, cache


def _sum_optional(a: Array | None, b: Array | None) -> Array | None:
    return None if a is None or b is None else a + b


def ulim_loss_backward(cache: UlimLossCache, d_loss: Array | float) -> UlimLossGrads:
    """Gradients of both user vectors, the positives, the negatives (and q when given)."""
    upstream = check_loss_upstream("d_loss", d_loss, cache.long_loss.dtype)
    long = sampled_softmax_backward(cache.long, upstream * cache.long_loss.dtype.type(cache.alpha))
    short = sampled_softmax_backward(cache.short, upstream * cache.long_loss.dtype.type(cache.beta))
    return UlimLossGrads(
        long_user=long.user,
        short_user=short.user,
        positive=long.positive + short.positive,
        negatives=long.negatives + short.negatives,
        positive_q=_sum_optional(long.positive_q, short.positive_q),
        negative_q=_sum_optional(long.negative_q, short.negative_q),
    )
