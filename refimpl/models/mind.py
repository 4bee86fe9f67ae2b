"""MIND (Li et al., CIKM 2019), UMI's baseline: shared-map capsule routing, then the static profile.

    e_i   = item_table[behaviour_id_i]                                    (B, L, D)
    e_u   = concat_c profile_table[profile_id_c]                           (B, C*F)
    v_k   = capsule routing of e_i with a_i = 1, one shared map S and the
            `accumulate` logit update (MIND's Algorithm 1, dynamic routing) (B, K, D)
    o_k   = W2 relu(W1 [v_k; e_u] + b1) + b2                               (B, K, D)

The output layer is linear (not ReLU as MIND's "two ReLU layers" could be read): the interests
are scored by inner product against item embeddings, and a ReLU output would confine them to the
non-negative orthant. The number of interests is the fixed K (MIND's per-user adaptive
K'_u = max(1, min(K, log2 |I_u|)) is not used; UMI's comparison uses a fixed K too).

API (what a baseline needs): `mind_init(rng, cfg) -> params`, `mind_forward(params, batch, cfg)
-> (interests (B, K, D), cache)`, `mind_backward(cache, d_interests) -> grads` keyed like params,
`mind_loss(...) -> (loss, grads)` with the multi-interest readout. The batch is
`refimpl.models.umi.UserBatch`; draw its routing-logit initialisation with `draw_initial_logits`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from refimpl._check import Array, IntArray, caller_names, require_choice, require_positive_int
from refimpl.models._params import check_param_shapes
from refimpl.models.umi import (
    Params,
    UserBatch,
    check_batch,
    gaussian,
    lookup_user,
    readout_loss_and_grads,
)
from refimpl.nn._upstream import check_upstream
from refimpl.nn.capsule_routing import (
    CapsuleRoutingCache,
    CapsuleRoutingConfig,
    CapsuleRoutingParams,
    capsule_routing_backward,
    capsule_routing_forward,
)
from refimpl.nn.embedding import EmbeddingCache, embedding_backward
from refimpl.nn.linear import LinearParams
from refimpl.nn.mlp import MLPCache, MLPConfig, MLPParams, mlp_backward, mlp_forward
from refimpl.nn.multi_interest_readout import ReadoutConfig

__all__ = [
    "MINDCache",
    "MINDConfig",
    "mind_backward",
    "mind_forward",
    "mind_init",
    "mind_loss",
]

OUTPUT_MLP = MLPConfig(activations=("relu", "identity"))
PARAM_NAMES = ("item_table", "profile_table", "routing_W", "mlp_W1", "mlp_b1", "mlp_W2", "mlp_b2")


@dataclass(frozen=True)
class MINDConfig:
    num_items: int  # V
    num_profile_values: int  # V_p
    num_fields: int  # C
    dim: int  # D
    profile_dim: int  # F
    num_interests: int  # K
    hidden: int = 32  # H of the output MLP
    routing: CapsuleRoutingConfig = field(
        default_factory=lambda: CapsuleRoutingConfig(update="accumulate", map="shared")
    )


@dataclass(frozen=True)
class MINDCache:
    item_lookup: EmbeddingCache
    profile_lookup: EmbeddingCache
    routing: CapsuleRoutingCache
    output: MLPCache
    dim: int
    profile_shape: tuple[int, ...]  # (B, C, F)
    out_shape: tuple[int, ...]
    dtype: np.dtype[Any]


def check_num_fields(num_fields: int) -> None:
    """C >= 0: MIND without profile fields (C = 0) is allowed, for data without user profiles."""
    if isinstance(num_fields, bool) or not isinstance(num_fields, int | np.integer) or num_fields < 0:
        raise ValueError(f"cfg.num_fields: expected an integer >= 0, got {num_fields!r}")


def _check_config(cfg: MINDConfig) -> None:
    for name in (
        "num_items",
        "num_profile_values",
        "dim",
        "profile_dim",
        "num_interests",
        "hidden",
    ):
        require_positive_int(f"cfg.{name}", getattr(cfg, name))
    check_num_fields(cfg.num_fields)


def _param_shapes(cfg: MINDConfig) -> dict[str, tuple[int, ...]]:
    d, h = cfg.dim, cfg.hidden
    joint = d + cfg.num_fields * cfg.profile_dim
    shapes = {
        "item_table": (cfg.num_items, d),
        "profile_table": (cfg.num_profile_values, cfg.profile_dim),
        "routing_W": (d, d),
        "mlp_W1": (joint, h),
        "mlp_b1": (h,),
        "mlp_W2": (h, d),
        "mlp_b2": (d,),
    }
    return {name: shapes[name] for name in PARAM_NAMES}


def mind_init(rng: np.random.Generator, cfg: MINDConfig) -> Params:
    """Parameters drawn from `rng`: weights N(0, 1/fan_in), biases 0, tables N(0, 1/D)."""
    _check_config(cfg)
    d, h = cfg.dim, cfg.hidden
    scale = 1.0 / np.sqrt(d)
    joint = d + cfg.num_fields * cfg.profile_dim
    return {
        "item_table": gaussian(rng, (cfg.num_items, d), scale),
        "profile_table": gaussian(rng, (cfg.num_profile_values, cfg.profile_dim), scale),
        "routing_W": gaussian(rng, (d, d), scale),
        "mlp_W1": gaussian(rng, (joint, h), 1.0 / np.sqrt(joint)),
        "mlp_b1": np.zeros(h),
        "mlp_W2": gaussian(rng, (h, d), 1.0 / np.sqrt(h)),
        "mlp_b2": np.zeros(d),
    }


def mind_forward(params: Params, batch: UserBatch, cfg: MINDConfig) -> tuple[Array, MINDCache]:
    """The K interests (B, K, D) of every user in the batch."""
    require_choice("cfg.routing.map", cfg.routing.map, ("shared",))
    _check_config(cfg)
    check_param_shapes(params, _param_shapes(cfg), "MIND")
    check_batch(batch, cfg.num_interests)
    if batch.profile_ids.shape[1] != cfg.num_fields:
        raise ValueError(f"profile_ids: expected shape (B, num_fields) = (B, {cfg.num_fields}), got "
                         f"{batch.profile_ids.shape} (one id per profile field; cfg.num_fields is {cfg.num_fields})")
    items, profile, item_lookup, profile_lookup = lookup_user(params, batch)
    b, length, d = items.shape
    with caller_names(W="routing_W"):
        capsules, routing = capsule_routing_forward(
            CapsuleRoutingParams(W=params["routing_W"]),
            items,
            np.ones((b, length), dtype=items.dtype),
            batch.mask,
            batch.initial_logits,
            cfg.routing,
        )
    k = capsules.shape[1]
    profile_width = profile.shape[1] * profile.shape[2]
    user = np.broadcast_to(profile.reshape(b, 1, profile_width), (b, k, profile_width))
    with caller_names(W_0="mlp_W1", b_0="mlp_b1", W_1="mlp_W2", b_1="mlp_b2"):
        interests, output = mlp_forward(
            MLPParams(
                (
                    LinearParams(params["mlp_W1"], params["mlp_b1"]),
                    LinearParams(params["mlp_W2"], params["mlp_b2"]),
                )
            ),
            np.concatenate([capsules, user], axis=-1),
            OUTPUT_MLP,
        )
    cache = MINDCache(item_lookup, profile_lookup, routing, output, d, profile.shape, interests.shape, interests.dtype)
    return interests, cache


def mind_backward_with_inputs(cache: MINDCache, d_interests: Array) -> tuple[Params, Array]:
    """The gradient of every parameter and of the initial routing logits (zero when detached)."""
    d_interests = check_upstream("d_interests", d_interests, cache.out_shape, cache.dtype)
    mlp_grads, d_joint = mlp_backward(cache.output, d_interests)
    routing = capsule_routing_backward(cache.routing, d_joint[..., : cache.dim])
    d_user = d_joint[..., cache.dim :].sum(axis=1)
    d_profile = d_user.reshape(cache.profile_shape)
    first, second = mlp_grads.layers
    grads: Params = {
        "item_table": embedding_backward(cache.item_lookup, routing.items),
        "profile_table": embedding_backward(cache.profile_lookup, d_profile),
        "routing_W": routing.W,
        "mlp_W1": first.W,
        "mlp_b1": first.b,
        "mlp_W2": second.W,
        "mlp_b2": second.b,
    }
    return grads, routing.initial_logits


def mind_backward(cache: MINDCache, d_interests: Array) -> Params:
    """The gradient of every parameter (keys of `mind_init`) for upstream d_interests (B, K, D)."""
    return mind_backward_with_inputs(cache, d_interests)[0]


def mind_loss(
    params: Params,
    batch: UserBatch,
    positive_ids: IntArray,
    negative_ids: IntArray,
    cfg: MINDConfig,
    readout: ReadoutConfig,
) -> tuple[Array, Params]:
    """The training loss () (multi-interest readout in `readout.mode`) and every parameter's
    gradient."""
    interests, cache = mind_forward(params, batch, cfg)
    return readout_loss_and_grads(
        interests, partial(mind_backward, cache), params["item_table"], positive_ids, negative_ids, readout
    )
