"""DSSM (Huang et al., CIKM 2013) as UMI's Table 2 uses it: a two-tower model whose user tower reads
the user's profile fields only, never the behaviours.

    e_u^c = profile_table[profile_id_c],  e_u = concat_c e_u^c            (B, C, F) -> (B, C*F)
    u     = W2 relu(W1 e_u + b1) + b2                                      (B, D)
    e     = item_table[item]                                               (item tower: the table)
    L     = sampled softmax of u against e(pos) and the negatives (refimpl.nn.sampled_softmax)

The user vector is returned as one interest, (B, 1, D), so a trainer and an evaluator treat DSSM
like the multi-interest models (refimpl.models.mind): with K = 1 the multi-interest readout
(refimpl.nn.multi_interest_readout) is exactly the sampled softmax of u, in both of its modes, and
`dssm_loss` computes it that way. Scores are inner products (the original DSSM's cosine would bound
every logit to [-1, 1]; the other models of the comparison use the inner product too). The output
layer is linear for the same reason as MIND's: a ReLU output would confine u to the non-negative
orthant.

API (as refimpl.models.mind): `dssm_init(rng, cfg) -> params`, `dssm_forward(params, batch, cfg)
-> (users (B, 1, D), cache)`, `dssm_backward(cache, d_users) -> grads` keyed like params,
`dssm_loss(params, batch, positive_ids, negative_ids, cfg, readout) -> (loss, grads)`. The batch is
`refimpl.models.umi.UserBatch`; DSSM reads its profile_ids only and checks the other fields' shapes
(profile ids index one shared table: the caller offsets field c's values into its own rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from refimpl._check import Array, IntArray, Shapes, caller_names, require_positive_int
from refimpl.models._params import check_param_shapes
from refimpl.models.umi import Params, UserBatch, gaussian, readout_loss_and_grads
from refimpl.nn._upstream import check_upstream
from refimpl.nn.embedding import EmbeddingCache, embedding_backward, embedding_forward
from refimpl.nn.linear import LinearParams
from refimpl.nn.mlp import MLPCache, MLPConfig, MLPParams, mlp_backward, mlp_forward
from refimpl.nn.multi_interest_readout import ReadoutConfig

__all__ = [
    "DSSMCache",
    "DSSMConfig",
    "dssm_backward",
    "dssm_forward",
    "dssm_init",
    "dssm_loss",
]

USER_MLP = MLPConfig(activations=("relu", "identity"))
PARAM_NAMES = ("item_table", "profile_table", "mlp_W1", "mlp_b1", "mlp_W2", "mlp_b2")


@dataclass(frozen=True)
class DSSMConfig:
    num_items: int  # V
    num_profile_values: int  # V_p
    num_fields: int  # C
    dim: int  # D
    profile_dim: int  # F
    hidden: int = 32  # H of the user MLP


@dataclass(frozen=True)
class DSSMCache:
    profile_lookup: EmbeddingCache
    tower: MLPCache
    profile_shape: tuple[int, ...]  # (B, C, F)
    item_table_shape: tuple[int, ...]  # (V, D)
    out_shape: tuple[int, ...]  # (B, 1, D)
    dtype: np.dtype[Any]


def _check_config(cfg: DSSMConfig) -> None:
    if not isinstance(cfg, DSSMConfig):
        raise TypeError(f"cfg: expected DSSMConfig, got {type(cfg).__name__}")
    for name in ("num_items", "num_profile_values", "num_fields", "dim", "profile_dim", "hidden"):
        require_positive_int(f"cfg.{name}", getattr(cfg, name))


def _param_shapes(cfg: DSSMConfig) -> dict[str, tuple[int, ...]]:
    d, h, joint = cfg.dim, cfg.hidden, cfg.num_fields * cfg.profile_dim
    return {
        "item_table": (cfg.num_items, d),
        "profile_table": (cfg.num_profile_values, cfg.profile_dim),
        "mlp_W1": (joint, h),
        "mlp_b1": (h,),
        "mlp_W2": (h, d),
        "mlp_b2": (d,),
    }


def dssm_init(rng: np.random.Generator, cfg: DSSMConfig) -> Params:
    """Parameters drawn from `rng`: tables N(0, 1/D), weights N(0, 1/fan_in), biases 0."""
    _check_config(cfg)
    shapes = _param_shapes(cfg)
    scale = 1.0 / np.sqrt(cfg.dim)
    return {
        "item_table": gaussian(rng, shapes["item_table"], scale),
        "profile_table": gaussian(rng, shapes["profile_table"], scale),
        "mlp_W1": gaussian(rng, shapes["mlp_W1"], 1.0 / np.sqrt(shapes["mlp_W1"][0])),
        "mlp_b1": np.zeros(shapes["mlp_b1"]),
        "mlp_W2": gaussian(rng, shapes["mlp_W2"], 1.0 / np.sqrt(cfg.hidden)),
        "mlp_b2": np.zeros(shapes["mlp_b2"]),
    }


def dssm_forward(params: Params, batch: UserBatch, cfg: DSSMConfig) -> tuple[Array, DSSMCache]:
    """The user vector of every user in the batch as one interest, (B, 1, D)."""
    _check_config(cfg)
    check_param_shapes(params, _param_shapes(cfg), "DSSM")
    if not isinstance(batch, UserBatch):
        raise TypeError(f"batch: expected a UserBatch, got {type(batch).__name__}")
    # the fields DSSM does not read are checked too: a trainer hands every model the same batch
    shapes = Shapes(C=cfg.num_fields)
    shapes.check_int("behaviour_ids", batch.behaviour_ids, ("B", "L"))
    shapes.check_bool("mask", batch.mask, ("B", "L"))
    shapes.check_int("profile_ids", batch.profile_ids, ("B", "C"))
    shapes.check_float("initial_logits", batch.initial_logits, ("B", "L", "K"))
    profile, profile_lookup = embedding_forward(params["profile_table"], batch.profile_ids, "profile_ids")
    b = profile.shape[0]
    with caller_names(W_0="mlp_W1", b_0="mlp_b1", W_1="mlp_W2", b_1="mlp_b2"):
        users, tower = mlp_forward(
            MLPParams(
                (
                    LinearParams(params["mlp_W1"], params["mlp_b1"]),
                    LinearParams(params["mlp_W2"], params["mlp_b2"]),
                )
            ),
            profile.reshape(b, profile.shape[1] * profile.shape[2]),
            USER_MLP,
        )
    out = users[:, None, :]
    return out, DSSMCache(profile_lookup, tower, profile.shape, params["item_table"].shape, out.shape, out.dtype)


def dssm_backward(cache: DSSMCache, d_users: Array) -> Params:
    """The gradient of every parameter (keys of `dssm_init`) for upstream d_users (B, 1, D); the item
    table gets zero here (the user tower does not read it) and its gradient in `dssm_loss`."""
    d_users = check_upstream("d_users", d_users, cache.out_shape, cache.dtype)
    mlp_grads, d_profile = mlp_backward(cache.tower, d_users[:, 0, :])
    first, second = mlp_grads.layers
    return {
        "item_table": np.zeros(cache.item_table_shape, dtype=cache.dtype),
        "profile_table": embedding_backward(cache.profile_lookup, d_profile.reshape(cache.profile_shape)),
        "mlp_W1": first.W,
        "mlp_b1": first.b,
        "mlp_W2": second.W,
        "mlp_b2": second.b,
    }


def dssm_loss(
    params: Params,
    batch: UserBatch,
    positive_ids: IntArray,
    negative_ids: IntArray,
    cfg: DSSMConfig,
    readout: ReadoutConfig,
) -> tuple[Array, Params]:
    """The sampled-softmax loss () of the user vector against the positive and the negatives (the
    readout with K = 1: `readout.mode` changes nothing, `readout.loss` is the loss's config) and
    every parameter's gradient. positive_ids (B,); negative_ids (N,) shared or (B, N) per row."""
    users, cache = dssm_forward(params, batch, cfg)
    return readout_loss_and_grads(
        users, partial(dssm_backward, cache), params["item_table"], positive_ids, negative_ids, readout
    )
