"""ComiRec-DR (Cen et al., KDD 2020), UMI's baseline: CapsNet's dynamic routing over the behaviours.

    e_i   = item_table[behaviour_id_i]                                    (B, L, D)
    v_k   = dynamic routing of e_i with one map W_ik per position i and
            interest k, logits starting at 0 (refimpl.nn.dynamic_routing) (B, K, D)

The capsules are the interests: no profile, no output layer (ComiRec's code builds ComiRec-DR with
`relu_layer=False`; its MIND has the ReLU layer). Training scores them with the multi-interest
readout (refimpl.nn.multi_interest_readout): `standard` is ComiRec-DR (the positive's argmax
interest scores every item, ComiRec's hard readout), `harder_negatives` is UMI's ComiRec-DR+HN.
spec/dynamic_routing.md says how this differs from MIND (refimpl.models.mind).

Position i of the batch uses map i: ComiRec's layout puts the oldest behaviour of the window in
slot 0 and pads at the end. A batch shorter than `cfg.max_length` uses the first L maps (as
ComiRec's `w[:, :seq_len]`); the others get a zero gradient.

API (as refimpl.models.mind, so a trainer treats them alike): `comirec_init(rng, cfg) -> params`,
`comirec_forward(params, batch, cfg) -> (interests (B, K, D), cache)`,
`comirec_backward(cache, d_interests) -> grads` keyed like params, `comirec_loss(params, batch,
positive_ids, negative_ids, cfg, readout) -> (loss, grads)`. The batch is
`refimpl.models.umi.UserBatch`; ComiRec reads its behaviour_ids and mask, and checks (but does not
read) profile_ids and initial_logits: its routing logits start at zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from refimpl._check import Array, IntArray, caller_names, require_positive_int
from refimpl.models._params import check_param_shapes
from refimpl.models.umi import Params, UserBatch, check_batch, gaussian, readout_loss_and_grads
from refimpl.nn._upstream import check_upstream
from refimpl.nn.dynamic_routing import (
    DynamicRoutingCache,
    DynamicRoutingConfig,
    DynamicRoutingParams,
    dynamic_routing_backward,
    dynamic_routing_forward,
)
from refimpl.nn.embedding import EmbeddingCache, embedding_backward, embedding_forward
from refimpl.nn.multi_interest_readout import ReadoutConfig

__all__ = [
    "ComiRecCache",
    "ComiRecConfig",
    "comirec_backward",
    "comirec_forward",
    "comirec_init",
    "comirec_loss",
]

PARAM_NAMES = ("item_table", "routing_W")


@dataclass(frozen=True)
class ComiRecConfig:
    num_items: int  # V
    dim: int  # D, item and interest width
    num_interests: int  # K
    max_length: int  # L_max, the number of per-position maps
    routing: DynamicRoutingConfig = field(default_factory=DynamicRoutingConfig)


@dataclass(frozen=True)
class ComiRecCache:
    item_lookup: EmbeddingCache
    routing: DynamicRoutingCache
    max_length: int
    out_shape: tuple[int, ...]  # (B, K, D)
    dtype: np.dtype[Any]


def _check_config(cfg: ComiRecConfig) -> None:
    if not isinstance(cfg, ComiRecConfig):
        raise TypeError(f"cfg: expected ComiRecConfig, got {type(cfg).__name__}")
    for name in ("num_items", "dim", "num_interests", "max_length"):
        require_positive_int(f"cfg.{name}", getattr(cfg, name))
    if not isinstance(cfg.routing, DynamicRoutingConfig):
        raise TypeError(f"cfg.routing: expected DynamicRoutingConfig, got {type(cfg.routing).__name__}")


def _param_shapes(cfg: ComiRecConfig) -> dict[str, tuple[int, ...]]:
    d = cfg.dim
    return {"item_table": (cfg.num_items, d), "routing_W": (cfg.max_length, cfg.num_interests, d, d)}


def comirec_init(rng: np.random.Generator, cfg: ComiRecConfig) -> Params:
    """Parameters drawn from `rng`: the item table and every map W_ik N(0, 1/D) (ComiRec's code
    draws W from N(0, 1); 1/D keeps |u_ik| ~ |e_i| as the project's other maps)."""
    _check_config(cfg)
    scale = 1.0 / np.sqrt(cfg.dim)
    return {name: gaussian(rng, shape, scale) for name, shape in _param_shapes(cfg).items()}


def comirec_forward(params: Params, batch: UserBatch, cfg: ComiRecConfig) -> tuple[Array, ComiRecCache]:
    """The K interests (B, K, D) of every user in the batch (batch length L <= cfg.max_length)."""
    _check_config(cfg)
    check_param_shapes(params, _param_shapes(cfg), "ComiRec-DR")
    length = check_batch(batch, cfg.num_interests).size("L")
    if length > cfg.max_length:
        raise ValueError(
            f"batch.behaviour_ids: expected at most cfg.max_length = {cfg.max_length} positions "
            f"(one routing map each), got L = {length}"
        )
    items, item_lookup = embedding_forward(params["item_table"], batch.behaviour_ids, "behaviour_ids")
    with caller_names(W="routing_W"):
        interests, routing = dynamic_routing_forward(
            DynamicRoutingParams(W=params["routing_W"][:length]), items, batch.mask, cfg.routing
        )
    return interests, ComiRecCache(item_lookup, routing, cfg.max_length, interests.shape, interests.dtype)


def comirec_backward(cache: ComiRecCache, d_interests: Array) -> Params:
    """The gradient of every parameter (keys of `comirec_init`) for upstream d_interests (B, K, D)."""
    d_interests = check_upstream("d_interests", d_interests, cache.out_shape, cache.dtype)
    routing = dynamic_routing_backward(cache.routing, d_interests)
    length, k, d_in, d_out = routing.W.shape
    d_w = np.zeros((cache.max_length, k, d_in, d_out), dtype=routing.W.dtype)
    d_w[:length] = routing.W  # maps beyond the batch's length were not used
    return {
        "item_table": embedding_backward(cache.item_lookup, routing.items),
        "routing_W": d_w,
    }


def comirec_loss(
    params: Params,
    batch: UserBatch,
    positive_ids: IntArray,
    negative_ids: IntArray,
    cfg: ComiRecConfig,
    readout: ReadoutConfig,
) -> tuple[Array, Params]:
    """The training loss () (multi-interest readout in `readout.mode`: `standard` ComiRec-DR,
    `harder_negatives` ComiRec-DR+HN) and every parameter's gradient. positive_ids (B,) are the next
    items; negative_ids (N,) shared or (B, N) per row."""
    interests, cache = comirec_forward(params, batch, cfg)
    return readout_loss_and_grads(
        interests, partial(comirec_backward, cache), params["item_table"], positive_ids, negative_ids, readout
    )
