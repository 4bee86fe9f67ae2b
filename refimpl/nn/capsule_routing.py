"""Dual-attention capsule routing (UMI eq. 3-6, Algorithm 1); MIND's routing is the special case
of all-ones item weights and one shared map.

For a row (user) with behaviours e_i (i < L), item weights a_i and K interests j:

    u_ij   = W_j e_i                      mapped items (UMI eq. 3; MIND: one shared W for every j)
    b^0    = initial_logits               an input, the caller draws it (e.g. N(0, sigma^2))
    repeat r = 0 .. t-1:
      c^r_ij = exp(b^r_ij) / sum_k exp(b^r_ik)         softmax over INTERESTS (UMI eq. 4)
      z^r_j  = sum_i a_i c^r_ij u_ij                    (UMI eq. 3; padded items have a_i = 0)
      v^r_j  = squash(z^r_j)                            (UMI eq. 6)
      b^{r+1}_ij = u_ij . v^r_j                         `replace` (UMI eq. 5; Algorithm 1, line 8)
      b^{r+1}_ij = b^r_ij + u_ij . v^r_j                `accumulate` (Sabour et al., MIND)
    interests v_j = v^{t-1}_j

    squash(z) = |z|^2 / (1 + |z|^2) * z / sqrt(|z|^2 + 1e-9)

Shapes: items (B, L, D_in), item_weights (B, L), mask (B, L) True = valid, initial_logits (B, L, K),
W (K, D_in, D_out) per interest or (D_in, D_out) shared, interests (B, K, D_out).

Gradient modes. `detach_routing=True` (default, as the MIND/ComiRec code): the final coefficients
c^{t-1} are constants for the gradient, so the gradient is that of `frozen_routing_forward` at
c = c^{t-1} and initial_logits get a zero gradient. `detach_routing=False`: the exact gradient
through every iteration, including the logit updates and the initial logits.

Detached, with w_ij = a_i c_ij constant, z_j = sum_i w_ij W_j e_i is linear in W and in e, and
d_u_ij = w_ij d_z_j, so the gradients are taken in an order that never forms the (B, L, K, D_out)
tensor d_u: d_W_j = sum_b (sum_i w_bij e_bi)^T d_z_bj (the items pooled per interest first) and
d_e_bi = sum_j w_bij (d_z_bj W_j^T) (d_z mapped back per interest first), in the row-vector
convention of the code (u_ij = e_i @ W_j); see `_frozen_map_backward`.
The exact mode adds terms to d_u from every iteration and builds it.

Edge cases: a padded item (mask False) enters every sum with weight 0, whatever its item weight,
and gets exactly zero gradient; an all-padded row has z = 0, interests 0 and a finite (zero)
gradient (the 1e-9 keeps the square root away from 0). The coefficients are stored for every
position, padded or not: the softmax of that position's logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, BoolArray, Shapes, require_choice, require_positive_int
from refimpl.nn._upstream import check_upstream
from refimpl.nn.attention import masked_softmax, softmax_backward

__all__ = [
    "SQUASH_EPS",
    "CapsuleRoutingCache",
    "CapsuleRoutingConfig",
    "CapsuleRoutingGrads",
    "CapsuleRoutingParams",
    "capsule_routing_backward",
    "capsule_routing_forward",
    "frozen_routing_forward",
]

SQUASH_EPS = 1e-9
UPDATES = ("replace", "accumulate")
MAPS = ("per_interest", "shared")


@dataclass(frozen=True)
class CapsuleRoutingParams:
    W: Array  # (K, D_in, D_out) per interest, or (D_in, D_out) shared


@dataclass(frozen=True)
class CapsuleRoutingConfig:
    iterations: int = 3
    update: str = "replace"  # "replace" (UMI) or "accumulate" (MIND)
    detach_routing: bool = True
    map: str = "per_interest"  # "per_interest" (UMI) or "shared" (MIND)


@dataclass(frozen=True)
class CapsuleRoutingCache:
    cfg: CapsuleRoutingConfig
    W: Array
    items: Array  # (B, L, D_in)
    item_weights: Array  # (B, L) a_i: the input item weights with padded items at 0
    mask: BoolArray  # (B, L)
    mapped: Array  # (B, L, K, D_out) u_ij (broadcast view for the shared map)
    logits: tuple[Array, ...]  # b^r (B, L, K), r = 0 .. t-1
    coefficients: tuple[Array, ...]  # c^r (B, L, K)
    sums: tuple[Array, ...]  # z^r (B, K, D_out)
    interests: tuple[Array, ...]  # v^r (B, K, D_out)


@dataclass(frozen=True)
class CapsuleRoutingGrads:
    W: Array
    items: Array
    item_weights: Array
    initial_logits: Array


def _scaled(z: Array) -> tuple[Array, Array, Array]:
    """(u, t, t^2) with u = z t and t = 1 / m, m the power of 2 just above max|z_d| (t = 1 for z = 0).

    |u| < 1, so |u|^2 never overflows (float32 |z| = 1e20 has |z|^2 = inf). Because m is a power
    of 2, multiplying by t is exact in floating point: every expression of squash and its backward
    written in u and t equals the one written in z bit for bit wherever neither overflows nor goes
    subnormal (float64 goldens do not move). t is capped at 2^(maxexp / 3 - 8) (2^34 in float32):
    for a smaller |z| the result is 0 to the dtype's precision, and the cap keeps t^3 finite.
    """
    peak = np.max(np.abs(z), axis=-1, keepdims=True, initial=0)
    _, exponent = np.frexp(peak)  # peak = f 2^e with f in [0.5, 1); 0 gives e = 0
    cap = np.finfo(z.dtype).maxexp // 3 - 8
    t: Array = np.ldexp(np.ones_like(peak), -np.maximum(exponent, -cap))
    u: Array = z * t
    return u, t, t * t


def squash(z: Array) -> Array:
    """|z|^2 / (1 + |z|^2) * z / sqrt(|z|^2 + 1e-9) over the last axis (UMI eq. 6).

    Computed on u = z t (`_scaled`), so that |z|^2 never overflows: with s = |u|^2 = t^2 |z|^2,
    |z|^2 / (1 + |z|^2) = s / (t^2 + s) and z / sqrt(|z|^2 + eps) = u / sqrt(s + eps t^2).
    """
    u, _, t2 = _scaled(z)
    s = np.sum(u * u, axis=-1, keepdims=True)
    result: Array = u * (s / ((t2 + s) * np.sqrt(s + SQUASH_EPS * t2)))
    return result


def squash_backward(z: Array, d_v: Array) -> Array:
    """d_z of v = g(|z|^2) z: d_z = g d_v + 2 g'(|z|^2) (z . d_v) z, finite at z = 0.

    g(n) = n / ((1 + n) r) with r = sqrt(n + eps),
    g'(n) = (1 / (1 + n) - n / (2 r^2)) / ((1 + n) r).
    Computed on u = z t as squash is (`_scaled`): with s = |u|^2 = t^2 n and r_u = sqrt(s + eps t^2)
    = t r, g = s / ((t^2 + s) r_u) * t, g' = (t^2 / (t^2 + s) - s / (2 r_u^2)) / ((t^2 + s) r_u) * t^3,
    and (z . d_v) z = (u . d_v) u / t^2, so no factor of |z|^2 is ever formed.
    """
    u, t, t2 = _scaled(z)
    s = np.sum(u * u, axis=-1, keepdims=True)
    root = np.sqrt(s + SQUASH_EPS * t2)
    denominator = (t2 + s) * root
    scale = s / denominator * t
    slope_over_t2 = (t2 / (t2 + s) - s / (2 * (s + SQUASH_EPS * t2))) / denominator * t
    result: Array = scale * d_v + 2 * slope_over_t2 * np.sum(u * d_v, axis=-1, keepdims=True) * u
    return result


def softmax_interests(logits: Array) -> Array:
    """Softmax over the last axis (interests): the attention kernel's max-shifted softmax with
    every interest valid. Named so the routing loop's one softmax can be found (and, in the
    negative-control tests, replaced) in one place."""
    return masked_softmax(logits, np.ones(logits.shape[-1:], dtype=bool))


def _validate(
    params: CapsuleRoutingParams,
    items: Array,
    item_weights: Array,
    mask: BoolArray,
    initial_logits: Array,
    cfg: CapsuleRoutingConfig,
    logits_name: str = "initial_logits",
) -> None:
    require_positive_int("cfg.iterations", cfg.iterations)
    require_choice("cfg.update", cfg.update, UPDATES)
    require_choice("cfg.map", cfg.map, MAPS)
    if not isinstance(cfg.detach_routing, bool):
        raise TypeError(f"cfg.detach_routing: expected a bool, got {cfg.detach_routing!r}")
    shapes = Shapes()
    shapes.check_float("items", items, ("B", "L", "D_in"))
    shapes.check_float("item_weights", item_weights, ("B", "L"))
    shapes.check_bool("mask", mask, ("B", "L"))
    shapes.check_float(logits_name, initial_logits, ("B", "L", "K"))
    if shapes.size("K") == 0:
        raise ValueError(f"{logits_name}: expected at least one interest (B, L, K >= 1), got {initial_logits.shape}")
    if cfg.map == "shared":
        shapes.check_float("W", params.W, ("D_in", "D_out"))
    else:
        shapes.check_float("W", params.W, ("K", "D_in", "D_out"))


def _stacked(W: Array) -> Array:
    """(K, D_in, D_out) -> (D_in, K D_out): the K maps side by side, interest j in columns
    j D_out .. (j + 1) D_out - 1, so that one product maps every item through every W_j."""
    k, d_in, d_out = W.shape
    return W.transpose(1, 0, 2).reshape(d_in, k * d_out)


def map_items(W: Array, items: Array, num_interests: int) -> Array:
    """u_ij = W_j e_i (B, L, K, D_out); a shared W (D_in, D_out) is broadcast over the K
    interests."""
    b, length, d_in = items.shape
    if W.ndim == 2:
        shared: Array = items @ W
        return np.broadcast_to(shared[:, :, None, :], (b, length, num_interests, W.shape[1]))
    k, _, d_out = W.shape
    # (B L, D_in) @ (D_in, K D_out): one matrix product for all K maps
    result: Array = (items.reshape(b * length, d_in) @ _stacked(W)).reshape(b, length, k, d_out)
    return result


def map_items_backward(W: Array, items: Array, d_mapped: Array) -> tuple[Array, Array]:
    """(d_W, d_items) from d_u (B, L, K, D_out): d_W_j = sum_i e_i d_u_ij^T, d_e_i = sum_j W_j d_u_ij."""
    b, length, d_in = items.shape
    rows = items.reshape(b * length, d_in)
    if W.ndim == 2:
        d_shared = d_mapped.sum(axis=2).reshape(b * length, W.shape[1])
        d_w: Array = rows.T @ d_shared
        return d_w, (d_shared @ W.T).reshape(items.shape)
    k, _, d_out = W.shape
    d_rows = d_mapped.reshape(b * length, k * d_out)  # interest j in columns j D_out .. (j + 1) D_out - 1
    d_w = (rows.T @ d_rows).reshape(d_in, k, d_out).transpose(1, 0, 2)
    d_items: Array = (d_rows @ _stacked(W).T).reshape(items.shape)
    return d_w, d_items


# interest_sums and agreement are shared with nn/dynamic_routing.py (ComiRec-DR); outside __all__
def interest_sums(mapped: Array, coupling: Array) -> Array:
    """sum_i coupling_ij u_ij (B, K, D_out) for coupling (B, L, K): per row and interest, the
    (1, L) row of couplings times the (L, D_out) mapped items."""
    per_interest = mapped.transpose(0, 2, 1, 3)  # (B, K, L, D_out), a view
    result: Array = (coupling.transpose(0, 2, 1)[:, :, None, :] @ per_interest)[:, :, 0, :]
    return result


def agreement(mapped: Array, vectors: Array) -> Array:
    """u_ij . x_j (B, L, K) for x (B, K, D_out): per row and interest, (L, D_out) @ (D_out, 1)."""
    per_interest = mapped.transpose(0, 2, 1, 3)  # (B, K, L, D_out), a view
    result: Array = (per_interest @ vectors[:, :, :, None])[:, :, :, 0].transpose(0, 2, 1)
    return result


def _aggregate(mapped: Array, item_weights: Array, coefficients: Array) -> Array:
    """z_j = sum_i a_i c_ij u_ij (B, K, D_out)."""
    return interest_sums(mapped, item_weights[:, :, None] * coefficients)


def _aggregate_backward(
    mapped: Array, item_weights: Array, coefficients: Array, d_sums: Array
) -> tuple[Array, Array, Array]:
    """(d_u, d_a, d_c) of z = sum_i a_i c_ij u_ij."""
    projected = agreement(mapped, d_sums)  # u_ij . d_z_j
    d_mapped: Array = (item_weights[:, :, None] * coefficients)[..., None] * d_sums[:, None, :, :]
    d_item_weights: Array = np.sum(coefficients * projected, axis=-1)
    d_coefficients: Array = item_weights[:, :, None] * projected
    return d_mapped, d_item_weights, d_coefficients


def _frozen_map_backward(W: Array, items: Array, weights: Array, d_sums: Array) -> tuple[Array, Array]:
    """(d_W, d_items) of z_j = sum_i w_ij e_i @ W_j for constant weights w (B, L, K) and d_z (B, K, D_out).

    The same numbers as `map_items_backward` of d_u_ij = w_ij d_z_j, up to round-off, but summed
    in an order that never forms that (B, L, K, D_out) tensor (e, d_z row vectors):
        d_W_j  = sum_b (sum_i w_bij e_bi)^T d_z_bj    the items pooled per interest first, (B, K, D_in)
        d_e_bi = sum_j w_bij (d_z_bj W_j^T)           d_z mapped back per interest first, (B, K, D_in)
    With a shared map W_j = W: d_W = sum_{b,j} (sum_i w_bij e_bi)^T d_z_bj, d_e_bi = sum_j w_bij (d_z_bj W^T).
    """
    b, k, d_out = d_sums.shape
    d_in = items.shape[2]
    pooled = weights.transpose(0, 2, 1) @ items  # (B, K, L) @ (B, L, D_in) -> (B, K, D_in)
    d_w: Array
    if W.ndim == 2:
        # (D_in, B K) @ (B K, D_out): the sum over rows and interests in one product
        d_w = pooled.reshape(b * k, d_in).T @ d_sums.reshape(b * k, d_out)
        mapped_back = d_sums @ W.T  # (B, K, D_out) @ (D_out, D_in)
    else:
        # per interest j: (D_in, B) @ (B, D_out)
        d_w = pooled.transpose(1, 2, 0) @ d_sums.transpose(1, 0, 2)  # (K, D_in, D_out)
        # per interest j: (B, D_out) @ (D_out, D_in), back to (B, K, D_in)
        mapped_back = (d_sums.transpose(1, 0, 2) @ W.transpose(0, 2, 1)).transpose(1, 0, 2)
    d_items: Array = weights @ mapped_back  # (B, L, K) @ (B, K, D_in) -> (B, L, D_in)
    return d_w, d_items


def capsule_routing_forward(
    params: CapsuleRoutingParams,
    items: Array,
    item_weights: Array,
    mask: BoolArray,
    initial_logits: Array,
    cfg: CapsuleRoutingConfig,
) -> tuple[Array, CapsuleRoutingCache]:
    """Route L behaviours into K interest capsules; returns interests (B, K, D_out)."""
    _validate(params, items, item_weights, mask, initial_logits, cfg)
    item_weights = np.where(mask, item_weights, 0).astype(items.dtype, copy=False)  # padded: a_i = 0
    mapped = map_items(params.W, items, initial_logits.shape[2])
    logits, coefficients, sums, interests = [initial_logits], [], [], []
    for r in range(cfg.iterations):
        coefficients.append(softmax_interests(logits[r]))
        sums.append(_aggregate(mapped, item_weights, coefficients[r]))
        interests.append(squash(sums[r]))
        if r + 1 < cfg.iterations:
            update = agreement(mapped, interests[r])
            logits.append(update + logits[r] if cfg.update == "accumulate" else update)
    cache = CapsuleRoutingCache(
        cfg=cfg,
        W=params.W,
        items=items,
        item_weights=item_weights,
        mask=mask,
        mapped=mapped,
        logits=tuple(logits),
        coefficients=tuple(coefficients),
        sums=tuple(sums),
        interests=tuple(interests),
    )
    return interests[-1], cache


def capsule_routing_backward(cache: CapsuleRoutingCache, d_interests: Array) -> CapsuleRoutingGrads:
    """Gradients of W, items, item_weights and initial_logits for upstream d_interests
    (B, K, D_out). Detached: the last iteration only, with its coefficients constant. Exact: the
    loop walks the iterations backwards, r = t-1 .. 0; `d_next_logits` carries d b^{r+1} from
    iteration r+1 down to iteration r (zero at r = t-1: b^t is never computed)."""
    last_sums = cache.sums[-1]
    d_interests = check_upstream("d_interests", d_interests, last_sums.shape, last_sums.dtype)
    cfg, mapped, item_weights = cache.cfg, cache.mapped, cache.item_weights
    if cfg.detach_routing:
        # c^{t-1} is a constant: only the last iteration's v^{t-1} = squash(z^{t-1}) and
        # z^{t-1}_j = sum_i a_i c_ij W_j e_i are inverted, and no gradient reaches the logits
        coefficients = cache.coefficients[-1]
        d_sums = squash_backward(last_sums, d_interests)
        d_w, d_items = _frozen_map_backward(cache.W, cache.items, item_weights[:, :, None] * coefficients, d_sums)
        d_item_weights = np.sum(coefficients * agreement(mapped, d_sums), axis=-1)  # sum_j c_ij (u_ij . d_z_j)
        d_initial_logits = np.zeros(coefficients.shape, dtype=mapped.dtype)
    else:
        d_w, d_items, d_item_weights, d_initial_logits = _exact_backward(cache, d_interests)
    # in the forward pass this was: a_i = item_weights_i if mask_i else 0
    d_item_weights = np.where(cache.mask, d_item_weights, 0).astype(d_item_weights.dtype, copy=False)
    return CapsuleRoutingGrads(
        W=d_w, items=d_items, item_weights=d_item_weights, initial_logits=d_initial_logits
    )


def _exact_backward(cache: CapsuleRoutingCache, d_interests: Array) -> tuple[Array, Array, Array, Array]:
    """(d_W, d_items, d_a, d_initial_logits) through every iteration, r = t-1 .. 0."""
    cfg, mapped, item_weights = cache.cfg, cache.mapped, cache.item_weights
    # d u and d a are allocated by the last iteration's terms: no zero-filled (B, L, K, D_out)
    # array and no pass adding onto it
    d_mapped = d_item_weights = np.empty(0, dtype=mapped.dtype)
    d_interest = d_interests  # d v^r, starting at r = t-1 with the upstream gradient
    d_next_logits = np.zeros(cache.logits[0].shape, dtype=mapped.dtype)  # d b^{r+1}
    for r in range(cfg.iterations - 1, -1, -1):
        # in the forward pass this was: v^r = squash(z^r)
        d_sums = squash_backward(cache.sums[r], d_interest)
        # in the forward pass this was: z^r_j = sum_i a_i c^r_ij u_ij
        d_u, d_a, d_coefficients = _aggregate_backward(mapped, item_weights, cache.coefficients[r], d_sums)
        if r == cfg.iterations - 1:  # fresh arrays of this backward pass: later terms add in place
            d_mapped, d_item_weights = d_u, d_a
        else:
            d_mapped += d_u
            d_item_weights += d_a
        # in the forward pass this was: c^r = softmax_interests(b^r)
        d_logits = softmax_backward(cache.coefficients[r], d_coefficients)  # d b^r, from c^r
        if cfg.update == "accumulate":
            # in the forward pass this was: b^{r+1} = b^r + u . v^r, so d b^{r+1} reaches b^r too
            d_logits = d_logits + d_next_logits
        if r > 0:
            # in the forward pass this was: b^r = u . v^{r-1} (+ b^{r-1} under accumulate)
            d_mapped += d_logits[..., None] * cache.interests[r - 1][:, None, :, :]
            d_interest = interest_sums(mapped, d_logits)  # d v^{r-1}
        d_next_logits = d_logits  # iteration r-1 sees d b^r as its d b^{r+1}
    # in the forward pass this was: u_ij = W_j e_i
    d_w, d_items = map_items_backward(cache.W, cache.items, d_mapped)
    # in the forward pass this was: b^0 = initial_logits
    return d_w, d_items, d_item_weights, d_next_logits


def frozen_routing_forward(
    params: CapsuleRoutingParams,
    items: Array,
    item_weights: Array,
    mask: BoolArray,
    coefficients: Array,
) -> Array:
    """squash(sum_i a_i c_ij W_j e_i) with the coefficients c (B, L, K) given: the function whose
    gradient `detach_routing=True` returns (at c = the final iteration's coefficients)."""
    mapping = "shared" if isinstance(params.W, np.ndarray) and params.W.ndim == 2 else "per_interest"
    _validate(params, items, item_weights, mask, coefficients, CapsuleRoutingConfig(map=mapping), "coefficients")
    item_weights = np.where(mask, item_weights, 0).astype(items.dtype, copy=False)  # padded: a_i = 0
    return squash(_aggregate(map_items(params.W, items, coefficients.shape[2]), item_weights, coefficients))
