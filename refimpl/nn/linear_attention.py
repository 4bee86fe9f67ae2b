"""Kernelized linear attention with degree normalization (IFA's FSM and RAM).

For each head h (width D_h = D / H), with the projections of the attention kernel
(refimpl/nn/attention.py) and a feature map phi applied element-wise:

    q = q_in Wq + bq,   k = kv_in Wk + bk,   v = kv_in Wv + bv          split into H heads
    Q' = phi(q),        K' = m * phi(k)                                  masked AFTER phi
    S  = K'^T v          (D_h, D_h)   kv_summary: sum_j phi(k_j) v_j^T
    z  = K'^T 1          (D_h,)       key_sum:    sum_j phi(k_j)
    deg_i = Q'_i . z                  degree of query i (row sum of A = Q' K'^T)
    ctx_i = r_i Q'_i S / (deg_i + eps)     r_i = query_mask_i and any_j key_mask_j
    out_i = r_i (ctx_i Wo + bo)

This is IFA's degree-normalized linear attention `D^-1 phi(Q) (phi(K)^T V)` with
`D = diag(phi(Q) phi(K)^T 1)`, computed in O((Q + L) D_h^2) per head instead of O(Q L D_h).
It equals, up to round-off, the explicit form (the executable definition, below):

    A = Q' K'^T   (Q, L),   W = diag(r) diag(A 1 + eps)^-1 A,   ctx = W v.

phi: softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|) (default, strictly positive), relu(x) = max(x, 0),
elu+1(x) = x + 1 for x > 0 else e^x. No 1/sqrt(D_h) scaling. eps = 1e-6 by default.

Shapes: q_in (B, Q, D), kv_in (B, L, D), key_mask (B, L), query_mask (B, Q), Wq, Wk, Wv, Wo (D, D)
used as `x @ W`, biases (D,), out (B, Q, D). Params are `AttentionParams`, the same layout as the
softmax attention kernel.

Edge cases: masked keys contribute nothing (their phi(k) rows are zeroed after phi, because
phi(0) != 0 for softplus and elu+1). At an invalid row r_i = 0 (a masked query, or any query of a
batch element whose keys are all masked) the attention weights, the context and the output are zero
and the row passes no gradient, the rule of the softmax kernel; phi_q and the degree are computed
for every row. A query whose
degree is zero (possible with relu) gets context 0 / eps = 0 and stays finite; its gradient is
finite because every feature where phi(q) > 0 has zero key mass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, BoolArray, Shapes, require_choice, require_positive_int
from refimpl.nn._upstream import check_upstream
from refimpl.nn.attention import (
    AttentionParams,
    _merge_heads,
    _split_heads,
    check_attention_params,
)
from refimpl.nn.linear import affine, affine_backward, affine_param_grads

__all__ = [
    "ExplicitCache",
    "LinearAttentionCache",
    "LinearAttentionConfig",
    "linear_attention_backward",
    "linear_attention_explicit_backward",
    "linear_attention_explicit_forward",
    "linear_attention_forward",
    "linear_self_attention_backward",
    "linear_self_attention_forward",
]

PHI_CHOICES = ("softplus", "relu", "elu+1")


@dataclass(frozen=True)
class LinearAttentionConfig:
    num_heads: int = 1
    phi: str = "softplus"
    eps: float = 1e-6


@dataclass(frozen=True)
class Projection:
    """The shared front of both forms: projected heads and their feature maps."""

    params: AttentionParams
    q_in: Array  # (B, Q, D)
    kv_in: Array  # (B, L, D)
    v: Array  # (B, H, L, D_h)
    phi_q: Array  # (B, H, Q, D_h)
    phi_k: Array  # (B, H, L, D_h), masked rows zero
    key_mask: BoolArray  # (B, L)
    row_valid: BoolArray  # (B, Q)
    phi: str
    heads: int


@dataclass(frozen=True)
class LinearAttentionCache:
    proj: Projection
    kv_summary: Array  # (B, H, D_h, D_h)  S = phi(K)^T V
    key_sum: Array  # (B, H, D_h)         z = phi(K)^T 1
    degree: Array  # (B, H, Q)           phi(q_i) . z
    denominator: Array  # (B, H, Q)      degree + eps
    context: Array  # (B, Q, D), heads merged


@dataclass(frozen=True)
class ExplicitCache:
    proj: Projection
    weights: Array  # (B, H, Q, L)  A / (A 1 + eps)
    degree: Array  # (B, H, Q)     A 1
    denominator: Array  # (B, H, Q)
    context: Array  # (B, Q, D)


def feature_map(name: str, x: Array) -> Array:
    """phi(x) element-wise, in the dtype of x."""
    return _feature_map_in_place(name, x.copy())


def _feature_map_in_place(name: str, x: Array) -> Array:
    """phi(x), overwriting x (a buffer the caller owns): every phi is max(x, 0) + tail(x), with
    tail = log1p(e^-|x|) for softplus (no overflow; ~10x faster than np.logaddexp, a scalar loop),
    e^min(x, 0) for elu+1 (x + 1 above 0, e^x below) and 0 for relu. In place because each fresh
    (N, D) temporary costs a pass and page faults."""
    if name == "relu":
        return np.maximum(x, 0, out=x)
    if name == "softplus":
        tail = np.copysign(x, -1.0)  # -|x| in one pass
        np.exp(tail, out=tail)
        np.log1p(tail, out=tail)
    else:
        tail = np.minimum(x, 0)
        np.exp(tail, out=tail)
    np.maximum(x, 0, out=x)
    x += tail
    return x


def feature_map_derivative(name: str, phi: Array) -> Array:
    """phi'(x) from phi(x) itself, one pass each: softplus' = sigmoid(x) = 1 - e^-phi (as -expm1,
    accurate for tiny phi), relu' = [phi > 0] (0 at x = 0), elu+1' = min(phi, 1) (e^x below 0).
    A masked (zeroed) row of phi gets derivative 0, which is what the mask needs anyway."""
    if name == "softplus":
        derivative = np.negative(phi)  # one buffer, transformed in place: -expm1(-phi)
        np.expm1(derivative, out=derivative)
        np.negative(derivative, out=derivative)
        return derivative
    if name == "relu":
        return (phi > 0).astype(phi.dtype)
    return np.minimum(phi, 1)


def _check_config(cfg: LinearAttentionConfig, d: int) -> tuple[int, str, float]:
    heads = require_positive_int("cfg.num_heads", cfg.num_heads)
    if d % heads != 0:
        raise ValueError(f"cfg.num_heads: {heads} heads do not divide the width D = {d}")
    phi = require_choice("cfg.phi", cfg.phi, PHI_CHOICES)
    eps = cfg.eps
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"cfg.eps: expected a positive finite float, got {eps!r}")
    return heads, phi, float(eps)


def project(
    params: AttentionParams,
    q_in: Array,
    kv_in: Array,
    key_mask: BoolArray,
    cfg: LinearAttentionConfig,
    query_mask: BoolArray | None = None,
) -> tuple[Projection, float]:
    """Validate, project into heads, apply phi and the key mask (after phi). Returns eps too."""
    shapes = Shapes()
    shapes.check_float("q_in", q_in, ("B", "Q", "D"))
    shapes.check_float("kv_in", kv_in, ("B", "L", "D"))
    shapes.check_bool("key_mask", key_mask, ("B", "L"))
    if query_mask is None:
        query_mask = np.ones(q_in.shape[:2], dtype=bool)
    shapes.check_bool("query_mask", query_mask, ("B", "Q"))
    check_attention_params(params, shapes)
    heads, phi, eps = _check_config(cfg, shapes.size("D"))

    # q and k before phi are not kept: phi' is computed from phi (feature_map_derivative)
    phi_q = _feature_map_in_place(phi, _split_heads(affine(q_in, params.Wq, params.bq), heads))
    phi_k = _feature_map_in_place(phi, _split_heads(affine(kv_in, params.Wk, params.bk), heads))
    if not key_mask.all():  # zeroed in place, after phi; where, not a multiply: inf * 0 would be NaN
        np.copyto(phi_k, 0, where=~key_mask[:, None, :, None])
    v = _split_heads(affine(kv_in, params.Wv, params.bv), heads)
    row_valid = query_mask & key_mask.any(axis=1, keepdims=True)
    proj = Projection(params, q_in, kv_in, v, phi_q, phi_k, key_mask, row_valid, phi, heads)
    return proj, eps


def _zero_invalid_rows(proj: Projection, per_query: Array) -> None:
    """Zero, in place, the rows of a (B, H, Q, *) array this form owns at invalid query rows: the
    attention weights and the context of a masked query (or of a batch element without a valid key)
    are zero, as in the softmax kernel (spec/attention.md)."""
    if not proj.row_valid.all():
        np.copyto(per_query, 0, where=~proj.row_valid[:, None, :, None])


def project_output(proj: Projection, context: Array) -> Array:
    """out = r (context Wo + bo): masked query rows, and rows without a valid key, are zero."""
    out = affine(context, proj.params.Wo, proj.params.bo)
    out[~proj.row_valid] = 0
    return out


def linear_attention_forward(
    params: AttentionParams,
    q_in: Array,
    kv_in: Array,
    key_mask: BoolArray,
    cfg: LinearAttentionConfig,
    query_mask: BoolArray | None = None,
) -> tuple[Array, LinearAttentionCache]:
    """IFA's linear attention, O((Q + L) D_h^2) per head; returns out (B, Q, D)."""
    proj, eps = project(params, q_in, kv_in, key_mask, cfg, query_mask)
    return attend_linear(proj, eps)


def attend_linear(proj: Projection, eps: float) -> tuple[Array, LinearAttentionCache]:
    """The linear form from projected, feature-mapped heads."""
    kv_summary = proj.phi_k.transpose(0, 1, 3, 2) @ proj.v
    key_sum = np.ones(proj.phi_k.shape[2], dtype=proj.phi_k.dtype) @ proj.phi_k  # BLAS, not np.sum
    degree = (proj.phi_q @ key_sum[..., None])[..., 0]
    denominator = degree + eps
    numerator = proj.phi_q @ kv_summary
    numerator /= denominator[..., None]
    _zero_invalid_rows(proj, numerator)
    context = _merge_heads(numerator)
    cache = LinearAttentionCache(proj, kv_summary, key_sum, degree, denominator, context)
    return project_output(proj, context), cache


def _output_backward(proj: Projection, context: Array, d_out: Array) -> tuple[Array, Array, Array]:
    """d_Wo, d_bo and d_context (B, H, Q, D_h) of out = r (context Wo + bo)."""
    check_upstream("d_out", d_out, context.shape, context.dtype)
    # d_out is only read below, so with every row valid it is used as is, without a masked copy
    d_projected = d_out if proj.row_valid.all() else np.where(proj.row_valid[:, :, None], d_out, 0)
    d_Wo, d_bo, d_context = affine_backward(context, proj.params.Wo, d_projected)
    return d_Wo, d_bo, _split_heads(d_context, proj.heads)


def _query_backward(proj: Projection, d_phi_q: Array) -> tuple[Array, Array, Array]:
    """d_Wq, d_bq and d_q_in from d_phi_q, which is this backward's own buffer and is scaled by
    phi' in place."""
    d_phi_q *= feature_map_derivative(proj.phi, proj.phi_q)
    return affine_backward(proj.q_in, proj.params.Wq, _merge_heads(d_phi_q))


def _value_backward(proj: Projection, d_v: Array) -> tuple[Array, Array, Array]:
    """d_Wv, d_bv and the value path's share of d_kv_in."""
    return affine_backward(proj.kv_in, proj.params.Wv, _merge_heads(d_v))


def _key_backward(proj: Projection, d_phi_k: Array, d_kv_in: Array) -> tuple[Array, Array]:
    """d_Wk and d_bk; adds the key path's share to d_kv_in (this backward's own buffer) in place,
    which saves the (B, L, D) d_x buffer `affine_backward` would allocate. d_phi_k (also our
    own) is scaled in place by phi' and the key mask."""
    d_phi_k *= feature_map_derivative(proj.phi, proj.phi_k)
    if not proj.key_mask.all():
        np.copyto(d_phi_k, 0, where=~proj.key_mask[:, None, :, None])
    d_k = _merge_heads(d_phi_k)
    d_kv_in += d_k @ proj.params.Wk.T
    return affine_param_grads(proj.kv_in, d_k)


def linear_attention_backward(
    cache: LinearAttentionCache, d_out: Array
) -> tuple[AttentionParams, Array, Array]:
    """Gradients of the params (as AttentionParams), d_q_in (B, Q, D) and d_kv_in (B, L, D).

    With ctx = n / den, n = Q' S, den = Q' z + eps:
    d_n = d_ctx / den, d_den = -sum(d_ctx * ctx) / den,
    d_Q' = d_n S^T + d_den z^T, d_S = Q'^T d_n, d_z = Q'^T d_den,
    d_K' = v d_S^T + 1 d_z^T, d_v = K' d_S.

    Stage by stage (output, normalization, query, value, key), each stage's (B, N, D) buffers are
    released before the next: the peak memory stays a few (B, N, D) arrays for any N.
    """
    proj = cache.proj
    d_Wo, d_bo, d_context = _output_backward(proj, cache.context, d_out)
    d_numerator, d_denominator = _normalization_backward(cache, d_context)
    del d_context
    d_kv_summary = proj.phi_q.transpose(0, 1, 3, 2) @ d_numerator
    d_key_sum = (d_denominator[:, :, None, :] @ proj.phi_q)[:, :, 0, :]
    d_phi_q = d_numerator @ cache.kv_summary.transpose(0, 1, 3, 2)
    del d_numerator
    d_phi_q += d_denominator[..., None] * cache.key_sum[:, :, None, :]
    d_Wq, d_bq, d_q_in = _query_backward(proj, d_phi_q)
    del d_phi_q
    d_Wv, d_bv, d_kv_in = _value_backward(proj, proj.phi_k @ d_kv_summary)
    d_phi_k = proj.v @ d_kv_summary.transpose(0, 1, 3, 2)
    d_phi_k += d_key_sum[:, :, None, :]
    d_Wk, d_bk = _key_backward(proj, d_phi_k, d_kv_in)
    grads = AttentionParams(Wq=d_Wq, bq=d_bq, Wk=d_Wk, bk=d_bk, Wv=d_Wv, bv=d_bv, Wo=d_Wo, bo=d_bo)
    return grads, d_q_in, d_kv_in


def _normalization_backward(cache: LinearAttentionCache, d_context: Array) -> tuple[Array, Array]:
    """d_numerator (B, H, Q, D_h) and d_denominator (B, H, Q) of ctx = numerator / denominator.
    d_context is this backward's own buffer and becomes d_numerator in place."""
    context = _split_heads(cache.context, cache.proj.heads)
    d_numerator = d_context
    d_numerator /= cache.denominator[..., None]
    # -sum(d_ctx * ctx) / den = -sum(d_n * ctx): row dot products, without a (Q, D_h) product array
    d_denominator: Array = -np.einsum("bhqd,bhqd->bhq", d_numerator, context)
    return d_numerator, d_denominator


def linear_attention_explicit_forward(
    params: AttentionParams,
    q_in: Array,
    kv_in: Array,
    key_mask: BoolArray,
    cfg: LinearAttentionConfig,
    query_mask: BoolArray | None = None,
) -> tuple[Array, ExplicitCache]:
    """The executable definition: A = phi(Q) phi(K)^T, ctx = diag(A 1 + eps)^-1 A V; O(Q L D_h)."""
    proj, eps = project(params, q_in, kv_in, key_mask, cfg, query_mask)
    return attend_explicit(proj, eps)


def attend_explicit(proj: Projection, eps: float) -> tuple[Array, ExplicitCache]:
    """The explicit form from projected, feature-mapped heads."""
    affinity = proj.phi_q @ proj.phi_k.transpose(0, 1, 3, 2)
    degree = affinity.sum(axis=-1)
    denominator = degree + eps
    weights = affinity  # normalized in place: the (Q, L) matrices dominate this form's memory
    weights /= denominator[..., None]
    _zero_invalid_rows(proj, weights)
    context = _merge_heads(weights @ proj.v)
    cache = ExplicitCache(proj, weights, degree, denominator, context)
    return project_output(proj, context), cache


def linear_attention_explicit_backward(
    cache: ExplicitCache, d_out: Array
) -> tuple[AttentionParams, Array, Array]:
    """Gradients of the explicit form: with W = A / (A 1 + eps),
    d_A = (d_W - sum_j(d_W * W)) / (A 1 + eps), d_Q' = d_A K', d_K' = d_A^T Q'."""
    proj = cache.proj
    d_Wo, d_bo, d_context = _output_backward(proj, cache.context, d_out)
    d_weights = d_context @ proj.v.transpose(0, 1, 3, 2)
    d_v = cache.weights.transpose(0, 1, 3, 2) @ d_context
    d_affinity = d_weights  # in place, as in the forward
    d_affinity -= np.sum(d_weights * cache.weights, axis=-1, keepdims=True)
    d_affinity /= cache.denominator[..., None]
    d_Wq, d_bq, d_q_in = _query_backward(proj, d_affinity @ proj.phi_k)
    d_Wv, d_bv, d_kv_in = _value_backward(proj, d_v)
    d_Wk, d_bk = _key_backward(proj, d_affinity.transpose(0, 1, 3, 2) @ proj.phi_q, d_kv_in)
    grads = AttentionParams(Wq=d_Wq, bq=d_bq, Wk=d_Wk, bk=d_bk, Wv=d_Wv, bv=d_bv, Wo=d_Wo, bo=d_bo)
    return grads, d_q_in, d_kv_in


def linear_self_attention_forward(
    params: AttentionParams, x: Array, mask: BoolArray, cfg: LinearAttentionConfig
) -> tuple[Array, LinearAttentionCache]:
    """Linear self attention (IFA's RAM over the candidate set): x feeds queries, keys and values."""
    shapes = Shapes()
    shapes.check_float("x", x, ("B", "L", "D"))
    shapes.check_bool("mask", mask, ("B", "L"))
    return linear_attention_forward(params, x, x, mask, cfg, query_mask=mask)


def linear_self_attention_backward(
    cache: LinearAttentionCache, d_out: Array
) -> tuple[AttentionParams, Array]:
    """Gradients of the params and d_x (the sum of its query and key/value paths)."""
    grads, d_q_in, d_kv_in = linear_attention_backward(cache, d_out)
    return grads, d_q_in + d_kv_in
