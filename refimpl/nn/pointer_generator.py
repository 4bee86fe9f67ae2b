"""Pointer-generator gating of PGIN (ULIM 2.2.1): next-category distribution and its cross-entropy.

The pointer copies from the user's category history, the generator predicts over all C categories,
and a learned gate blends them. ULIM 2.2.1 describes these steps without numbered equations; the
labels PG-1..PG-7 are spec/pointer_generator.md's:

    PG-1  w_hp  = target attention weights of the query u over the history embeddings e_p, head h
          alpha_p = (1/H) sum_h w_hp                          pointer weights (head average)
    PG-2  c     = target_attention(u, e, m)                   pointer context (B, D)
    PG-3  y_poi[k] = sum_{p : m_p and hist_p = k} alpha_p     scatter by SUMMATION (np.add.at)
    PG-4  y_gen = softmax(generator_logits)                   generator distribution
    PG-5  P_poi = r * sigmoid(w . [c; g] + b)                 gate, g = generator hidden
    PG-6  y     = P_poi y_poi + (1 - P_poi) y_gen             mixture
    PG-7  loss  = mean_b -log(y[b, label_b] + 1e-12)

r is 1 for a row with at least one valid history position and 0 otherwise: a row with an empty
history has nothing to copy, so its gate is 0 and y = y_gen (y stays a distribution).

The gate P_poi weighs the POINTER: P_poi = 1 gives y = y_poi. See et al.'s p_gen weighs the
generator; P_poi = 1 - p_gen. `cfg.gate` forces the gate for ablations: "pointer" (P_poi = r),
"generator" (P_poi = 0); "learned" is the model.

Shapes: query u (B, D), history_emb e (B, P, D), history (B, P) int ids in [0, C) at valid
positions (masked positions are ignored, any integer), history_mask m (B, P) bool,
generator_logits (B, C), generator_hidden g (B, G), label (B,) int in [0, C) or None (serving:
no loss); attention params (D, D)/(D,) as refimpl.nn.attention; gate_w (D + G,), gate_b (1,).
Out y (B, C), loss () in the input dtype.

Edge cases: duplicate ids in an un-deduplicated history add their weights (a fancy-index `+=`
would keep one of them and y would not sum to 1); a label absent from the history gets only the
generator's mass; C = 1 gives y = [1] and zero logit gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, BoolArray, IntArray, Shapes, require_choice
from refimpl.nn._upstream import check_loss_upstream, check_upstream
from refimpl.nn.attention import (
    AttentionConfig,
    AttentionParams,
    TargetAttentionCache,
    masked_softmax,
    softmax_backward,
    target_attention_backward,
    target_attention_forward,
)
from refimpl.nn.mlp import sigmoid

__all__ = [
    "PointerGeneratorCache",
    "PointerGeneratorConfig",
    "PointerGeneratorGrads",
    "PointerGeneratorOutput",
    "PointerGeneratorParams",
    "pointer_generator_backward",
    "pointer_generator_forward",
]

GATE_MODES = ("learned", "pointer", "generator")
LOSS_EPS = 1e-12


@dataclass(frozen=True)
class PointerGeneratorParams:
    attention: AttentionParams  # the pointer's target attention, (D, D) projections
    gate_w: Array  # (D + G,): first D act on the pointer context, last G on the generator hidden
    gate_b: Array  # (1,)


@dataclass(frozen=True)
class PointerGeneratorConfig:
    num_heads: int = 1
    gate: str = "learned"  # one of GATE_MODES


@dataclass(frozen=True)
class PointerGeneratorOutput:
    y: Array  # (B, C) the mixture, a distribution per row
    loss: Array | None  # () mean cross-entropy, None without labels
    pointer_weights: Array  # (B, P) alpha, head-averaged attention weights
    pointer_context: Array  # (B, D) c
    y_poi: Array  # (B, C)
    y_gen: Array  # (B, C)
    P_poi: Array  # (B,) gate, weight of the pointer
    row_loss: Array | None  # (B,)


@dataclass(frozen=True)
class PointerGeneratorCache:
    attention: TargetAttentionCache
    out: PointerGeneratorOutput
    history: IntArray  # (B, P)
    history_mask: BoolArray  # (B, P)
    gate_input: Array  # (B, D + G) [c; g]
    gate_w: Array  # (D + G,)
    learned_gate: bool
    label: IntArray | None  # (B,)


def _check_ids(name: str, ids: IntArray, valid: BoolArray, num_categories: int) -> None:
    chosen = ids[valid]
    if chosen.size and (chosen.min() < 0 or chosen.max() >= num_categories):
        bad = chosen[(chosen < 0) | (chosen >= num_categories)][0]
        raise ValueError(f"{name}: id {bad} is outside the categories [0, {num_categories})")


def scatter_to_categories(weights: Array, history: IntArray, mask: BoolArray, num_categories: int) -> Array:
    """y_poi (B, C): each valid position's weight added onto its category, duplicates summed."""
    b = weights.shape[0]
    y_poi = np.zeros((b, num_categories), dtype=weights.dtype)
    rows = np.broadcast_to(np.arange(b)[:, None], history.shape)
    np.add.at(y_poi, (rows[mask], history[mask]), weights[mask])
    return y_poi


def mix_distributions(gate: Array, y_poi: Array, y_gen: Array) -> Array:
    """y = P_poi y_poi + (1 - P_poi) y_gen: the gate (B,) weighs the POINTER."""
    y: Array = gate[:, None] * y_poi + (1 - gate[:, None]) * y_gen
    return y


def _gate(
    params: PointerGeneratorParams, gate_input: Array, has_history: BoolArray, mode: str
) -> Array:
    dtype = gate_input.dtype
    if mode == "pointer":
        return has_history.astype(dtype)
    if mode == "generator":
        return np.zeros(has_history.shape, dtype=dtype)
    logit = gate_input @ params.gate_w + params.gate_b[0]
    gate: Array = np.where(has_history, sigmoid(logit), 0).astype(dtype, copy=False)
    return gate


def _cross_entropy(y: Array, label: IntArray) -> tuple[Array, Array]:
    rows = np.arange(y.shape[0])
    row_loss: Array = -np.log(y[rows, label] + LOSS_EPS)
    # the mean over the rows, 0 for no row (an empty batch has loss 0 and zero gradients)
    return row_loss, np.asarray(row_loss.sum() / max(row_loss.shape[0], 1), dtype=y.dtype)


def pointer_generator_forward(
    params: PointerGeneratorParams,
    query: Array,
    history_emb: Array,
    history: IntArray,
    history_mask: BoolArray,
    generator_logits: Array,
    generator_hidden: Array,
    label: IntArray | None,
    cfg: PointerGeneratorConfig,
) -> tuple[PointerGeneratorOutput, PointerGeneratorCache]:
    """The mixture y (B, C) and, given labels, the mean cross-entropy."""
    shapes = Shapes()
    shapes.check_float("query", query, ("B", "D"))
    shapes.check_float("history_emb", history_emb, ("B", "P", "D"))
    shapes.check_int("history", history, ("B", "P"))
    shapes.check_bool("history_mask", history_mask, ("B", "P"))
    shapes.check_float("generator_logits", generator_logits, ("B", "C"))
    shapes.check_float("generator_hidden", generator_hidden, ("B", "G"))
    shapes.check_float("gate_w", params.gate_w, (shapes.size("D") + shapes.size("G"),))
    shapes.check_float("gate_b", params.gate_b, (1,))
    mode = require_choice("cfg.gate", cfg.gate, GATE_MODES)
    num_categories = shapes.size("C")
    _check_ids("history", history, history_mask, num_categories)
    if label is not None:
        shapes.check_int("label", label, ("B",))
        _check_ids("label", label, np.ones(label.shape, dtype=bool), num_categories)

    context, attention = target_attention_forward(
        params.attention, query, history_emb, history_mask, AttentionConfig(cfg.num_heads)
    )
    pointer_weights: Array = attention.weights[:, :, 0, :].mean(axis=1)
    y_poi = scatter_to_categories(pointer_weights, history, history_mask, num_categories)
    y_gen = masked_softmax(generator_logits, np.ones((1, num_categories), dtype=bool))
    gate_input = np.concatenate([context, generator_hidden], axis=1)
    has_history: BoolArray = np.any(history_mask, axis=1)
    p_poi = _gate(params, gate_input, has_history, mode)
    y = mix_distributions(p_poi, y_poi, y_gen)
    row_loss, loss = _cross_entropy(y, label) if label is not None else (None, None)
    out = PointerGeneratorOutput(y, loss, pointer_weights, context, y_poi, y_gen, p_poi, row_loss)
    cache = PointerGeneratorCache(
        attention, out, history, history_mask, gate_input, params.gate_w, mode == "learned", label
    )
    return out, cache


@dataclass(frozen=True)
class PointerGeneratorGrads:
    params: PointerGeneratorParams
    query: Array  # (B, D)
    history_emb: Array  # (B, P, D)
    generator_logits: Array  # (B, C)
    generator_hidden: Array  # (B, G)


def _d_y_total(cache: PointerGeneratorCache, d_y: Array | None, d_loss: Array | float | None) -> Array:
    """The total gradient on y (B, C): d_y plus the loss's, -d_loss / (B (y[b, label_b] + eps)) at
    each row's label (PG-7)."""
    out = cache.out
    total = np.zeros_like(out.y) if d_y is None else check_upstream("d_y", d_y, out.y.shape, out.y.dtype).copy()
    if d_loss is not None:
        d_loss = check_loss_upstream("d_loss", d_loss, out.y.dtype)
    if d_loss is not None:
        if cache.label is None:
            raise ValueError("d_loss: the forward pass had no labels, so there is no loss")
        rows = np.arange(out.y.shape[0])
        picked = out.y[rows, cache.label] + LOSS_EPS
        np.add.at(total, (rows, cache.label), -np.asarray(d_loss, dtype=out.y.dtype) / (picked * len(rows)))
    return total


def pointer_generator_backward(
    cache: PointerGeneratorCache, d_y: Array | None, d_loss: Array | float | None
) -> PointerGeneratorGrads:
    """Gradients of every float input and param from upstream d_y (B, C) and d_loss ()."""
    out = cache.out
    # in the forward pass this was: row_loss = -log(y[b, label_b] + eps), loss = mean(row_loss)
    d_mix = _d_y_total(cache, d_y, d_loss)
    # in the forward pass this was: y = P_poi y_poi + (1 - P_poi) y_gen
    gate = out.P_poi[:, None]
    d_y_poi = gate * d_mix
    d_gate = np.sum(d_mix * (out.y_poi - out.y_gen), axis=1)
    # in the forward pass this was: y_gen = softmax(generator_logits)
    d_generator_logits = softmax_backward(out.y_gen, (1 - gate) * d_mix)
    # in the forward pass this was: y_poi = scatter_to_categories(pointer_weights, history, ...);
    # the scatter's backward is a gather: each position reads the gradient of its category
    safe_history = np.where(cache.history_mask, cache.history, 0)
    d_weights = np.where(cache.history_mask, np.take_along_axis(d_y_poi, safe_history, axis=1), 0)
    # in the forward pass this was: P_poi = where(has_history, sigmoid(gate_input gate_w + gate_b), 0)
    # (a fixed gate, "pointer" or "generator", has no parameters and passes no gradient)
    d_gate_logit = d_gate * out.P_poi * (1 - out.P_poi) if cache.learned_gate else np.zeros_like(d_gate)
    d = out.pointer_context.shape[1]
    d_gate_input = d_gate_logit[:, None] * cache.gate_w
    # in the forward pass this was: pointer_weights = attention weights averaged over the heads,
    # with context and weights = target_attention(query, history_emb); gate_input = [context; hidden]
    heads = cache.attention.weights.shape[1]
    d_attention_weights = np.broadcast_to(
        (d_weights / heads)[:, None, None, :], cache.attention.weights.shape
    )
    attention_grads, d_query, d_history_emb = target_attention_backward(
        cache.attention, d_gate_input[:, :d], d_attention_weights
    )
    params = PointerGeneratorParams(
        attention=attention_grads,
        gate_w=d_gate_logit @ cache.gate_input,
        gate_b=np.asarray([d_gate_logit.sum()], dtype=d_gate_logit.dtype),
    )
    return PointerGeneratorGrads(params, d_query, d_history_emb, d_generator_logits, d_gate_input[:, d:])
