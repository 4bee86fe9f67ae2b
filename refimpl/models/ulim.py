"""ULIM's dual-interest retrieval model (ULIM 2.1; spec/ulim.md), composed from refimpl.nn.

    e(i)   = [item_table[i]; category_table[cat(i)]] W_t + b_t                item tower (D)
                                                          (refimpl.models.item_tower)
    v_s    = masked_mean(MHSA_short(e(short), short_mask))                      short-term (B, D)
    v_l(c) = TA_long(query = v_s, keys = e(S_c), mask)                          long-term (B, D)
    L      = alpha * L_long(v_l(c), e(pos), e(neg)) + beta * L_short(v_s, ...)  ULIM eq. 1

S_c is the category subsequence of the long sequence: the user's behaviours of category c (the
positive's category in training, each PGIN category in serving), most recent last. The same item
tower embeds behaviours, positives, negatives and the retrieval catalogue. L_long and L_short are
sampled softmaxes over one category-homogeneous batch with one shared set of in-category negatives
(refimpl.nn.ulim_loss.ulim_loss_forward, which refuses a batch that is not category-pure).

`long_encoder="self"` is the ULIM-self-attention ablation: v_l(c) = masked_mean(MHSA_long(e(S_c)))
replaces the target attention (the short-term vector no longer steers the long-term one).

Edge cases: an empty category subsequence gives v_l = 0 (the attention kernel's all-masked row)
and its rows pass no gradient to the long-term encoder; an empty short sequence gives v_s = 0.
Ids at masked positions are ignored (replaced by 0 before the lookup; they get no gradient).

Params are a flat `dict[str, Array]` so that refimpl.optim.adam_step updates them as they are;
`param_shapes(cfg)` lists every name and shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from refimpl._check import (
    Array,
    BoolArray,
    IntArray,
    Shapes,
    caller_names,
    require_choice,
    require_ids,
    require_int,
    require_positive_int,
    require_real,
)
from refimpl.data.category_subsequence import category_subsequences
from refimpl.models._params import (
    Params,
    add_grads,
    attention_block,
    attention_block_grads,
    attention_block_shapes,
    check_param_shapes,
    normal_init,
)
from refimpl.models.item_tower import (
    catalogue_vectors,
    item_tower_backward,
    item_tower_forward,
    tower_param_shapes,
)
from refimpl.nn._upstream import check_upstream
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
from refimpl.nn.pooling import PoolCache, masked_mean_pool_backward, masked_mean_pool_forward
from refimpl.nn.row_sparse import RowSparseGrad
from refimpl.nn.sampled_softmax import sampled_softmax_backward, sampled_softmax_forward
from refimpl.nn.ulim_loss import UlimLossConfig, ulim_loss_backward, ulim_loss_forward

__all__ = [
    "ULIMBatch",
    "ULIMConfig",
    "ULIMLoss",
    "catalogue_vectors",
    "category_subsequence",
    "encode_backward",
    "encode_for_serving",
    "encode_forward",
    "require_category_subsequence",
    "ulim_init",
    "ulim_loss_and_grads",
]

LONG_ENCODERS = ("target", "self")
ITEM_TABLE_GRADS = ("dense", "rows")  # ulim_loss_and_grads(item_table_grad=...)


@dataclass(frozen=True)
class ULIMConfig:
    num_items: int  # I
    num_categories: int  # C
    dim: int = 32  # D
    num_heads: int = 2  # H of both attention blocks
    long_encoder: str = "target"  # "self" is the ULIM-self-attention ablation
    loss: UlimLossConfig = field(default_factory=UlimLossConfig)


@dataclass(frozen=True)
class ULIMBatch:
    """The user side of one batch. Ids at masked positions are ignored.

    short_items/short_mask (B, S): the most recent behaviours, oldest first;
    long_items/long_mask (B, L): the category subsequence S_c, oldest first.
    """

    short_items: IntArray
    short_mask: BoolArray
    long_items: IntArray
    long_mask: BoolArray


def param_shapes(cfg: ULIMConfig) -> dict[str, tuple[int, ...]]:
    shapes = tower_param_shapes(cfg.num_items, cfg.num_categories, cfg.dim)
    for block in ("short", "long"):
        shapes.update(attention_block_shapes(block, cfg.dim))
    return shapes


def check_config(cfg: ULIMConfig) -> ULIMConfig:
    for name in ("num_items", "num_categories", "dim", "num_heads"):
        require_positive_int(f"cfg.{name}", getattr(cfg, name))
    require_choice("cfg.long_encoder", cfg.long_encoder, LONG_ENCODERS)
    if cfg.dim % cfg.num_heads:
        raise ValueError(f"cfg.num_heads: {cfg.num_heads} heads do not divide dim {cfg.dim}")
    return cfg


def ulim_init(rng: np.random.Generator, cfg: ULIMConfig, dtype: Any = np.float64) -> Params:
    """Weights N(0, 1/fan_in), biases 0, tables N(0, 1/D), drawn from `rng` in `dtype`."""
    return normal_init(param_shapes(check_config(cfg)), rng, dtype)


def check_params(params: Params, cfg: ULIMConfig) -> Shapes:
    return check_param_shapes(params, param_shapes(cfg), "ULIM")


def _check_params_but_item_values(params: Params, cfg: ULIMConfig) -> None:
    """`check_params`, except that the item table's values are not scanned (its names, shape and
    dtype are checked): a training step checks the rows it reads instead, so that its cost does
    not grow with the catalogue (a finiteness scan of a 10^6-row table costs more than the step)."""
    shapes = param_shapes(cfg)
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected a dict of arrays, got {type(params).__name__}")
    missing, extra = sorted(set(shapes) - set(params)), sorted(set(params) - set(shapes))
    if missing or extra:
        raise ValueError(f"params: the ULIM parameters are {list(shapes)}; missing {missing}, unexpected {extra}")
    rest = {name: shape for name, shape in shapes.items() if name != "item_table"}
    bound = check_param_shapes({name: params[name] for name in rest}, rest, "ULIM")
    table = params["item_table"]
    if not isinstance(table, np.ndarray):
        raise TypeError(f"item_table: expected a numpy array, got {type(table).__name__}")
    if table.shape != shapes["item_table"]:
        raise ValueError(f"item_table: expected shape {shapes['item_table']}, got {table.shape}")
    if table.dtype != bound.float_dtype:
        raise TypeError(f"item_table: dtype {table.dtype} differs from {bound.float_dtype} of "
                        f"{bound.float_dtype_source}; a component computes in one dtype")


@dataclass(frozen=True)
class EncoderCache:
    short_attention: AttentionCache
    short_pool: PoolCache
    long_attention: AttentionCache | TargetAttentionCache  # target (default) or self attention
    long_pool: PoolCache | None  # only for long_encoder="self"
    long_encoder: str


def _check_batch(batch: ULIMBatch, num_items: int) -> None:
    shapes = Shapes()
    shapes.check_int("short_items", batch.short_items, ("B", "S"))
    shapes.check_bool("short_mask", batch.short_mask, ("B", "S"))
    shapes.check_int("long_items", batch.long_items, ("B", "L"))
    shapes.check_bool("long_mask", batch.long_mask, ("B", "L"))
    for name in ("short", "long"):
        ids = getattr(batch, f"{name}_items")[getattr(batch, f"{name}_mask")]
        if ids.size and (ids.min() < 0 or ids.max() >= num_items):
            raise ValueError(f"{name}_items: ids at valid positions must be in [0, {num_items})")


def category_subsequence(
    long_sequence: IntArray,
    long_sequence_mask: BoolArray,
    item_category: IntArray,
    categories: IntArray,
    max_length: int,
) -> tuple[IntArray, BoolArray]:
    """ULIM 2.1.1's category clustering: S_c, the behaviours of category c_b in row b's long sequence.

    long_sequence, long_sequence_mask (B, L): the whole long sequence, oldest first; item_category
    (I,) the category of every item; categories (B,) the category c_b of each row; max_length the
    cap. Returns items, mask (B, max_length): row b's valid behaviours of category c_b in time order,
    the most recent `max_length` kept, left-aligned (oldest first) and padded with id 0, mask False.
    A row without a behaviour of its category gets an all-masked row.
    """
    shapes = Shapes()
    shapes.check_int("long_sequence", long_sequence, ("B", "L"))
    shapes.check_bool("long_sequence_mask", long_sequence_mask, ("B", "L"))
    shapes.check_int("item_category", item_category, ("I",))
    shapes.check_int("categories", categories, ("B",))
    width = require_positive_int("max_length", max_length)
    ids = long_sequence[long_sequence_mask]
    if ids.size and (ids.min() < 0 or ids.max() >= item_category.shape[0]):
        raise ValueError(
            f"long_sequence: ids at valid positions must be in [0, {item_category.shape[0]}), "
            f"got [{ids.min()}, {ids.max()}]"
        )
    # One definition of S_c for the model, the goldens and the data pipeline.
    behaviour_category = item_category[np.where(long_sequence_mask, long_sequence, 0)]
    items, mask = category_subsequences(
        long_sequence, behaviour_category, long_sequence_mask, categories[:, None], width
    )
    return items[:, 0], mask[:, 0]


def require_category_subsequence(
    long_items: IntArray, long_mask: BoolArray, item_category: IntArray, batch_category: int
) -> None:
    """Refuse a long-term input that is not the batch category's subsequence (ULIM 2.1.1).

    Raises ValueError naming `long_items`, the first offending (row, position), its item and
    category, and how many valid positions are foreign. item_category (I,) must cover the ids.
    """
    shapes = Shapes()
    shapes.check_int("long_items", long_items, ("B", "L"))
    shapes.check_bool("long_mask", long_mask, ("B", "L"))
    shapes.check_int("item_category", item_category, ("I",))
    require_int("batch_category", batch_category)
    ids = long_items[long_mask]
    if ids.size and (ids.min() < 0 or ids.max() >= item_category.shape[0]):
        raise ValueError(
            f"long_items: ids at valid positions must be in [0, {item_category.shape[0]}), "
            f"got [{ids.min()}, {ids.max()}]"
        )
    foreign = long_mask & (item_category[np.where(long_mask, long_items, 0)] != batch_category)
    if foreign.any():
        row, position = (int(i) for i in np.argwhere(foreign)[0])
        item = int(long_items[row, position])
        raise ValueError(
            f"long_items: the long-term encoder reads the subsequence of the batch's category "
            f"{batch_category} only (ULIM 2.1.1: cluster the long sequence by category first); "
            f"position ({row}, {position}) holds item {item} of category {int(item_category[item])}"
            f" ({int(foreign.sum())} valid position(s) of other categories)"
        )


def _block_names(block: str, **inputs: str) -> dict[str, str]:
    """Inner attention names -> the model's: Wk -> long_Wk, seq -> long_emb, ..."""
    return {**{n: f"{block}_{n}" for n in ("Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo")}, **inputs}


def _short_forward(
    params: Params, emb: Array, mask: BoolArray, cfg: ULIMConfig
) -> tuple[Array, AttentionCache, PoolCache]:
    hidden, attention = mhsa_forward(
        attention_block(params, "short"), emb, mask, AttentionConfig(num_heads=cfg.num_heads)
    )
    v_s, pool = masked_mean_pool_forward(hidden, mask)
    return v_s, attention, pool


def _long_forward(
    params: Params, v_s: Array, emb: Array, mask: BoolArray, cfg: ULIMConfig
) -> tuple[Array, AttentionCache | TargetAttentionCache, PoolCache | None]:
    attention_cfg = AttentionConfig(num_heads=cfg.num_heads)
    if cfg.long_encoder == "target":
        v_l, attention = target_attention_forward(
            attention_block(params, "long"), v_s, emb, mask, attention_cfg
        )
        return v_l, attention, None
    hidden, self_attention = mhsa_forward(attention_block(params, "long"), emb, mask, attention_cfg)
    v_l, pool = masked_mean_pool_forward(hidden, mask)
    return v_l, self_attention, pool


def encode_forward(
    params: Params, short_emb: Array, short_mask: BoolArray, long_emb: Array,
    long_mask: BoolArray, cfg: ULIMConfig,
) -> tuple[Array, Array, EncoderCache]:
    """(v_l (B, D), v_s (B, D), cache) from the embedded short (B, S, D) and long (B, L, D)
    sequences."""
    check_config(cfg)
    check_params(params, cfg)
    return _encode(params, short_emb, short_mask, long_emb, long_mask, cfg)


def _encode(
    params: Params, short_emb: Array, short_mask: BoolArray, long_emb: Array,
    long_mask: BoolArray, cfg: ULIMConfig,
) -> tuple[Array, Array, EncoderCache]:
    """`encode_forward` for a caller that has checked the config and params (each component
    still validates its own inputs)."""
    with caller_names(**_block_names("short", x="short_emb", mask="short_mask")):
        v_s, short_attention, short_pool = _short_forward(params, short_emb, short_mask, cfg)
    with caller_names(**_block_names("long", seq="long_emb", x="long_emb", mask="long_mask")):
        v_l, long_attention, long_pool = _long_forward(params, v_s, long_emb, long_mask, cfg)
    cache = EncoderCache(short_attention, short_pool, long_attention, long_pool, cfg.long_encoder)
    return v_l, v_s, cache


def encode_backward(
    cache: EncoderCache, d_long: Array, d_short: Array
) -> tuple[Params, Array, Array]:
    """(param grads, d_short_emb, d_long_emb) for upstream dL/dv_l and dL/dv_s (B, D)."""
    grads: Params = {}
    v_shape = (cache.short_attention.q_in.shape[0], cache.short_attention.q_in.shape[2])
    dtype = cache.short_attention.q_in.dtype
    check_upstream("d_long", d_long, v_shape, dtype)
    check_upstream("d_short", d_short, v_shape, dtype)
    if isinstance(cache.long_attention, TargetAttentionCache):  # long_encoder == "target"
        long_grads, d_query, d_long_emb = target_attention_backward(cache.long_attention, d_long)
        d_short = d_short + d_query
    else:
        assert cache.long_pool is not None
        long_grads, d_long_emb = mhsa_backward(
            cache.long_attention, masked_mean_pool_backward(cache.long_pool, d_long)
        )
    add_grads(grads, attention_block_grads(long_grads, "long"))
    d_short_hidden = masked_mean_pool_backward(cache.short_pool, d_short)
    short_grads, d_short_emb = mhsa_backward(cache.short_attention, d_short_hidden)
    add_grads(grads, attention_block_grads(short_grads, "short"))
    return grads, d_short_emb, d_long_emb


@dataclass(frozen=True)
class ULIMLoss:
    loss: float
    long_loss: float
    short_loss: float
    grads: Params  # of `d_loss * loss`; without "item_table" when item_table_rows holds it
    long_user: Array  # (B, D) v_l
    short_user: Array  # (B, D) v_s
    item_table_rows: RowSparseGrad | None = None  # item_table_grad="rows": the item table's gradient


def _gather(
    table: Array, parts: list[IntArray]
) -> tuple[list[Array], EmbeddingCache]:
    """Rows of `table` for several id arrays in one lookup; each part keeps its shape (..., D)."""
    flat, cache = embedding_forward(
        table, np.concatenate([p.reshape(-1) for p in parts]).astype(np.int64), "ids"
    )
    splits = np.cumsum([p.size for p in parts])[:-1]
    return [
        chunk.reshape(*p.shape, table.shape[1])
        for chunk, p in zip(np.split(flat, splits), parts, strict=True)
    ], cache


def ulim_loss_and_grads(
    params: Params,
    batch: ULIMBatch,
    positive_ids: IntArray,
    negative_ids: IntArray,
    batch_category: int,
    item_category: IntArray,
    cfg: ULIMConfig,
    d_loss: float = 1.0,
    short_negative_ids: IntArray | None = None,
    item_table_grad: str = "dense",
) -> ULIMLoss:
    """ULIM eq. 1 over one category-homogeneous batch, and the gradient of every param.

    positive_ids (B,), negative_ids (N,) shared by every row, all of `batch_category`
    (ValueError naming the ids otherwise); item_category (I,) the category of every item.
    `batch.long_items` must be the batch category's subsequence (`category_subsequence`): a valid
    behaviour of another category is refused (`require_category_subsequence`).
    The gradients are of `d_loss * loss` (the upstream gradient; 1 when training).
    short_negative_ids (N',): when given, L_short scores against these (e.g. drawn from the whole
    catalogue, the pool the short-term vector searches at serving) instead of the in-category
    negatives; L_long keeps the in-category ones (spec/ulim.md#short-term-negatives).
    item_table_grad: "dense" puts the item table's gradient in `grads` as a (I, D) array (zero
    outside the batch's items); "rows" puts it in `item_table_rows` as a RowSparseGrad over the
    batch's distinct items (refimpl.optim.lazy_adam_step updates those rows only). The same numbers.
    The item table's values are checked on the rows the batch reads (a NaN elsewhere cannot reach
    the loss); its shape and dtype, and every other param, whole.
    """
    check_config(cfg)
    require_choice("item_table_grad", item_table_grad, ITEM_TABLE_GRADS)
    _check_params_but_item_values(params, cfg)
    _check_batch(batch, cfg.num_items)
    require_ids("positive_ids", positive_ids, cfg.num_items, ("B",))
    if positive_ids.shape[0] != batch.short_items.shape[0]:
        raise ValueError(
            f"positive_ids: expected one per row of the batch (B = {batch.short_items.shape[0]}), "
            f"got shape {positive_ids.shape}"
        )
    require_ids("negative_ids", negative_ids, cfg.num_items, ("N",))
    require_ids("item_category", item_category, cfg.num_categories, ("I",))
    d_loss = require_real("d_loss", d_loss)
    require_category_subsequence(batch.long_items, batch.long_mask, item_category, batch_category)
    parts = [
        np.where(batch.short_mask, batch.short_items, 0),
        np.where(batch.long_mask, batch.long_items, 0),
        positive_ids,
        negative_ids,
        np.zeros(0, dtype=np.int64) if short_negative_ids is None else short_negative_ids,
    ]
    # The tower runs once per distinct item of the batch (not per use, not per catalogue item),
    # on those rows of the item table gathered first: the same numbers as the catalogue tower, at
    # a cost that does not grow with the catalogue (no table-sized scan, gradient or lookup).
    used, where = np.unique(np.concatenate([p.reshape(-1) for p in parts]), return_inverse=True)
    item_rows = params["item_table"][used]  # (U, D)
    finite = np.isfinite(item_rows).all(axis=1)
    if not finite.all():
        item = int(used[np.argmin(finite)])
        raise ValueError(f"item_table: expected finite values, got {params['item_table'][item].tolist()} in row "
                         f"{item} (an item the batch reads)")
    catalogue, tower = item_tower_forward(
        {**params, "item_table": item_rows}, np.arange(used.size), item_category[used].astype(np.int64)
    )
    splits = np.cumsum([p.size for p in parts])[:-1]
    (short_emb, long_emb, positive, negatives, short_negatives), lookup = _gather(
        catalogue, [w.reshape(p.shape) for w, p in zip(np.split(where, splits), parts, strict=True)]
    )
    v_l, v_s, encoder = _encode(params, short_emb, batch.short_mask, long_emb, batch.long_mask, cfg)
    if short_negative_ids is None:
        loss, loss_cache = ulim_loss_forward(
            v_l, v_s, positive, negatives, positive_ids, negative_ids, batch_category,
            item_category, cfg.loss,
        )
        loss_grads = ulim_loss_backward(loss_cache, np.asarray(d_loss, dtype=loss.dtype))
        d_short_negatives = short_negatives
        long_loss, short_loss = float(loss_cache.long_loss), float(loss_cache.short_loss)
    else:
        # L_long alone through ULIM's loss (beta 0), L_short against its own negatives.
        long_only = replace(cfg.loss, beta=0.0)
        loss, loss_cache = ulim_loss_forward(
            v_l, v_s, positive, negatives, positive_ids, negative_ids, batch_category,
            item_category, long_only,
        )
        upstream = np.asarray(d_loss, dtype=loss.dtype)
        loss_grads = ulim_loss_backward(loss_cache, upstream)
        short_value, short_cache = sampled_softmax_forward(
            v_s, positive, short_negatives, positive_ids, short_negative_ids, cfg.loss.loss
        )
        short_grads = sampled_softmax_backward(short_cache, upstream * cfg.loss.beta)
        loss = loss + loss.dtype.type(cfg.loss.beta) * short_value
        loss_grads = replace(loss_grads, short_user=short_grads.user,
                             positive=loss_grads.positive + short_grads.positive)
        d_short_negatives = short_grads.negatives
        long_loss, short_loss = float(loss_cache.long_loss), float(short_value)
    grads, d_short_emb, d_long_emb = encode_backward(
        encoder, loss_grads.long_user, loss_grads.short_user
    )
    d_rows = np.concatenate([
        d_short_emb.reshape(-1, cfg.dim),
        d_long_emb.reshape(-1, cfg.dim),
        loss_grads.positive,
        loss_grads.negatives,
        np.zeros_like(short_negatives) if short_negative_ids is None else d_short_negatives,
    ])
    tower_grads = item_tower_backward(tower, embedding_backward(lookup, d_rows))
    # the tower's "item_table" gradient is of the gathered rows: row j is item used[j]'s
    rows = RowSparseGrad(used, tower_grads["item_table"])
    if item_table_grad == "rows":
        del tower_grads["item_table"]
    else:
        tower_grads["item_table"] = rows.to_dense(cfg.num_items)
    add_grads(grads, tower_grads)
    return ULIMLoss(float(loss), long_loss, short_loss, grads, v_l, v_s,
                    rows if item_table_grad == "rows" else None)


def encode_for_serving(
    params: Params,
    short_items: IntArray,
    short_mask: BoolArray,
    long_items: IntArray,
    long_mask: BoolArray,
    item_category: IntArray,
    cfg: ULIMConfig,
) -> tuple[Array, Array]:
    """Serving: v_s (B, D) and one long-term vector per route, v_l (B, K, D).

    short_* (B, S); long_* (B, K, L): the subsequence of each of the K predicted categories, so
    that v_l(c) reads only category c's behaviours. A route with no behaviour gets v_l = 0.
    """
    check_config(cfg)
    check_params(params, cfg)
    shapes = Shapes()
    shapes.check_int("short_items", short_items, ("B", "S"))
    shapes.check_bool("short_mask", short_mask, ("B", "S"))
    shapes.check_int("long_items", long_items, ("B", "K", "L"))
    shapes.check_bool("long_mask", long_mask, ("B", "K", "L"))
    for name, ids, mask in (("short_items", short_items, short_mask), ("long_items", long_items, long_mask)):
        require_ids(name, ids[mask], cfg.num_items)
    require_ids("item_category", item_category, cfg.num_categories, ("I",))
    b, k, length = long_items.shape
    catalogue = catalogue_vectors(params, item_category)
    (short_emb, long_emb), _ = _gather(
        catalogue,
        [np.where(short_mask, short_items, 0), np.where(long_mask, long_items, 0)],
    )
    v_s, _, _ = _short_forward(params, short_emb, short_mask, cfg)
    v_l, _, _ = _long_forward(
        params,
        np.repeat(v_s, k, axis=0),
        long_emb.reshape(b * k, length, cfg.dim),
        long_mask.reshape(b * k, length),
        cfg,
    )
    return v_s, v_l.reshape(b, k, cfg.dim)
