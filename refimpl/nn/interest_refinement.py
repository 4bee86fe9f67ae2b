"""Interest refinement (UMI eq. 7-9): each interest re-weights the user-profile fields.

For interest k with capsule v_k and profile fields e_u^(c) (c < C), e_u = concat_c e_u^(c):

    d_k   = sigmoid(Wd2 relu(Wd1 [v_k; e_u] + bd1) + bd2)      in R^C, field weights   (UMI eq. 7)
    e_u^k = concat_c(d_kc * e_u^(c))                           re-weighted profile      (UMI eq. 8)
    o_k   = Wb relu(Wa [e_u^k; v_k] + ba) + bb                 refined interest         (UMI eq. 9)

Shapes: interests (B, K, D), profile (B, C, F) (so e_u has C*F entries), Wd1 (D + C*F, H_d),
bd1 (H_d,), Wd2 (H_d, C), bd2 (C,), Wa (C*F + D, H), ba (H,), Wb (H, D_o), bb (D_o,),
refined (B, K, D_o). Layout `x @ W` as in `refimpl.nn.linear`; concatenation orders as written
above ([v_k; e_u] for the field weights, [e_u^k; v_k] for the output).

Edge cases: a zero interest (from an all-padded history) is a valid input: o_k then depends on
the profile only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, Shapes
from refimpl.nn._upstream import check_upstream
from refimpl.nn.linear import LinearParams
from refimpl.nn.mlp import MLPCache, MLPConfig, MLPParams, mlp_backward, mlp_forward

__all__ = [
    "InterestRefinementCache",
    "InterestRefinementGrads",
    "InterestRefinementParams",
    "interest_refinement_backward",
    "interest_refinement_forward",
]

FIELD_MLP = MLPConfig(activations=("relu", "sigmoid"))
OUTPUT_MLP = MLPConfig(activations=("relu", "identity"))
PARAM_NAMES = ("Wd1", "bd1", "Wd2", "bd2", "Wa", "ba", "Wb", "bb")


@dataclass(frozen=True)
class InterestRefinementParams:
    Wd1: Array  # (D + C*F, H_d)
    bd1: Array  # (H_d,)
    Wd2: Array  # (H_d, C)
    bd2: Array  # (C,)
    Wa: Array  # (C*F + D, H)
    ba: Array  # (H,)
    Wb: Array  # (H, D_o)
    bb: Array  # (D_o,)


@dataclass(frozen=True)
class InterestRefinementCache:
    field_mlp: MLPCache
    output_mlp: MLPCache
    profile: Array  # (B, C, F)
    field_weights: Array  # (B, K, C)
    reweighted_profile: Array  # (B, K, C*F)
    interest_dim: int  # D


@dataclass(frozen=True)
class InterestRefinementGrads:
    params: InterestRefinementParams
    interests: Array  # (B, K, D)
    profile: Array  # (B, C, F)


def _validate(params: InterestRefinementParams, interests: Array, profile: Array) -> None:
    shapes = Shapes()
    shapes.check_float("interests", interests, ("B", "K", "D"))
    shapes.check_float("profile", profile, ("B", "C", "F"))
    d, c, f = shapes.size("D"), shapes.size("C"), shapes.size("F")
    if c == 0 or f == 0:
        raise ValueError(f"profile: expected at least one field of width >= 1 (B, C, F), got {profile.shape}")
    shapes.check_float("Wd1", params.Wd1, (d + c * f, "H_d"))
    shapes.check_float("bd1", params.bd1, ("H_d",))
    shapes.check_float("Wd2", params.Wd2, ("H_d", c))
    shapes.check_float("bd2", params.bd2, (c,))
    shapes.check_float("Wa", params.Wa, (c * f + d, "H"))
    shapes.check_float("ba", params.ba, ("H",))
    shapes.check_float("Wb", params.Wb, ("H", "D_o"))
    shapes.check_float("bb", params.bb, ("D_o",))


def interest_refinement_forward(
    params: InterestRefinementParams, interests: Array, profile: Array
) -> tuple[Array, InterestRefinementCache]:
    """Refined interests o (B, K, D_o) from capsules (B, K, D) and profile fields (B, C, F)."""
    _validate(params, interests, profile)
    b, k, _ = interests.shape
    c, f = profile.shape[1:]
    user = np.broadcast_to(profile.reshape(b, 1, c * f), (b, k, c * f))
    field_weights, field_cache = mlp_forward(
        MLPParams((LinearParams(params.Wd1, params.bd1), LinearParams(params.Wd2, params.bd2))),
        np.concatenate([interests, user], axis=-1),
        FIELD_MLP,
    )
    reweighted = (field_weights[..., None] * profile[:, None, :, :]).reshape(b, k, c * f)
    refined, output_cache = mlp_forward(
        MLPParams((LinearParams(params.Wa, params.ba), LinearParams(params.Wb, params.bb))),
        np.concatenate([reweighted, interests], axis=-1),
        OUTPUT_MLP,
    )
    cache = InterestRefinementCache(
        field_mlp=field_cache,
        output_mlp=output_cache,
        profile=profile,
        field_weights=field_weights,
        reweighted_profile=reweighted,
        interest_dim=interests.shape[2],
    )
    return refined, cache


def interest_refinement_backward(cache: InterestRefinementCache, d_refined: Array) -> InterestRefinementGrads:
    """Gradients of the params, the interests and the profile for upstream d_refined (B, K, D_o)."""
    refined = cache.output_mlp.activated[-1]
    d_refined = check_upstream("d_refined", d_refined, refined.shape, refined.dtype)
    profile = cache.profile
    b, c, f = profile.shape
    # in the forward pass this was: refined = output_mlp([reweighted; interests])
    output_grads, d_output_in = mlp_backward(cache.output_mlp, d_refined)
    d_reweighted = d_output_in[..., : c * f].reshape(b, d_refined.shape[1], c, f)
    d_interests = d_output_in[..., c * f :]
    # in the forward pass this was: reweighted = field_weights[..., None] * profile[:, None]
    d_field_weights = np.einsum("bkcf,bcf->bkc", d_reweighted, profile)
    d_profile = np.einsum("bkcf,bkc->bcf", d_reweighted, cache.field_weights)
    # in the forward pass this was: field_weights = field_mlp([interests; profile broadcast over K])
    field_grads, d_field_in = mlp_backward(cache.field_mlp, d_field_weights)
    d_interests = d_interests + d_field_in[..., : cache.interest_dim]
    d_profile = d_profile + d_field_in[..., cache.interest_dim :].sum(axis=1).reshape(b, c, f)
    (wd1, wd2), (wa, wb) = field_grads.layers, output_grads.layers
    return InterestRefinementGrads(
        params=InterestRefinementParams(Wd1=wd1.W, bd1=wd1.b, Wd2=wd2.W, bd2=wd2.b, Wa=wa.W, ba=wa.b, Wb=wb.W, bb=wb.b),
        interests=d_interests,
        profile=d_profile,
    )
