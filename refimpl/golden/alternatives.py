"""Other legitimate float32 evaluation orders, run by the generator to measure float32 tolerances.

A float32 tolerance must admit every correct float32 implementation, not only ours. Each function here
computes a component's tensors from the same (float32) inputs in a different, equally correct order;
its worst error against the float64 golden is one ingredient of the tolerance (spec/golden.md).

- `fortran_order` (every component): the reference on column-major copies of every float input, so
  every BLAS product runs with the other transpose flags and blocking.
- `per_head_logsumexp` (the attention family): projections through `einsum` (no BLAS), queries scaled
  before the dot product (as torch does), a loop over heads, the softmax as `exp(s - logsumexp(s))`,
  and a hand-written backward in the same style.
- `online_softmax` (the attention family): as flash attention orders it: the softmax and the context
  in one pass over blocks of keys, rescaled at every new maximum, and the softmax backward through
  `sum_j w_ij d_w_ij = d_context_i . context_i`.
- `logsumexp_softmax` (sampled softmax): as torch's autograd orders it: the loss through the
  logsumexp of the masked logits, the softmax of the backward a second pass of exponentials
  `exp(s - logsumexp(s))` (the reference takes it from the logsumexp's own exponentials), the
  temperature a division.
- `other_form` (linear attention): the explicit form `diag(A 1 + eps)^-1 A V` for the factored
  component and the factored form for the explicit component.

An alternative returns the tensors it computes, by golden name; tensors it does not compute (an
intermediate of the other form) are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from refimpl.cases._base import ComponentFn, Config, Tensors
from refimpl.cases.linear_attention import (
    linear_attention_explicit_reference,
    linear_attention_reference,
)

Alternative = Callable[[ComponentFn, Tensors, Tensors, Config, Tensors], Tensors]
"""`alternative(reference, inputs, params, config, upstream) -> tensors`, all float inputs float32."""

Array = NDArray[Any]


def _fortran(tensors: Tensors) -> Tensors:
    return {k: np.asarray(v, order="F") if v.dtype.kind == "f" else v for k, v in tensors.items()}


def fortran_order(
    reference: ComponentFn, inputs: Tensors, params: Tensors, config: Config, upstream: Tensors
) -> Tensors:
    """The reference on column-major copies of every float tensor."""
    return reference(_fortran(inputs), _fortran(params), config, _fortran(upstream)).flat()


KEY_BLOCK = 4  # keys per block of the online softmax (small, so even the small cases have several)


def _online_softmax_context(scores: Array, valid: Array, v: Array) -> tuple[Array, Array]:
    """context (B, Q, D_h) and logsumexp (B, Q, 1) in one pass over blocks of keys, rescaling the
    running sum at every new maximum (the flash-attention forward)."""
    top = np.full(scores.shape[:2] + (1,), -np.inf, dtype=scores.dtype)
    total = np.zeros_like(top)
    acc = np.zeros(scores.shape[:2] + v.shape[-1:], dtype=scores.dtype)
    for start in range(0, scores.shape[-1], KEY_BLOCK):
        block = slice(start, start + KEY_BLOCK)
        s, ok = scores[..., block], valid[..., block]
        new_top = np.maximum(top, np.max(np.where(ok, s, -np.inf), axis=-1, keepdims=True))
        finite = np.isfinite(new_top)
        rescale = np.where(finite, np.exp(np.where(finite, top - np.where(finite, new_top, 0), 0)), 0)
        p = np.where(ok, np.exp(np.where(ok, s - np.where(finite, new_top, 0), 0)), 0)
        total = total * rescale + p.sum(axis=-1, keepdims=True)
        acc = acc * rescale + np.einsum("bql,ble->bqe", p, v[:, block])
        top = new_top
    has_key = total > 0
    context = acc / np.where(has_key, total, 1)
    log_sum = np.where(has_key, np.where(np.isfinite(top), top, 0) + np.log(np.where(has_key, total, 1)), 0)
    return context, log_sum


def _attention(
    params: Tensors, q_in: Array, kv_in: Array, key_mask: Array, query_mask: Array, heads: int,
    d_out: Array, online: bool = False,
) -> Tensors:
    """Multi-head attention forward and backward, head by head, softmax through logsumexp.

    `online`: the forward is the blocked online softmax and the backward uses
    sum_j w_ij d_w_ij = d_context_i . context_i (as flash attention does)."""
    b, q_len, d = q_in.shape
    length = kv_in.shape[1]
    width = d // heads
    scale = q_in.dtype.type(1.0 / np.sqrt(width))
    q = np.einsum("bqd,de->bqe", q_in, params["Wq"]) + params["bq"]
    k = np.einsum("bld,de->ble", kv_in, params["Wk"]) + params["bk"]
    v = np.einsum("bld,de->ble", kv_in, params["Wv"]) + params["bv"]
    row_valid = query_mask & key_mask.any(axis=1, keepdims=True)  # (B, Q)
    valid = row_valid[:, :, None] & key_mask[:, None, :]  # (B, Q, L)
    weights = np.zeros((b, heads, q_len, length), dtype=q_in.dtype)
    context = np.zeros_like(q)
    for h in range(heads):
        cols = slice(h * width, (h + 1) * width)
        scores = np.einsum("bqe,ble->bql", q[..., cols] * scale, k[..., cols])
        if online:
            context[..., cols], log_sum = _online_softmax_context(scores, valid, v[..., cols])
        else:
            masked = np.where(valid, scores, -np.inf)
            top = np.max(masked, axis=-1, keepdims=True, initial=-np.inf)
            top = np.where(np.isfinite(top), top, 0)
            total = np.sum(np.where(valid, np.exp(np.where(valid, masked - top, 0)), 0), axis=-1, keepdims=True)
            log_sum = top + np.log(np.where(total > 0, total, 1))
        weights[:, h] = np.where(valid, np.exp(np.where(valid, scores - log_sum, 0)), 0)
        if not online:
            context[..., cols] = np.einsum("bql,ble->bqe", weights[:, h], v[..., cols])
    out = np.where(row_valid[:, :, None], np.einsum("bqd,de->bqe", context, params["Wo"]) + params["bo"], 0)

    d_projected = np.where(row_valid[:, :, None], d_out, 0)
    d_context = np.einsum("bqe,de->bqd", d_projected, params["Wo"])
    d_q, d_k, d_v = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for h in range(heads):
        cols = slice(h * width, (h + 1) * width)
        w = weights[:, h]
        d_w = np.einsum("bqe,ble->bql", d_context[..., cols], v[..., cols])
        d_v[..., cols] = np.einsum("bql,bqe->ble", w, d_context[..., cols])
        if online:
            row_sum = np.sum(d_context[..., cols] * context[..., cols], axis=-1)[..., None]
        else:
            row_sum = np.sum(d_w * w, axis=-1, keepdims=True)
        d_scores = w * (d_w - row_sum)
        d_q[..., cols] = np.einsum("bql,ble->bqe", d_scores, k[..., cols]) * scale
        d_k[..., cols] = np.einsum("bql,bqe->ble", d_scores, q[..., cols] * scale)
    grads = {"d_Wo": np.einsum("bqd,bqe->de", context, d_projected), "d_bo": d_projected.sum(axis=(0, 1))}
    for name, x, d_y in (("q", q_in, d_q), ("k", kv_in, d_k), ("v", kv_in, d_v)):
        grads[f"d_W{name}"] = np.einsum("bnd,bne->de", x, d_y)
        grads[f"d_b{name}"] = d_y.sum(axis=(0, 1))
    d_q_in = np.einsum("bqe,de->bqd", d_q, params["Wq"])
    d_kv_in = np.einsum("ble,de->bld", d_k, params["Wk"]) + np.einsum("ble,de->bld", d_v, params["Wv"])
    return {"out": out, "attn_weights": weights, "context": context, "d_q_in": d_q_in, "d_kv_in": d_kv_in,
            **grads}


def _attention_family(
    inputs: Tensors, params: Tensors, config: Config, upstream: Tensors, online: bool
) -> Tensors:
    """`attention`, `mhsa` or `target_attention` (told apart by their input names), head by head."""
    heads = int(config["num_heads"])
    if "x" in inputs:  # mhsa: x is both queries and keys, mask both query and key mask
        x, mask = inputs["x"], inputs["mask"]
        result = _attention(params, x, x, mask, mask, heads, upstream["d_out"], online)
        result["d_x"] = result.pop("d_q_in") + result.pop("d_kv_in")
        return result
    if "query" in inputs:  # target_attention: one query per row
        query = inputs["query"][:, None, :]
        every_query = np.ones(query.shape[:2], dtype=bool)
        result = _attention(params, query, inputs["seq"], inputs["mask"], every_query, heads,
                            upstream["d_out"][:, None, :], online)
        squeezed = {"out": result["out"][:, 0], "attn_weights": result["attn_weights"][:, :, 0],
                    "context": result["context"][:, 0], "d_query": result.pop("d_q_in")[:, 0],
                    "d_seq": result.pop("d_kv_in")}
        return {**result, **squeezed}
    return _attention(params, inputs["q_in"], inputs["kv_in"], inputs["key_mask"], inputs["query_mask"],
                      heads, upstream["d_out"], online)


def per_head_logsumexp(
    reference: ComponentFn, inputs: Tensors, params: Tensors, config: Config, upstream: Tensors
) -> Tensors:
    """The attention family head by head, the softmax as exp(s - logsumexp(s))."""
    return _attention_family(inputs, params, config, upstream, online=False)


def online_softmax(
    reference: ComponentFn, inputs: Tensors, params: Tensors, config: Config, upstream: Tensors
) -> Tensors:
    """The attention family as flash attention orders it: blocked online softmax, and the softmax
    backward through d_context . context."""
    return _attention_family(inputs, params, config, upstream, online=True)


def logsumexp_softmax(
    reference: ComponentFn, inputs: Tensors, params: Tensors, config: Config, upstream: Tensors
) -> Tensors:
    """sampled_softmax with its loss through logsumexp and the softmax as exp(s - logsumexp(s))."""
    user, positive, negatives = inputs["user"], inputs["positive"], inputs["negatives"]
    shared = negatives.ndim == 2
    tau = user.dtype.type(config.get("temperature", 1.0))
    positive_logits = np.einsum("bd,bd->b", user, positive) / tau
    negative_logits = (user @ negatives.T if shared else np.einsum("bd,bnd->bn", user, negatives)) / tau
    if config.get("logq_correction", False):
        positive_logits = positive_logits - np.log(inputs["positive_q"])
        negative_logits = negative_logits - np.log(inputs["negative_q"])
    hits = np.broadcast_to(inputs["negative_ids"], negative_logits.shape) == inputs["positive_ids"][:, None]
    kept = ~hits if config.get("remove_accidental_hits", True) else np.ones_like(hits)
    with_positive = config.get("denominator", "with_positive") == "with_positive"
    logits = np.concatenate([positive_logits[:, None], negative_logits], axis=1)  # (B, 1 + N)
    valid = np.concatenate([np.full((len(logits), 1), with_positive), kept], axis=1)
    counted = valid.any(axis=1)
    top = np.max(np.where(valid, logits, -np.inf), axis=1, initial=-np.inf)
    top = np.where(counted, top, 0)
    total = np.sum(np.where(valid, np.exp(np.where(valid, logits - top[:, None], 0)), 0), axis=1)
    log_sum = top + np.log(np.where(counted, total, 1))
    row_losses = np.where(counted, log_sum - positive_logits, 0)
    count = max(int(counted.sum()), 1)
    probs = np.where(valid, np.exp(np.where(valid, logits - log_sum[:, None], 0)), 0)
    d_rows = upstream["d_loss"] * counted / count
    d_logits = d_rows[:, None] * probs
    d_logits[:, 0] -= d_rows  # -s_b in l_b
    d_scores = d_logits / tau
    d_positive_score, d_negative_scores = d_scores[:, 0], d_scores[:, 1:]
    if shared:
        d_user = d_positive_score[:, None] * positive + d_negative_scores @ negatives
        d_negatives = d_negative_scores.T @ user
    else:
        d_user = d_positive_score[:, None] * positive + np.einsum("bn,bnd->bd", d_negative_scores, negatives)
        d_negatives = d_negative_scores[:, :, None] * user[:, None, :]
    result = {
        "loss": np.asarray(row_losses.sum() / count, dtype=user.dtype), "row_losses": row_losses,
        "positive_logits": positive_logits, "negative_logits": negative_logits,
        "d_user": d_user, "d_positive": d_positive_score[:, None] * user, "d_negatives": d_negatives,
    }
    if config.get("logq_correction", False):
        d_negative_logits = d_logits[:, 1:].sum(axis=0) if shared else d_logits[:, 1:]
        result["d_positive_q"] = -d_logits[:, 0] / inputs["positive_q"]
        result["d_negative_q"] = -d_negative_logits / inputs["negative_q"]
    return result


def _other_linear_form(other: ComponentFn) -> Alternative:
    def alternative(
        reference: ComponentFn, inputs: Tensors, params: Tensors, config: Config, upstream: Tensors
    ) -> Tensors:
        return other(inputs, params, config, upstream).flat()

    return alternative


ALTERNATIVES: dict[str, dict[str, Alternative]] = {
    "attention": {"per_head_logsumexp": per_head_logsumexp, "online_softmax": online_softmax},
    "mhsa": {"per_head_logsumexp": per_head_logsumexp, "online_softmax": online_softmax},
    "target_attention": {"per_head_logsumexp": per_head_logsumexp, "online_softmax": online_softmax},
    "sampled_softmax": {"logsumexp_softmax": logsumexp_softmax},
    "linear_attention": {"other_form": _other_linear_form(linear_attention_explicit_reference)},
    "linear_attention_explicit": {"other_form": _other_linear_form(linear_attention_reference)},
}
GENERIC: dict[str, Alternative] = {"fortran_order": fortran_order}


def alternatives_for(component: str) -> dict[str, Alternative]:
    """Every alternative evaluation the generator runs for `component`, by name, sorted."""
    found = {**GENERIC, **ALTERNATIVES.get(component, {})}
    return dict(sorted(found.items()))
