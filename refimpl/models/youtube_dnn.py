"""The YouTube DNN baseline (Covington et al. 2016) as ULIM Table 1 uses it: one user vector.

    x_l  = [item_table[i_l]; category_table[cat(i_l)]]                    (B, L, 2D)
    u    = MLP(masked_mean(x) W_t + b_t)   (ReLU hidden layer, identity output)   (B, D)
    L    = sampled softmax of u against e(pos) and N shared negatives (refimpl.nn.sampled_softmax)

The item tower (item and category embeddings through one linear layer, W_t, b_t) is ULIM's
(refimpl.models.item_tower), so both models have the same item side and embedding
size. Mean pooling commutes with the affine tower (mean_l (x_l W + b) = (mean_l x_l) W + b for a
row with at least one behaviour), so the pooled history goes through the tower once; a row with
no behaviour pools to 0 and the tower gives b_t. The pooling is one sparse product (bag_matrix).
The negatives are drawn from the whole catalogue (this vector searches the whole pool), shared by
every row of a batch; accidental hits are removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse  # type: ignore[import-untyped]

from refimpl._check import (
    Array,
    BoolArray,
    IntArray,
    Shapes,
    require_ids,
    require_positive_int,
)
from refimpl.models._params import Params, add_grads, check_param_shapes, normal_init
from refimpl.models.item_tower import (
    CatalogueFeaturesCache,
    catalogue_features_backward,
    catalogue_features_forward,
    item_tower_backward,
    item_tower_forward,
    tower_param_shapes,
)
from refimpl.nn.linear import LinearCache, LinearParams, linear_backward, linear_forward
from refimpl.nn.mlp import MLPCache, MLPConfig, MLPParams, mlp_backward, mlp_forward
from refimpl.nn.sampled_softmax import (
    SampledSoftmaxConfig,
    sampled_softmax_backward,
    sampled_softmax_forward,
)

__all__ = [
    "YouTubeDNNConfig",
    "youtube_dnn_init",
    "youtube_dnn_loss_and_grads",
]

USER_MLP = MLPConfig(activations=("relu", "identity"))


@dataclass(frozen=True)
class YouTubeDNNConfig:
    num_items: int  # I
    num_categories: int  # C
    dim: int = 32  # D
    hidden: int = 64  # width of the MLP's ReLU layer
    loss: SampledSoftmaxConfig = field(default_factory=SampledSoftmaxConfig)


def param_shapes(cfg: YouTubeDNNConfig) -> dict[str, tuple[int, ...]]:
    d = cfg.dim
    return {
        **tower_param_shapes(cfg.num_items, cfg.num_categories, d),
        "mlp_W0": (d, cfg.hidden),
        "mlp_b0": (cfg.hidden,),
        "mlp_W1": (cfg.hidden, d),
        "mlp_b1": (d,),
    }


def youtube_dnn_init(
    rng: np.random.Generator, cfg: YouTubeDNNConfig, dtype: Any = np.float64
) -> Params:
    """Weights N(0, 1/fan_in), biases 0, tables N(0, 1/D), drawn from `rng` in `dtype`."""
    return normal_init(param_shapes(_check_config(cfg)), rng, dtype)


def _check_config(cfg: YouTubeDNNConfig) -> YouTubeDNNConfig:
    for name in ("num_items", "num_categories", "dim", "hidden"):
        require_positive_int(f"cfg.{name}", getattr(cfg, name))
    return cfg


def _mlp(params: Params) -> MLPParams:
    return MLPParams(
        (
            LinearParams(params["mlp_W0"], params["mlp_b0"]),
            LinearParams(params["mlp_W1"], params["mlp_b1"]),
        )
    )


@dataclass(frozen=True)
class UserCache:
    bag: Any  # scipy.sparse (B, I): row b holds 1/n_b at each behaviour of row b (repeats add up)
    features: CatalogueFeaturesCache  # [item_table; category_table[cat(i)]] for every item
    tower: LinearCache
    mlp: MLPCache


def bag_matrix(items: IntArray, mask: BoolArray, num_items: int) -> Any:
    """The (B, I) sparse averaging matrix A with A @ T = masked_mean(T[items], mask) for any
    table T (I, ...): an item repeated in a row counts once per occurrence; an empty row is 0."""
    counts = mask.sum(axis=1)
    rows = np.repeat(np.arange(items.shape[0]), counts)
    weights = np.repeat(1.0 / np.maximum(counts, 1), counts)
    return sparse.csr_matrix(
        (weights, (rows, items[mask])), shape=(items.shape[0], num_items)
    )


def user_forward(
    params: Params, items: IntArray, mask: BoolArray, item_category: IntArray
) -> tuple[Array, UserCache]:
    """The user vector u (B, D) from the behaviours (B, L), their mask, and every item's category.

    The masked mean of the gathered [item; category] embeddings is computed as one sparse
    product with the averaging matrix (bag_matrix): equal to refimpl.nn.pooling's masked mean
    of refimpl.nn.embedding's lookup, without materialising (B, L, 2D) (tests hold them equal).
    """
    shapes = Shapes()
    shapes.check_int("items", items, ("B", "L"))
    shapes.check_bool("mask", mask, ("B", "L"))
    num_items = params["item_table"].shape[0]
    valid = items[mask]
    if valid.size and (valid.min() < 0 or valid.max() >= num_items):
        raise ValueError(f"items: ids at valid positions must be in [0, {num_items})")
    joint, features = catalogue_features_forward(params, item_category)
    bag = bag_matrix(items, mask, num_items)
    pooled = np.asarray(bag @ joint, dtype=joint.dtype)
    tower_out, tower = linear_forward(LinearParams(params["tower_W"], params["tower_b"]), pooled)
    user, mlp = mlp_forward(_mlp(params), tower_out, USER_MLP)
    return user, UserCache(bag, features, tower, mlp)


def user_backward(cache: UserCache, d_user: Array) -> Params:
    mlp_grads, d_tower_out = mlp_backward(cache.mlp, d_user)
    tower_grads, d_pooled = linear_backward(cache.tower, d_tower_out)
    d_joint = np.asarray(cache.bag.T @ d_pooled, dtype=d_pooled.dtype)
    first, second = mlp_grads.layers
    return {
        **catalogue_features_backward(cache.features, d_joint),
        "tower_W": tower_grads.W,
        "tower_b": tower_grads.b,
        "mlp_W0": first.W,
        "mlp_b0": first.b,
        "mlp_W1": second.W,
        "mlp_b1": second.b,
    }


def youtube_dnn_loss_and_grads(
    params: Params,
    items: IntArray,
    mask: BoolArray,
    positive_ids: IntArray,
    negative_ids: IntArray,
    item_category: IntArray,
    cfg: YouTubeDNNConfig,
) -> tuple[float, Params]:
    """The sampled-softmax loss of one batch and the gradient of every param.

    items, mask (B, L) the behaviours; positive_ids (B,); negative_ids (N,) shared by the rows.
    """
    check_param_shapes(params, param_shapes(_check_config(cfg)), "YouTube DNN")
    require_ids("item_category", item_category, cfg.num_categories, ("I",))
    require_ids("positive_ids", positive_ids, cfg.num_items, ("B",))
    require_ids("negative_ids", negative_ids, cfg.num_items, ("N",))
    rows = Shapes()
    rows.check_int("items", items, ("B", "L"))
    rows.check_int("positive_ids", positive_ids, ("B",))
    user, cache = user_forward(params, items, mask, item_category)
    positive, positive_tower = item_tower_forward(params, positive_ids, item_category[positive_ids])
    negatives, negative_tower = item_tower_forward(
        params, negative_ids, item_category[negative_ids]
    )
    loss, loss_cache = sampled_softmax_forward(
        user, positive, negatives, positive_ids, negative_ids, cfg.loss
    )
    loss_grads = sampled_softmax_backward(loss_cache, np.ones((), dtype=loss.dtype))
    grads = user_backward(cache, loss_grads.user)
    add_grads(grads, item_tower_backward(positive_tower, loss_grads.positive))
    add_grads(grads, item_tower_backward(negative_tower, loss_grads.negatives))
    return float(loss), grads
