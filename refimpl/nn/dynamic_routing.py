"""ComiRec-DR's dynamic routing (ComiRec, KDD 2020, section 3.2, as its public code runs it): the
routing of Sabour et al. 2017 (CapsNet, eq. 1-3 and Procedure 1) with a separate bilinear map W_ij
for every behaviour POSITION i and interest j, routing logits starting at zero
(spec/dynamic_routing.md says how this differs from MIND's routing).

For a row (user) with behaviours e_i (i < L), mask m_i (True = real behaviour) and K interests j:

    u_ij   = W_ij e_i                     prediction vectors u_hat_{j|i} (eq. 2 of Sabour)
    b^0_ij = 0                            the logits start at zero (Procedure 1, line 2)
    repeat r = 0 .. t-1:
      c^r_ij = m_i exp(b^r_ij) / sum_k exp(b^r_ik)    softmax over INTERESTS (eq. 3 of Sabour), then
                                                      0 at padded i (as ComiRec's code)
      z^r_j  = sum_i c^r_ij u_ij                       s_j (eq. 2 of Sabour)
      v^r_j  = squash(z^r_j)                           (eq. 1 of Sabour)
      b^{r+1}_ij = b^r_ij + u_ij . v^r_j               the logits accumulate the agreement (Procedure 1, line 7)
    interests v_j = v^{t-1}_j

    squash(z) = |z|^2 / (1 + |z|^2) * z / sqrt(|z|^2 + 1e-9)   (refimpl.nn.capsule_routing.squash)

Shapes: items (B, L, D_in), mask (B, L) True = valid, W (L, K, D_in, D_out) with u_ij = e_i @ W[i, j]
(row-vector convention); intermediates mapped (B, L, K, D_out), logits and coefficients (B, L, K),
sums and interests (B, K, D_out). ComiRec's code stores the same numbers as one (1, L, K D_out, D_in)
tensor w with W[i, j, c, d] = w[0, i, j D_out + d, c].

Position matters: map W_i belongs to array slot i, whatever behaviour sits there. ComiRec's data
pipeline puts the oldest behaviour of the window in slot 0 and pads at the END; a caller that pads
at the front moves every behaviour to another map.

Gradient modes. `detach_routing=True` (default, as ComiRec's code: `stop_grad = True` routes on
`stop_gradient(u)` and its logits start as `stop_gradient(zeros)`): the final coefficients c^{t-1}
are constants for the gradient, which is then that of `frozen_dynamic_routing_forward` at
c = c^{t-1}. `detach_routing=False`: the exact gradient through every iteration and logit update.
There is no gradient into the logits' start: it is the constant 0, not an input.

Edge cases: a padded position (mask False) has c_ij = 0 for every j (its softmax is computed and
then zeroed, as ComiRec's `tf.where`), so it enters no sum and gets exactly zero gradient, whatever
its item vector; an all-padded row has z = 0, interests 0 and a zero gradient. With K = 1 every
valid c_i1 = 1 and the routing is squash(sum_i u_i1) after any number of iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, BoolArray, Shapes, require_positive_int
from refimpl.nn._upstream import check_upstream
from refimpl.nn.attention import softmax_backward
from refimpl.nn.capsule_routing import agreement, interest_sums, softmax_interests, squash, squash_backward

__all__ = [
    "DynamicRoutingCache",
    "DynamicRoutingConfig",
    "DynamicRoutingGrads",
    "DynamicRoutingParams",
    "dynamic_routing_backward",
    "dynamic_routing_forward",
    "frozen_dynamic_routing_forward",
]


@dataclass(frozen=True)
class DynamicRoutingParams:
    W: Array  # (L, K, D_in, D_out): one map per behaviour position i and interest j


@dataclass(frozen=True)
class DynamicRoutingConfig:
    iterations: int = 3  # t; ComiRec's code runs 3
    detach_routing: bool = True  # ComiRec's stop_grad = True


@dataclass(frozen=True)
class DynamicRoutingCache:
    cfg: DynamicRoutingConfig
    W: Array  # (L, K, D_in, D_out)
    items: Array  # (B, L, D_in)
    mask: BoolArray  # (B, L)
    mapped: Array  # (B, L, K, D_out) u_ij
    logits: tuple[Array, ...]  # b^r (B, L, K), r = 0 .. t-1 (b^0 = 0)
    coefficients: tuple[Array, ...]  # c^r (B, L, K), 0 at padded positions
    sums: tuple[Array, ...]  # z^r (B, K, D_out)
    interests: tuple[Array, ...]  # v^r (B, K, D_out)


@dataclass(frozen=True)
class DynamicRoutingGrads:
    W: Array  # (L, K, D_in, D_out)
    items: Array  # (B, L, D_in)


def _validate(params: DynamicRoutingParams, items: Array) -> Shapes:
    if not isinstance(params, DynamicRoutingParams):
        raise TypeError(f"params: expected DynamicRoutingParams, got {type(params).__name__}")
    shapes = Shapes()
    shapes.check_float("items", items, ("B", "L", "D_in"))
    shapes.check_float("W", params.W, ("L", "K", "D_in", "D_out"))
    if shapes.size("K") == 0:
        raise ValueError(f"W: expected at least one interest (L, K >= 1, D_in, D_out), got {params.W.shape}")
    return shapes


def _validate_config(cfg: DynamicRoutingConfig) -> None:
    if not isinstance(cfg, DynamicRoutingConfig):
        raise TypeError(f"cfg: expected DynamicRoutingConfig, got {type(cfg).__name__}")
    require_positive_int("cfg.iterations", cfg.iterations)
    if not isinstance(cfg.detach_routing, bool):
        raise TypeError(f"cfg.detach_routing: expected a bool, got {cfg.detach_routing!r}")


def _map(W: Array, items: Array) -> Array:
    """u_ij = e_i @ W[i, j] (B, L, K, D_out): per position i, (B, D_in) @ (D_in, K D_out)."""
    length, k, d_in, d_out = W.shape
    per_position = W.transpose(0, 2, 1, 3).reshape(length, d_in, k * d_out)  # (L, D_in, K D_out)
    mapped = items.transpose(1, 0, 2) @ per_position  # (L, B, K D_out)
    result: Array = mapped.reshape(length, items.shape[0], k, d_out).transpose(1, 0, 2, 3)
    return result


def _map_backward(W: Array, items: Array, d_mapped: Array) -> tuple[Array, Array]:
    """(d_W, d_items) of u_ij = e_i @ W[i, j]: d_W[i, j] = sum_b e_bi^T d_u_bij,
    d_e_bi = sum_j d_u_bij @ W[i, j]^T."""
    length, k, d_in, d_out = W.shape
    by_position = d_mapped.transpose(1, 0, 2, 3).reshape(length, items.shape[0], k * d_out)  # (L, B, K D_out)
    rows = items.transpose(1, 0, 2)  # (L, B, D_in)
    d_w = (rows.transpose(0, 2, 1) @ by_position).reshape(length, d_in, k, d_out).transpose(0, 2, 1, 3)
    per_position = W.transpose(0, 2, 1, 3).reshape(length, d_in, k * d_out)
    d_items: Array = (by_position @ per_position.transpose(0, 2, 1)).transpose(1, 0, 2)
    return np.ascontiguousarray(d_w), np.ascontiguousarray(d_items)


def _coefficients(logits: Array, mask: BoolArray) -> Array:
    """c_ij = m_i softmax_j(b_i.) (B, L, K): the softmax over interests, zeroed at padded i."""
    result: Array = softmax_interests(logits) * mask[:, :, None]
    return result


def dynamic_routing_forward(
    params: DynamicRoutingParams, items: Array, mask: BoolArray, cfg: DynamicRoutingConfig
) -> tuple[Array, DynamicRoutingCache]:
    """Route L behaviours into K interest capsules; returns interests (B, K, D_out)."""
    _validate_config(cfg)
    _validate(params, items).check_bool("mask", mask, ("B", "L"))
    mapped = _map(params.W, items)
    logits = [np.zeros(mapped.shape[:3], dtype=items.dtype)]  # b^0 = 0
    coefficients: list[Array] = []
    sums: list[Array] = []
    interests: list[Array] = []
    for r in range(cfg.iterations):
        coefficients.append(_coefficients(logits[r], mask))
        sums.append(interest_sums(mapped, coefficients[r]))
        interests.append(squash(sums[r]))
        if r + 1 < cfg.iterations:
            logits.append(logits[r] + agreement(mapped, interests[r]))
    cache = DynamicRoutingCache(
        cfg=cfg,
        W=params.W,
        items=items,
        mask=mask,
        mapped=mapped,
        logits=tuple(logits),
        coefficients=tuple(coefficients),
        sums=tuple(sums),
        interests=tuple(interests),
    )
    return interests[-1], cache


def dynamic_routing_backward(cache: DynamicRoutingCache, d_interests: Array) -> DynamicRoutingGrads:
    """Gradients of W and items for upstream d_interests (B, K, D_out). The loop walks the
    iterations backwards, r = t-1 .. 0 (only r = t-1 when detached); `d_next_logits` carries
    d b^{r+1} down to iteration r (zero at r = t-1: b^t is never computed)."""
    last_sums = cache.sums[-1]
    d_interests = check_upstream("d_interests", d_interests, last_sums.shape, last_sums.dtype)
    mapped, cfg = cache.mapped, cache.cfg
    # d u is allocated by the last iteration's term (for the detached gradient the only one): no
    # zero-filled (B, L, K, D_out) array and no pass adding onto it
    d_mapped = np.empty(0, dtype=mapped.dtype)
    d_interest = d_interests  # d v^r, starting at r = t-1 with the upstream gradient
    d_next_logits = np.zeros(cache.logits[0].shape, dtype=mapped.dtype)  # d b^{r+1}
    first_inverted = cfg.iterations - 1 if cfg.detach_routing else 0
    for r in range(cfg.iterations - 1, first_inverted - 1, -1):
        # in the forward pass this was: v^r = squash(z^r)
        d_sums = squash_backward(cache.sums[r], d_interest)
        # in the forward pass this was: z^r_j = sum_i c^r_ij u_ij
        d_u = cache.coefficients[r][..., None] * d_sums[:, None, :, :]
        if r == cfg.iterations - 1:  # a fresh array of this backward pass: later terms add in place
            d_mapped = d_u
        else:
            d_mapped += d_u
        if cfg.detach_routing:  # c^{t-1} is a constant: nothing flows into the logits
            continue
        d_coefficients = agreement(mapped, d_sums)  # u_ij . d_z_j
        # in the forward pass this was: c^r = m softmax(b^r); at padded i c^r = 0, so w = 0 there
        # and softmax_backward passes nothing
        d_logits = softmax_backward(cache.coefficients[r], d_coefficients) + d_next_logits
        if r > 0:
            # in the forward pass this was: b^r = b^{r-1} + u . v^{r-1}
            d_mapped += d_logits[..., None] * cache.interests[r - 1][:, None, :, :]
            d_interest = interest_sums(mapped, d_logits)  # d v^{r-1}
        d_next_logits = d_logits  # b^0 = 0 is a constant: the last d b^0 goes nowhere
    # in the forward pass this was: u_ij = e_i @ W[i, j]
    d_w, d_items = _map_backward(cache.W, cache.items, d_mapped)
    return DynamicRoutingGrads(W=d_w, items=d_items)


def frozen_dynamic_routing_forward(
    params: DynamicRoutingParams, items: Array, coefficients: Array
) -> Array:
    """squash(sum_i c_ij e_i @ W[i, j]) with the coefficients c (B, L, K) given (0 at padded
    positions): the function whose gradient `detach_routing=True` returns, at c = c^{t-1}."""
    _validate(params, items).check_float("coefficients", coefficients, ("B", "L", "K"))
    return squash(interest_sums(_map(params.W, items), coefficients))
