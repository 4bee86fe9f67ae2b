"""PGIN, the Pointer-Generator Interest Network of ULIM (2.2.1): the next-category distribution.

Composition (spec/pgin.md; every box is a component of refimpl.nn):

    e(item, cat)  = item_table[item] + category_table[cat]                  behaviour embedding (D)
    v_long        = masked_mean(MHSA_long(e(long), long_mask))              (B, D)
    v_short       = masked_mean(MHSA_short(e(short), short_mask))           (B, D)
    u             = user_features user_W + user_b                           user embedding (B, D)
    g             = target_attention_fusion(u, [u; v_long; v_short])        generator hidden (B, D)
    logits        = MLP(g)   (ReLU hidden layers, identity output)          (B, C)
    y, loss       = pointer_generator(query = g,
                                      history_emb = category_table[history],
                                      generator_logits = logits, generator_hidden = g)

The user query of the pointer and the generator hidden of the gate are both g, the user's fused
state (user features, long- and short-term interests); the pointer context of the gate is the
pointer's attention output over the history (refimpl.nn.pointer_generator).

Ids at masked positions are ignored (they are replaced by 0 before the lookup and receive no
gradient). The fusion masks the v_long (v_short) token of a row whose long (short) sequence is
empty; u is always valid.

Params are a flat `dict[str, Array]` (so refimpl.optim.adam_step updates them as they are);
`param_shapes(cfg)` lists every name and shape.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from refimpl._check import (
    Array,
    BoolArray,
    IntArray,
    Shapes,
    require_choice,
    require_positive_int,
)
from refimpl.data.category_history import merge_category_history
from refimpl.models._params import (
    attention_block,
    attention_block_grads,
    attention_block_shapes,
    check_param_shapes,
)
from refimpl.nn.attention import (
    AttentionCache,
    AttentionConfig,
    TargetAttentionCache,
    mhsa_backward,
    mhsa_forward,
    target_attention_backward,
    target_attention_forward,
)
from refimpl.nn.embedding import EmbeddingCache, embedding_backward, embedding_forward
from refimpl.nn.linear import LinearCache, LinearParams, linear_backward, linear_forward
from refimpl.nn.mlp import MLPCache, MLPConfig, MLPParams, mlp_backward, mlp_forward
from refimpl.nn.pointer_generator import (
    GATE_MODES,
    PointerGeneratorCache,
    PointerGeneratorConfig,
    PointerGeneratorOutput,
    PointerGeneratorParams,
    pointer_generator_backward,
    pointer_generator_forward,
)
from refimpl.nn.pooling import PoolCache, masked_mean_pool_backward, masked_mean_pool_forward

__all__ = [
    "PGINBatch",
    "PGINCache",
    "PGINConfig",
    "make_batch",
    "pgin_backward",
    "pgin_forward",
    "pgin_init",
    "pgin_loss_and_grads",
    "top_k_categories",
    "top_k_from_distribution",
]

Params = dict[str, Array]
ATTENTION_BLOCKS = ("long", "short", "fusion", "pointer")


@dataclass(frozen=True)
class PGINConfig:
    num_categories: int  # C
    num_items: int  # V
    user_feature_dim: int  # F
    dim: int = 16  # D
    num_heads: int = 2  # H, for every attention block (MHSA, fusion, pointer)
    mlp_hidden: tuple[int, ...] = (32,)  # widths of the generator MLP's ReLU layers
    gate: str = "learned"  # refimpl.nn.pointer_generator.GATE_MODES; the others are ablations


@dataclass(frozen=True)
class PGINBatch:
    """One batch. Ids at masked positions are ignored; `label` is None when serving."""

    user_features: Array  # (B, F)
    long_items: IntArray  # (B, L) in [0, V)
    long_categories: IntArray  # (B, L) in [0, C)
    long_mask: BoolArray  # (B, L)
    short_items: IntArray  # (B, S)
    short_categories: IntArray  # (B, S)
    short_mask: BoolArray  # (B, S)
    history: IntArray  # (B, P) deduplicated category history (refimpl.data.category_history)
    history_mask: BoolArray  # (B, P)
    label: IntArray | None = None  # (B,) next category in [0, C)


def make_batch(
    user_features: Array,
    long_items: IntArray,
    long_categories: IntArray,
    long_mask: BoolArray,
    short_items: IntArray,
    short_categories: IntArray,
    short_mask: BoolArray,
    max_history: int,
    label: IntArray | None = None,
    *,
    long_times: NDArray[Any] | None = None,
    short_times: NDArray[Any] | None = None,
) -> PGINBatch:
    """A batch whose history is merged from the two sequences (merge_category_history)."""
    shapes = Shapes()
    shapes.check_float("user_features", user_features, ("B", "F"))
    shapes.check_int("long_items", long_items, ("B", "L"))
    shapes.check_int("short_items", short_items, ("B", "S"))
    if label is not None:
        shapes.check_int("label", label, ("B",))
    history, history_mask = merge_category_history(
        long_categories, long_mask, short_categories, short_mask, max_history,
        long_times=long_times, short_times=short_times,
    )
    return PGINBatch(
        user_features, long_items, long_categories, long_mask,
        short_items, short_categories, short_mask, history, history_mask, label,
    )


def _mlp_widths(cfg: PGINConfig) -> tuple[int, ...]:
    return (cfg.dim, *cfg.mlp_hidden, cfg.num_categories)


def param_shapes(cfg: PGINConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, in a fixed order."""
    d = cfg.dim
    shapes: dict[str, tuple[int, ...]] = {
        "category_table": (cfg.num_categories, d),
        "item_table": (cfg.num_items, d),
        "user_W": (cfg.user_feature_dim, d),
        "user_b": (d,),
    }
    for block in ATTENTION_BLOCKS:
        shapes.update(attention_block_shapes(block, d))
    widths = _mlp_widths(cfg)
    for layer in range(len(widths) - 1):
        shapes[f"mlp_W{layer}"] = (widths[layer], widths[layer + 1])
        shapes[f"mlp_b{layer}"] = (widths[layer + 1],)
    shapes["gate_w"] = (2 * d,)
    shapes["gate_b"] = (1,)
    return shapes


def _check_config(cfg: PGINConfig) -> None:
    for name in ("num_categories", "num_items", "user_feature_dim", "dim", "num_heads"):
        require_positive_int(f"cfg.{name}", getattr(cfg, name))
    for width in cfg.mlp_hidden:
        require_positive_int("cfg.mlp_hidden", width)
    require_choice("cfg.gate", cfg.gate, GATE_MODES)
    if cfg.dim % cfg.num_heads:
        raise ValueError(f"cfg.num_heads: {cfg.num_heads} heads do not divide cfg.dim = {cfg.dim}")


def pgin_init(rng: np.random.Generator, cfg: PGINConfig, dtype: Any = np.float64) -> Params:
    """Fresh params: tables ~ N(0, 1/D), weights ~ N(0, 1/fan_in), biases and gate_b 0."""
    _check_config(cfg)
    params: Params = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith("_table"):
            value = rng.standard_normal(shape) / np.sqrt(cfg.dim)
        elif len(shape) == 2 or name == "gate_w":
            value = rng.standard_normal(shape) / np.sqrt(shape[0])
        else:
            value = np.zeros(shape)
        params[name] = value.astype(dtype)
    return params


def _mlp(params: Params, cfg: PGINConfig) -> tuple[MLPParams, MLPConfig]:
    layers = len(cfg.mlp_hidden) + 1
    mlp = MLPParams(
        tuple(LinearParams(params[f"mlp_W{i}"], params[f"mlp_b{i}"]) for i in range(layers))
    )
    return mlp, MLPConfig(("relu",) * (layers - 1) + ("identity",))


@dataclass(frozen=True)
class SequenceCache:
    item: EmbeddingCache
    category: EmbeddingCache
    mhsa: AttentionCache
    pool: PoolCache


@dataclass(frozen=True)
class PGINCache:
    long: SequenceCache
    short: SequenceCache
    user: LinearCache
    fusion: TargetAttentionCache
    mlp: MLPCache
    history: EmbeddingCache
    pointer_generator: PointerGeneratorCache
    user_embedding: Array  # (B, D) u
    long_pooled: Array  # (B, D) v_long
    short_pooled: Array  # (B, D) v_short
    generator_hidden: Array  # (B, D) g
    generator_logits: Array  # (B, C)


def _check_batch(batch: PGINBatch, cfg: PGINConfig, dtype: Any) -> None:
    shapes = Shapes(F=cfg.user_feature_dim)
    shapes.check_float("user_features", batch.user_features, ("B", "F"))
    if batch.user_features.dtype != dtype:
        raise TypeError(f"user_features: dtype {batch.user_features.dtype} differs from the params' {dtype}")
    for prefix, length in (("long", "L"), ("short", "S")):
        shapes.check_int(f"{prefix}_items", getattr(batch, f"{prefix}_items"), ("B", length))
        shapes.check_int(f"{prefix}_categories", getattr(batch, f"{prefix}_categories"), ("B", length))
        shapes.check_bool(f"{prefix}_mask", getattr(batch, f"{prefix}_mask"), ("B", length))
    shapes.check_int("history", batch.history, ("B", "P"))
    shapes.check_bool("history_mask", batch.history_mask, ("B", "P"))
    if batch.label is not None:
        shapes.check_int("label", batch.label, ("B",))


def _valid_ids(ids: IntArray, mask: BoolArray) -> IntArray:
    """Ids with masked positions replaced by 0, so padding never reaches a lookup."""
    result: IntArray = np.where(mask, ids, 0)
    return result


def _encode_sequence(
    params: Params, block: str, items: IntArray, categories: IntArray, mask: BoolArray, heads: int
) -> tuple[Array, SequenceCache]:
    item_emb, item_cache = embedding_forward(params["item_table"], _valid_ids(items, mask), f"{block}_items")
    cat_emb, cat_cache = embedding_forward(
        params["category_table"], _valid_ids(categories, mask), f"{block}_categories"
    )
    hidden, mhsa_cache = mhsa_forward(attention_block(params, block), item_emb + cat_emb, mask, AttentionConfig(heads))
    pooled, pool_cache = masked_mean_pool_forward(hidden, mask)
    return pooled, SequenceCache(item_cache, cat_cache, mhsa_cache, pool_cache)


def pgin_forward(
    params: Params, batch: PGINBatch, cfg: PGINConfig
) -> tuple[PointerGeneratorOutput, PGINCache]:
    """y (B, C), the loss when batch.label is given, and every named intermediate."""
    _check_config(cfg)
    check_param_shapes(params, param_shapes(cfg), "PGIN")
    _check_batch(batch, cfg, params["user_W"].dtype)
    heads = cfg.num_heads
    long_pooled, long_cache = _encode_sequence(
        params, "long", batch.long_items, batch.long_categories, batch.long_mask, heads
    )
    short_pooled, short_cache = _encode_sequence(
        params, "short", batch.short_items, batch.short_categories, batch.short_mask, heads
    )
    user_embedding, user_cache = linear_forward(
        LinearParams(params["user_W"], params["user_b"]), batch.user_features, "user_features"
    )
    tokens = np.stack([user_embedding, long_pooled, short_pooled], axis=1)
    token_mask = np.stack(
        [np.ones(len(tokens), dtype=bool), batch.long_mask.any(axis=1), batch.short_mask.any(axis=1)],
        axis=1,
    )
    hidden, fusion_cache = target_attention_forward(
        attention_block(params, "fusion"), user_embedding, tokens, token_mask, AttentionConfig(heads)
    )
    mlp_params, mlp_cfg = _mlp(params, cfg)
    logits, mlp_cache = mlp_forward(mlp_params, hidden, mlp_cfg)
    history_emb, history_cache = embedding_forward(
        params["category_table"], _valid_ids(batch.history, batch.history_mask), "history"
    )
    pg_params = PointerGeneratorParams(attention_block(params, "pointer"), params["gate_w"], params["gate_b"])
    out, pg_cache = pointer_generator_forward(
        pg_params, hidden, history_emb, batch.history, batch.history_mask, logits, hidden,
        batch.label, PointerGeneratorConfig(heads, cfg.gate),
    )
    cache = PGINCache(
        long_cache, short_cache, user_cache, fusion_cache, mlp_cache, history_cache, pg_cache,
        user_embedding, long_pooled, short_pooled, hidden, logits,
    )
    return out, cache


def _sequence_backward(cache: SequenceCache, block: str, d_pooled: Array) -> tuple[Params, Array, Array]:
    """Grads of the block's MHSA params, d_item_table and d_category_table."""
    d_hidden = masked_mean_pool_backward(cache.pool, d_pooled)
    mhsa_grads, d_embedded = mhsa_backward(cache.mhsa, d_hidden)
    return (
        attention_block_grads(mhsa_grads, block),
        embedding_backward(cache.item, d_embedded),
        embedding_backward(cache.category, d_embedded),
    )


def pgin_backward(
    cache: PGINCache, d_loss: Array | float | None = 1.0, d_y: Array | None = None
) -> tuple[Params, Array]:
    """Gradients of every param (keys of param_shapes) and d_user_features (B, F)."""
    pg = pointer_generator_backward(cache.pointer_generator, d_y, d_loss)
    mlp_grads, d_hidden_mlp = mlp_backward(cache.mlp, pg.generator_logits)
    d_hidden = d_hidden_mlp + pg.query + pg.generator_hidden
    fusion_grads, d_user_query, d_tokens = target_attention_backward(cache.fusion, d_hidden)
    user_grads, d_user_features = linear_backward(cache.user, d_user_query + d_tokens[:, 0])
    long_grads, d_items_long, d_cats_long = _sequence_backward(cache.long, "long", d_tokens[:, 1])
    short_grads, d_items_short, d_cats_short = _sequence_backward(cache.short, "short", d_tokens[:, 2])
    grads: Params = {
        "category_table": d_cats_long + d_cats_short + embedding_backward(cache.history, pg.history_emb),
        "item_table": d_items_long + d_items_short,
        "user_W": user_grads.W,
        "user_b": user_grads.b,
        **long_grads,
        **short_grads,
        **attention_block_grads(fusion_grads, "fusion"),
        **attention_block_grads(pg.params.attention, "pointer"),
    }
    for index, layer in enumerate(mlp_grads.layers):
        grads[f"mlp_W{index}"] = layer.W
        grads[f"mlp_b{index}"] = layer.b
    grads["gate_w"] = pg.params.gate_w
    grads["gate_b"] = pg.params.gate_b
    return grads, d_user_features


def pgin_loss_and_grads(params: Params, batch: PGINBatch, cfg: PGINConfig) -> tuple[float, Params]:
    """The mean cross-entropy of a labelled batch and the gradient of every param."""
    if batch.label is None:
        raise ValueError("batch.label: training needs labels, got None")
    out, cache = pgin_forward(params, batch, cfg)
    grads, _ = pgin_backward(cache, 1.0)
    assert out.loss is not None
    return float(out.loss), grads


def top_k_from_distribution(y: Array, k: int) -> IntArray:
    """The k most probable categories per row (B, k) int64, most probable first; ties go to the
    lowest category id (a stable sort of -y)."""
    Shapes().check_float("y", y, ("B", "C"))
    num_categories = y.shape[1]
    k = require_positive_int("k", k)
    if k > num_categories:
        raise ValueError(f"k: expected at most C = {num_categories} categories, got {k}")
    result: IntArray = np.argsort(-y, axis=1, kind="stable")[:, :k].astype(np.int64)
    return result


def top_k_categories(params: Params, batch: PGINBatch, k: int, cfg: PGINConfig) -> IntArray:
    """Serving: the top-k categories (B, k) int64 of y, most probable first, ties to the lowest id.
    batch.label is ignored."""
    out, _ = pgin_forward(params, replace(batch, label=None), cfg)
    return top_k_from_distribution(out.y, k)
