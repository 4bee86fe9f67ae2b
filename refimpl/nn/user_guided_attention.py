"""User-guided attention (UGANet, UMI eq. 2): a weight per behaviour, conditioned on the user.

    h_i = relu(W1 [e_i; e_u] + b1)
    a_i = sigmoid(w2 . h_i + b2)            for a valid behaviour; a_i = 0 for a padded one

Shapes: items (B, L, D), user (B, D_u), mask (B, L) True = valid, W1 (D + D_u, H), b1 (H,),
W2 (H, 1), b2 (1,), item_weights (B, L). Layout `x @ W` as in `refimpl.nn.linear`; the two layers
are `refimpl.nn.mlp` with activations (relu, sigmoid).

Edge cases: padded behaviours get weight 0 and pass no gradient (to their items, to the user or to
the weights); an all-padded row is all zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, BoolArray, Shapes
from refimpl.nn._upstream import check_upstream
from refimpl.nn.linear import LinearParams
from refimpl.nn.mlp import MLPCache, MLPConfig, MLPParams, mlp_backward, mlp_forward

__all__ = [
    "UserGuidedAttentionCache",
    "UserGuidedAttentionGrads",
    "UserGuidedAttentionParams",
    "user_guided_attention_backward",
    "user_guided_attention_forward",
]

MLP_CONFIG = MLPConfig(activations=("relu", "sigmoid"))


@dataclass(frozen=True)
class UserGuidedAttentionParams:
    W1: Array  # (D + D_u, H)
    b1: Array  # (H,)
    W2: Array  # (H, 1)
    b2: Array  # (1,)


@dataclass(frozen=True)
class UserGuidedAttentionCache:
    mlp: MLPCache
    mask: BoolArray  # (B, L)
    item_dim: int  # D


@dataclass(frozen=True)
class UserGuidedAttentionGrads:
    params: UserGuidedAttentionParams
    items: Array  # (B, L, D)
    user: Array  # (B, D_u)


def _mlp_params(params: UserGuidedAttentionParams) -> MLPParams:
    return MLPParams(
        layers=(LinearParams(params.W1, params.b1), LinearParams(params.W2, params.b2))
    )


def user_guided_attention_forward(
    params: UserGuidedAttentionParams, items: Array, user: Array, mask: BoolArray
) -> tuple[Array, UserGuidedAttentionCache]:
    """Item weights a (B, L) in (0, 1) for valid behaviours, 0 for padded ones."""
    shapes = Shapes()
    shapes.check_float("items", items, ("B", "L", "D"))
    shapes.check_float("user", user, ("B", "D_u"))
    shapes.check_bool("mask", mask, ("B", "L"))
    d_cat = shapes.size("D") + shapes.size("D_u")
    shapes.check_float("W1", params.W1, (d_cat, "H"))
    shapes.check_float("b1", params.b1, ("H",))
    shapes.check_float("W2", params.W2, ("H", 1))
    shapes.check_float("b2", params.b2, (1,))
    b, length, _ = items.shape
    joint = np.concatenate(
        [items, np.broadcast_to(user[:, None, :], (b, length, user.shape[1]))], -1
    )
    scores, cache = mlp_forward(_mlp_params(params), joint, MLP_CONFIG)
    weights: Array = np.where(mask, scores[..., 0], 0).astype(items.dtype, copy=False)
    return weights, UserGuidedAttentionCache(mlp=cache, mask=mask, item_dim=items.shape[2])


def user_guided_attention_backward(
    cache: UserGuidedAttentionCache, d_item_weights: Array
) -> UserGuidedAttentionGrads:
    """Gradients of the params, the items and the user for upstream d_item_weights (B, L)."""
    scores = cache.mlp.activated[-1]
    d_item_weights = check_upstream(
        "d_item_weights", d_item_weights, scores.shape[:2], scores.dtype
    )
    # in the forward pass this was: weights = where(mask, scores, 0)
    d_scores = np.where(cache.mask, d_item_weights, 0).astype(d_item_weights.dtype, copy=False)
    # in the forward pass this was: scores = mlp(joint)
    mlp_grads, d_joint = mlp_backward(cache.mlp, d_scores[..., None])
    first, second = mlp_grads.layers
    # in the forward pass this was: joint = [items; user broadcast over the L positions]
    return UserGuidedAttentionGrads(
        params=UserGuidedAttentionParams(W1=first.W, b1=first.b, W2=second.W, b2=second.b),
        items=d_joint[..., : cache.item_dim],
        user=d_joint[..., cache.item_dim :].sum(axis=1),
    )
