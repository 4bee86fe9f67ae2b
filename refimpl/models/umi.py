"""UMI (Chai et al., SIGIR 2022): user-guided attention, dual-attention routing, refinement.

For a user with behaviours i (item ids, padded positions masked) and C profile fields:

    e_i   = item_table[behaviour_id_i]                                  (B, L, D)
    e_u^c = profile_table[profile_id_c],  e_u = concat_c e_u^c           (B, C, F) -> (B, C*F)
    a_i   = sigmoid(w2 . relu(W1 [e_i; e_u] + b1) + b2), 0 if padded      UGANet   (UMI eq. 2)
    v_k   = capsule routing of (e_i, a_i) into K capsules                (UMI eq. 3-6, Alg. 1)
    o_k   = interest refinement of v_k with the profile fields            (UMI eq. 7-9)

Ablations (UMI Table 3) are switches of `UMIConfig`: `user_guided_attention=False` is "w/o DAR"
(a_i = 1 for every valid behaviour: the routing without the user-guided attention, no uga_* params);
`interest_refinement=False` is "w/o IR" (MIND's output layer instead of eq. 7-9, the whole profile
concatenated to every interest: o_k = W2 relu(W1 [v_k; e_u] + b1) + b2, params mlp_*); "w/o HN" is
the `standard` readout mode of `umi_loss` (`ReadoutConfig.mode`).

The model outputs the K interests o (B, K, D); `umi_backward` takes d_interests and returns the
gradient of every parameter (a dict keyed like the params, ready for `refimpl.optim.adam_step`).
`umi_loss` adds the item tower's readout (UMI eq. 10-13: `standard` or `harder_negatives`, from
`refimpl.nn.multi_interest_readout`) and returns the loss with the gradients of every parameter.

Profile ids index one shared profile table: the caller offsets field c's values into its own
range of rows. The routing logits' initialisation is an input (`draw_initial_logits`).
The item table embeds behaviours, positives and negatives alike (one item tower), so its
gradient sums all three by `np.add.at` (duplicate ids accumulate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from refimpl._check import (
    Array,
    BoolArray,
    IntArray,
    Shapes,
    caller_names,
    require_bool,
    require_int,
    require_positive_int,
    require_real,
)
from refimpl.models._params import check_param_names
from refimpl.nn._upstream import check_upstream
from refimpl.nn.capsule_routing import (
    CapsuleRoutingCache,
    CapsuleRoutingConfig,
    CapsuleRoutingParams,
    capsule_routing_backward,
    capsule_routing_forward,
)
from refimpl.nn.embedding import EmbeddingCache, embedding_backward, embedding_forward
from refimpl.nn.interest_refinement import (
    PARAM_NAMES as REFINE_NAMES,
)
from refimpl.nn.interest_refinement import (
    InterestRefinementCache,
    InterestRefinementParams,
    interest_refinement_backward,
    interest_refinement_forward,
)
from refimpl.nn.linear import LinearParams
from refimpl.nn.mlp import MLPCache, MLPConfig, MLPParams, mlp_backward, mlp_forward
from refimpl.nn.multi_interest_readout import (
    ReadoutCache,
    ReadoutConfig,
    multi_interest_readout_backward,
    multi_interest_readout_forward,
)
from refimpl.nn.user_guided_attention import (
    UserGuidedAttentionCache,
    UserGuidedAttentionParams,
    user_guided_attention_backward,
    user_guided_attention_forward,
)

__all__ = [
    "UMICache",
    "UMIConfig",
    "UserBatch",
    "draw_initial_logits",
    "umi_param_names",
    "umi_backward",
    "umi_forward",
    "umi_init",
    "umi_loss",
]

Params = dict[str, Array]

UGA_NAMES = ("W1", "b1", "W2", "b2")
PARAM_NAMES = (
    "item_table",
    "profile_table",
    *(f"uga_{name}" for name in UGA_NAMES),
    "routing_W",
    *(f"refine_{name}" for name in REFINE_NAMES),
)
STATIC_OUTPUT_NAMES = ("mlp_W1", "mlp_b1", "mlp_W2", "mlp_b2")
STATIC_OUTPUT = MLPConfig(activations=("relu", "identity"))


@dataclass(frozen=True)
class UserBatch:
    """One batch of users: the arrays a multi-interest model (UMI, MIND) reads."""

    behaviour_ids: IntArray  # (B, L) item ids; any valid id at padded positions
    mask: BoolArray  # (B, L) True = a real behaviour
    profile_ids: IntArray  # (B, C) rows of the profile table, one per field
    initial_logits: Array  # (B, L, K) routing-logit initialisation b^0


@dataclass(frozen=True)
class UMIConfig:
    num_items: int  # V, rows of the item table
    num_profile_values: int  # V_p, rows of the profile table
    num_fields: int  # C
    dim: int  # D, item and interest width
    profile_dim: int  # F, width of one profile field
    num_interests: int  # K
    attention_hidden: int = 16  # H_a of UGANet
    field_hidden: int = 16  # H_d of the field-weight MLP
    refine_hidden: int = 32  # H of the output MLP
    routing: CapsuleRoutingConfig = field(default_factory=CapsuleRoutingConfig)
    user_guided_attention: bool = True  # False: UMI w/o DAR (a_i = 1)
    interest_refinement: bool = True  # False: UMI w/o IR (MIND's static output layer, hidden refine_hidden)
    attention_bias: float = 0.0  # UGANet's output bias b2 at init: a_i starts at about sigmoid(attention_bias)


@dataclass(frozen=True)
class UMICache:
    item_lookup: EmbeddingCache
    profile_lookup: EmbeddingCache
    attention: UserGuidedAttentionCache | None  # None without the user-guided attention
    routing: CapsuleRoutingCache
    refinement: InterestRefinementCache | MLPCache  # MLPCache: the static output layer (w/o IR)
    dtype: np.dtype[Any]
    out_shape: tuple[int, ...]


def draw_initial_logits(
    rng: np.random.Generator,
    batch: int,
    length: int,
    num_interests: int,
    std: float = 1.0,
    dtype: DTypeLike = np.float64,
) -> Array:
    """b^0 ~ N(0, std^2) of shape (B, L, K), drawn from the caller's generator."""
    shape = (
        require_int("batch", batch, low=0),
        require_int("length", length, low=0),
        require_positive_int("num_interests", num_interests),
    )
    std = require_real("std", std, low=0.0)
    result: Array = (std * rng.standard_normal(shape)).astype(dtype)
    return result


def gaussian(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> Array:
    """scale * N(0, 1) of `shape`, float64, drawn from the caller's generator."""
    result: Array = scale * rng.standard_normal(shape)
    return result


def _check_config(cfg: UMIConfig) -> None:
    for name in (
        "num_items",
        "num_profile_values",
        "num_fields",
        "dim",
        "profile_dim",
        "num_interests",
        "attention_hidden",
        "field_hidden",
        "refine_hidden",
    ):
        require_positive_int(f"cfg.{name}", getattr(cfg, name))
    require_bool("cfg.user_guided_attention", cfg.user_guided_attention)
    require_bool("cfg.interest_refinement", cfg.interest_refinement)
    require_real("cfg.attention_bias", cfg.attention_bias)


def umi_param_names(cfg: UMIConfig) -> tuple[str, ...]:
    """The parameter names of the configured model (the ablations drop or swap blocks)."""
    _check_config(cfg)
    names = [name for name in PARAM_NAMES if cfg.user_guided_attention or not name.startswith("uga_")]
    if not cfg.interest_refinement:
        names = [name for name in names if not name.startswith("refine_")] + list(STATIC_OUTPUT_NAMES)
    return tuple(names)


def umi_init(rng: np.random.Generator, cfg: UMIConfig) -> Params:
    """Parameters drawn from `rng`: weights N(0, 1/fan_in), tables N(0, 1/D), biases 0 except the
    attention's output bias, `cfg.attention_bias` (0 by default)."""
    _check_config(cfg)
    d, c, f, k = cfg.dim, cfg.num_fields, cfg.profile_dim, cfg.num_interests
    profile = c * f
    ha, hd, h = cfg.attention_hidden, cfg.field_hidden, cfg.refine_hidden
    routing_shape = (d, d) if cfg.routing.map == "shared" else (k, d, d)
    shapes: dict[str, tuple[int, ...]] = {
        "item_table": (cfg.num_items, d),
        "profile_table": (cfg.num_profile_values, f),
        "uga_W1": (d + profile, ha),
        "uga_b1": (ha,),
        "uga_W2": (ha, 1),
        "uga_b2": (1,),
        "routing_W": routing_shape,
        "refine_Wd1": (d + profile, hd),
        "refine_bd1": (hd,),
        "refine_Wd2": (hd, c),
        "refine_bd2": (c,),
        "refine_Wa": (profile + d, h),
        "refine_ba": (h,),
        "refine_Wb": (h, d),
        "refine_bb": (d,),
        "mlp_W1": (d + profile, h),
        "mlp_b1": (h,),
        "mlp_W2": (h, d),
        "mlp_b2": (d,),
    }
    # drawn in PARAM_NAMES order, so the full model's draws do not depend on the switches' code
    wanted = umi_param_names(cfg)
    params: Params = {}
    for name, shape in ((name, shapes[name]) for name in wanted):
        if name == "uga_b2":
            params[name] = np.full(shape, float(cfg.attention_bias))
        elif len(shape) == 1:
            params[name] = np.zeros(shape)
        elif name.endswith("table"):
            params[name] = gaussian(rng, shape, 1.0 / np.sqrt(d))
        else:
            params[name] = gaussian(rng, shape, 1.0 / np.sqrt(shape[-2]))
    return params


def check_batch(batch: UserBatch, num_interests: int) -> Shapes:
    """Validate the batch's shapes against each other and K; returns the bound shapes."""
    shapes = Shapes(K=num_interests)
    shapes.check_int("behaviour_ids", batch.behaviour_ids, ("B", "L"))
    shapes.check_bool("mask", batch.mask, ("B", "L"))
    shapes.check_int("profile_ids", batch.profile_ids, ("B", "C"))
    shapes.check_float("initial_logits", batch.initial_logits, ("B", "L", "K"))
    return shapes


def lookup_user(params: Params, batch: UserBatch) -> tuple[Array, Array, EmbeddingCache, EmbeddingCache]:
    """Behaviour embeddings (B, L, D) and profile fields (B, C, F) with their lookup caches."""
    items, item_lookup = embedding_forward(params["item_table"], batch.behaviour_ids, "behaviour_ids")
    profile, profile_lookup = embedding_forward(params["profile_table"], batch.profile_ids, "profile_ids")
    return items, profile, item_lookup, profile_lookup


def _uga_params(params: Params) -> UserGuidedAttentionParams:
    return UserGuidedAttentionParams(**{name: params[f"uga_{name}"] for name in UGA_NAMES})


def _refine_params(params: Params) -> InterestRefinementParams:
    return InterestRefinementParams(**{name: params[f"refine_{name}"] for name in REFINE_NAMES})


def _static_output_params(params: Params) -> MLPParams:
    return MLPParams((LinearParams(params["mlp_W1"], params["mlp_b1"]),
                      LinearParams(params["mlp_W2"], params["mlp_b2"])))


def umi_forward(params: Params, batch: UserBatch, cfg: UMIConfig) -> tuple[Array, UMICache]:
    """The K interests (B, K, D) of every user in the batch."""
    _check_config(cfg)
    check_param_names(params, umi_param_names(cfg), "UMI")
    check_batch(batch, cfg.num_interests)
    items, profile, item_lookup, profile_lookup = lookup_user(params, batch)
    b = items.shape[0]
    user = profile.reshape(b, profile.shape[1] * profile.shape[2])
    attention: UserGuidedAttentionCache | None = None
    if cfg.user_guided_attention:
        with caller_names(**{name: f"uga_{name}" for name in UGA_NAMES}):
            item_weights, attention = user_guided_attention_forward(_uga_params(params), items, user, batch.mask)
    else:
        item_weights = batch.mask.astype(items.dtype)
    with caller_names(W="routing_W"):
        capsules, routing = capsule_routing_forward(
            CapsuleRoutingParams(W=params["routing_W"]),
            items,
            item_weights,
            batch.mask,
            batch.initial_logits,
            cfg.routing,
        )
    refinement: InterestRefinementCache | MLPCache
    if cfg.interest_refinement:
        with caller_names(**{name: f"refine_{name}" for name in REFINE_NAMES}):
            interests, refinement = interest_refinement_forward(_refine_params(params), capsules, profile)
    else:
        k = capsules.shape[1]
        joint = np.concatenate([capsules, np.broadcast_to(user[:, None, :], (b, k, user.shape[1]))], axis=-1)
        with caller_names(W_0="mlp_W1", b_0="mlp_b1", W_1="mlp_W2", b_1="mlp_b2"):
            interests, refinement = mlp_forward(_static_output_params(params), joint, STATIC_OUTPUT)
    cache = UMICache(
        item_lookup,
        profile_lookup,
        attention,
        routing,
        refinement,
        interests.dtype,
        interests.shape,
    )
    return interests, cache


def umi_backward_with_inputs(cache: UMICache, d_interests: Array) -> tuple[Params, Array]:
    """The gradient of every parameter and of the initial routing logits (zero when detached)."""
    d_interests = check_upstream("d_interests", d_interests, cache.out_shape, cache.dtype)
    grads: Params = {}
    if isinstance(cache.refinement, InterestRefinementCache):
        refine = interest_refinement_backward(cache.refinement, d_interests)
        d_capsules, d_profile = refine.interests, refine.profile
        grads.update({f"refine_{name}": getattr(refine.params, name) for name in REFINE_NAMES})
    else:
        mlp_grads, d_joint = mlp_backward(cache.refinement, d_interests)
        d = cache.routing.mapped.shape[-1]
        d_capsules = d_joint[..., :d]
        d_profile = d_joint[..., d:].sum(axis=1).reshape(cache.profile_lookup.ids.shape + (-1,))
        first, second = mlp_grads.layers
        grads.update({"mlp_W1": first.W, "mlp_b1": first.b, "mlp_W2": second.W, "mlp_b2": second.b})
    routing = capsule_routing_backward(cache.routing, d_capsules)
    d_items = routing.items
    if cache.attention is not None:
        attention = user_guided_attention_backward(cache.attention, routing.item_weights)
        d_items = d_items + attention.items
        d_profile = d_profile + attention.user.reshape(d_profile.shape)
        grads.update({f"uga_{name}": getattr(attention.params, name) for name in UGA_NAMES})
    grads["item_table"] = embedding_backward(cache.item_lookup, d_items)
    grads["profile_table"] = embedding_backward(cache.profile_lookup, d_profile)
    grads["routing_W"] = routing.W
    # keyed in the params' order (the golden cases list the gradients in it)
    return {name: grads[name] for name in (*PARAM_NAMES, *STATIC_OUTPUT_NAMES) if name in grads}, routing.initial_logits


def umi_backward(cache: UMICache, d_interests: Array) -> Params:
    """The gradient of every parameter (keys of `umi_init`) for upstream d_interests (B, K, D)."""
    return umi_backward_with_inputs(cache, d_interests)[0]


@dataclass(frozen=True)
class ReadoutLossCache:
    readout: ReadoutCache
    positive_lookup: EmbeddingCache
    negative_lookup: EmbeddingCache


def readout_loss_forward(
    interests: Array,
    item_table: Array,
    positive_ids: IntArray,
    negative_ids: IntArray,
    cfg: ReadoutConfig,
) -> tuple[Array, ReadoutLossCache]:
    """The multi-interest sampled-softmax loss () with positives and negatives from the item
    table."""
    shapes = Shapes()
    shapes.check_float("interests", interests, ("B", "K", "D"))
    shapes.check_int("positive_ids", positive_ids, ("B",))
    shapes.check_int("negative_ids", negative_ids, ("B", "N") if np.ndim(negative_ids) == 2 else ("N",))
    positive, positive_lookup = embedding_forward(item_table, positive_ids, "positive_ids")
    negatives, negative_lookup = embedding_forward(item_table, negative_ids, "negative_ids")
    loss, readout = multi_interest_readout_forward(interests, positive, negatives, positive_ids, negative_ids, cfg)
    return loss, ReadoutLossCache(readout, positive_lookup, negative_lookup)


def readout_loss_backward(cache: ReadoutLossCache, d_loss: Array) -> tuple[Array, Array]:
    """(d_interests, d_item_table) of the readout loss."""
    grads = multi_interest_readout_backward(cache.readout, d_loss)
    d_table = embedding_backward(cache.positive_lookup, grads.positive) + embedding_backward(
        cache.negative_lookup, grads.negatives
    )
    return grads.interests, d_table


def readout_loss_and_grads(
    interests: Array,
    model_backward: Callable[[Array], Params],
    item_table: Array,
    positive_ids: IntArray,
    negative_ids: IntArray,
    readout: ReadoutConfig,
) -> tuple[Array, Params]:
    """The readout loss () of a model's interests and every parameter's gradient: `model_backward`
    maps d_interests to the model's gradients, and the item table (one item tower) also gets the
    gradient of the positives and negatives it embedded."""
    loss, loss_cache = readout_loss_forward(interests, item_table, positive_ids, negative_ids, readout)
    d_interests, d_table = readout_loss_backward(loss_cache, np.ones((), dtype=loss.dtype))
    grads = model_backward(d_interests)
    grads["item_table"] = grads["item_table"] + d_table
    return loss, grads


def umi_loss(
    params: Params,
    batch: UserBatch,
    positive_ids: IntArray,
    negative_ids: IntArray,
    cfg: UMIConfig,
    readout: ReadoutConfig,
) -> tuple[Array, Params]:
    """The training loss () (UMI eq. 10-13 in `readout.mode`) and the gradient of every parameter.

    positive_ids (B,) are the next items; negative_ids (N,) shared or (B, N) per row.
    """
    interests, cache = umi_forward(params, batch, cfg)
    return readout_loss_and_grads(
        interests, partial(umi_backward, cache), params["item_table"], positive_ids, negative_ids, readout
    )
