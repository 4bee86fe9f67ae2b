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
from refimpl.nn.linear import affine, affine_backward

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
    """phi(x) element-wise, in the dtype of x. Every phi is max(x, 0) + tail(x): tail = log1p(e^-|x|)
    for softplus (log(1 + e^x) without overflow), e^min(x, 0) for elu+1 (x + 1 above 0, e^x below)
    and 0 for relu."""
    if name == "relu":
        return np.maximum(x, 0)
    if name == "softplus":
        return np.maximum(x, 0) + log1p(np.exp(-np.abs(x)))
    return np.maximum(x, 0) + np.exp(np.minimum(x, 0))


def feature_map_derivative(name: str, phi: Array) -> Array:
    """phi'(x) from phi(x) itself: softplus' = sigmoid(x) = 1 - e^-phi (one_minus_exp_neg, accurate for tiny
    phi), relu' = [phi > 0] (0 at x = 0), elu+1' = min(phi, 1) (e^x below 0, 1 above).
    A masked (zeroed) row of phi gets derivative 0, which is what the mask needs anyway."""
    if name == "softplus":
        return one_minus_exp_neg(phi)
    if name == "relu":
        return (phi > 0).astype(phi.dtype)
    return np.minimum(phi, 1)


# numpy's float32 log1p and expm1 are scalar loops, 3-5x slower than its vectorized float32 log, exp
# and tanh (measured: 40% of this kernel's float32 time); in float32 the two functions below compute
# them from those by exact identities, to within a few ulps (tests/test_linear_attention.py holds
# them to np.log1p and np.expm1). In float64 numpy's own are the faster, and are used.


def log1p(t: Array) -> Array:
    """log(1 + t) for t >= 0, accurate for tiny t. float32: log(u) - ((u - 1) - t) / u with u = 1 + t
    rounded: (u - 1) - t is u's rounding error c exactly, and log(1 + t) = log(u - c) = log(u) - c / u
    to working precision (at u = 1 this gives t)."""
    if t.dtype != np.float32:
        return np.log1p(t)
    u = 1 + t
    result: Array = np.log(u) - ((u - 1) - t) / u
    return result


def one_minus_exp_neg(phi: Array) -> Array:
    """1 - e^-phi (= -expm1(-phi)) for phi >= 0, without cancellation for small phi. float32:
    2 tanh(phi/2) / (1 + tanh(phi/2)), since tanh(phi/2) = (1 - e^-phi) / (1 + e^-phi)."""
    if phi.dtype != np.float32:
        return -np.expm1(-phi)
    half = np.tanh(phi / 2)
    result: Array = 2 * half / (1 + half)
    return result


def _check_config(cfg: LinearAttentionConfig, d: int) -> tuple[int, str, float]:
    heads = require_positive_int("cfg.num_heads", cfg.num_heads)
    if d % heads != 0:
        raise ValueError(f"cfg.num_heads: {heads} heads do not divide the width D = {d}")
    phi = require_choice("cfg.phi", cfg.phi, PHI_CHOICES)
    eps = cfg.eps
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"cfg.eps: expected a positive finite float, got {eps!r}")
    return heads, phi, float(eps)


def check_inputs(
    params: AttentionParams,
    q_in: Array,
    kv_in: Array,
    key_mask: BoolArray,
    cfg: LinearAttentionConfig,
    query_mask: BoolArray | None = None,
) -> tuple[BoolArray, int, str, float]:
    """Validate; returns the query mask (all True when None), the heads, phi and eps."""
    shapes = Shapes()
    shapes.check_float("q_in", q_in, ("B", "Q", "D"))
    shapes.check_float("kv_in", kv_in, ("B", "L", "D"))
    shapes.check_bool("key_mask", key_mask, ("B", "L"))
    if query_mask is None:
        query_mask = np.ones(q_in.shape[:2], dtype=bool)
    shapes.check_bool("query_mask", query_mask, ("B", "Q"))
    check_attention_params(params, shapes)
    heads, phi, eps = _check_config(cfg, shapes.size("D"))
    return query_mask, heads, phi, eps


def project(
    params: AttentionParams,
    q_in: Array,
    kv_in: Array,
    key_mask: BoolArray,
    cfg: LinearAttentionConfig,
    query_mask: BoolArray | None = None,
) -> tuple[Projection, float]:
    """Validate, project into heads, apply phi and the key mask (after phi). Returns eps too."""
    query_mask, heads, phi, eps = check_inputs(params, q_in, kv_in, key_mask, cfg, query_mask)
    # q and k before phi are not kept: phi' is computed from phi (feature_map_derivative)
    phi_q = feature_map(phi, _split_heads(affine(q_in, params.Wq, params.bq), heads))
    # masked AFTER phi, with where rather than a product: phi(0) != 0, and inf * 0 would be NaN
    phi_k = np.where(
        key_mask[:, None, :, None],
        feature_map(phi, _split_heads(affine(kv_in, params.Wk, params.bk), heads)),
        0,
    )
    v = _split_heads(affine(kv_in, params.Wv, params.bv), heads)
    row_valid = query_mask & key_mask.any(axis=1, keepdims=True)
    proj = Projection(params, q_in, kv_in, v, phi_q, phi_k, key_mask, row_valid, phi, heads)
    return proj, eps


def _zero_invalid_rows(proj: Projection, per_query: Array) -> Array:
    """per_query (B, H, Q, *) with its invalid query rows zeroed: the attention weights and the
    context of a masked query (or of a batch element without a valid key) are zero, as in the
    softmax kernel (spec/attention.md)."""
    zeroed: Array = np.where(proj.row_valid[:, None, :, None], per_query, 0)
    return zeroed


def project_output(proj: Projection, context: Array) -> Array:
    """out = r (context Wo + bo): masked query rows, and rows without a valid key, are zero."""
    out: Array = np.where(proj.row_valid[:, :, None], affine(context, proj.params.Wo, proj.params.bo), 0)
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
    kv_summary = _keys_first(proj.phi_k) @ proj.v  # S = K'^T v
    key_sum = proj.phi_k.sum(axis=2)  # z = K'^T 1
    degree = (proj.phi_q @ key_sum[..., None])[..., 0]  # deg_i = Q'_i . z
    denominator = degree + eps
    numerator = proj.phi_q @ kv_summary  # n_i = Q'_i S
    context = _merge_heads(_zero_invalid_rows(proj, numerator / denominator[..., None]))
    cache = LinearAttentionCache(proj, kv_summary, key_sum, degree, denominator, context)
    return project_output(proj, context), cache


def _keys_first(x: Array) -> Array:
    """x^T per batch element and head: (B, H, N, D_h) -> (B, H, D_h, N)."""
    return x.transpose(0, 1, 3, 2)


def _output_backward(proj: Projection, context: Array, d_out: Array) -> tuple[Array, Array, Array]:
    """d_Wo, d_bo and d_context (B, H, Q, D_h) of out = r (context Wo + bo)."""
    check_upstream("d_out", d_out, context.shape, context.dtype)
    # in the forward pass this was: out = where(r, context @ Wo + bo, 0)
    d_projected = np.where(proj.row_valid[:, :, None], d_out, 0)
    d_Wo, d_bo, d_context = affine_backward(context, proj.params.Wo, d_projected)
    return d_Wo, d_bo, _split_heads(d_context, proj.heads)


def _projection_backward(
    proj: Projection, d_phi_q: Array, d_phi_k: Array, d_v: Array, d_Wo: Array, d_bo: Array
) -> tuple[AttentionParams, Array, Array]:
    """The shared front of both forms, backward: every parameter gradient (d_Wo and d_bo come from
    `_output_backward`), d_q_in and d_kv_in."""
    # in the forward pass this was: phi_q = phi(q),  q = q_in @ Wq + bq
    d_q = d_phi_q * feature_map_derivative(proj.phi, proj.phi_q)
    d_Wq, d_bq, d_q_in = affine_backward(proj.q_in, proj.params.Wq, _merge_heads(d_q))
    # in the forward pass this was: phi_k = where(key_mask, phi(k), 0),  k = kv_in @ Wk + bk
    d_k = np.where(
        proj.key_mask[:, None, :, None], d_phi_k * feature_map_derivative(proj.phi, proj.phi_k), 0
    )
    d_Wk, d_bk, d_kv_in_keys = affine_backward(proj.kv_in, proj.params.Wk, _merge_heads(d_k))
    # in the forward pass this was: v = kv_in @ Wv + bv
    d_Wv, d_bv, d_kv_in_values = affine_backward(proj.kv_in, proj.params.Wv, _merge_heads(d_v))
    grads = AttentionParams(Wq=d_Wq, bq=d_bq, Wk=d_Wk, bk=d_bk, Wv=d_Wv, bv=d_bv, Wo=d_Wo, bo=d_bo)
    return grads, d_q_in, d_kv_in_keys + d_kv_in_values


def linear_attention_backward(
    cache: LinearAttentionCache, d_out: Array
) -> tuple[AttentionParams, Array, Array]:
    """Gradients of the params (as AttentionParams), d_q_in (B, Q, D) and d_kv_in (B, L, D), each
    step inverting one line of `attend_linear`, last line first."""
    proj = cache.proj
    d_Wo, d_bo, d_context = _output_backward(proj, cache.context, d_out)
    # in the forward pass this was: context = r * numerator / denominator
    # (d_context is already zero at invalid rows, so r needs no second application here)
    context = _split_heads(cache.context, proj.heads)
    d_numerator = d_context / cache.denominator[..., None]
    d_denominator = -np.einsum("bhqd,bhqd->bhq", d_numerator, context)  # -sum(d_ctx * n) / den^2
    # in the forward pass this was: numerator = phi_q @ kv_summary
    d_phi_q = d_numerator @ _keys_first(cache.kv_summary)
    d_kv_summary = _keys_first(proj.phi_q) @ d_numerator
    # in the forward pass this was: denominator = degree + eps,  degree = phi_q @ key_sum
    d_phi_q = d_phi_q + d_denominator[..., None] * cache.key_sum[:, :, None, :]
    d_key_sum = (d_denominator[:, :, None, :] @ proj.phi_q)[:, :, 0, :]
    # in the forward pass this was: kv_summary = phi_k^T @ v,  key_sum = phi_k summed over keys
    d_phi_k = proj.v @ _keys_first(d_kv_summary) + d_key_sum[:, :, None, :]
    d_v = proj.phi_k @ d_kv_summary
    return _projection_backward(proj, d_phi_q, d_phi_k, d_v, d_Wo, d_bo)


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
    affinity = proj.phi_q @ _keys_first(proj.phi_k)  # A = Q' K'^T  (B, H, Q, L)
    degree = affinity.sum(axis=-1)  # A 1
    denominator = degree + eps
    weights = _zero_invalid_rows(proj, affinity / denominator[..., None])  # W = diag(r) ... A
    context = _merge_heads(weights @ proj.v)
    cache = ExplicitCache(proj, weights, degree, denominator, context)
    return project_output(proj, context), cache


def linear_attention_explicit_backward(
    cache: ExplicitCache, d_out: Array
) -> tuple[AttentionParams, Array, Array]:
    """Gradients of the explicit form, each step inverting one line of `attend_explicit`."""
    proj = cache.proj
    d_Wo, d_bo, d_context = _output_backward(proj, cache.context, d_out)
    # in the forward pass this was: context = weights @ v
    d_weights = d_context @ _keys_first(proj.v)
    d_v = _keys_first(cache.weights) @ d_context
    # in the forward pass this was: weights = r * affinity / (affinity summed over keys + eps)
    # (d_weights is already zero at invalid rows)
    d_affinity = (
        d_weights - np.sum(d_weights * cache.weights, axis=-1, keepdims=True)
    ) / cache.denominator[..., None]
    # in the forward pass this was: affinity = phi_q @ phi_k^T
    d_phi_q = d_affinity @ proj.phi_k
    d_phi_k = _keys_first(d_affinity) @ proj.phi_q
    return _projection_backward(proj, d_phi_q, d_phi_k, d_v, d_Wo, d_bo)


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
