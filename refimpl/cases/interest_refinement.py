"""Golden cases and the reference adapter of `interest_refinement` (spec/interest_refinement.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl.cases._base import (
    CaseSpec,
    CaseTensors,
    Config,
    Result,
    Tensors,
    upstream_like,
)
from refimpl.nn.interest_refinement import (
    PARAM_NAMES,
    InterestRefinementParams,
    interest_refinement_backward,
    interest_refinement_forward,
)

SPEC = "spec/interest_refinement.md"


def interest_refinement_reference(
    inputs: Tensors, params: Tensors, config: Config, upstream: Tensors
) -> Result:
    refined, cache = interest_refinement_forward(
        InterestRefinementParams(**params), inputs["interests"], inputs["profile"]
    )
    grads = interest_refinement_backward(cache, upstream["d_refined"])
    return Result(
        outputs={"refined": refined},
        grads={
            "d_interests": grads.interests,
            "d_profile": grads.profile,
            **{f"d_{name}": getattr(grads.params, name) for name in PARAM_NAMES},
        },
        intermediates={
            "field_weights": cache.field_weights,
            "reweighted_profile": cache.reweighted_profile,
            "hidden": cache.output_mlp.activated[0],
        },
    )


COMPONENTS = {"interest_refinement": interest_refinement_reference}


def random_params(
    rng: np.random.Generator,
    d: int,
    fields: int,
    field_dim: int,
    field_hidden: int,
    hidden: int,
    d_out: int,
) -> Tensors:
    """Weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1^2)."""
    profile = fields * field_dim
    shapes = {
        "Wd1": (d + profile, field_hidden),
        "bd1": (field_hidden,),
        "Wd2": (field_hidden, fields),
        "bd2": (fields,),
        "Wa": (profile + d, hidden),
        "ba": (hidden,),
        "Wb": (hidden, d_out),
        "bb": (d_out,),
    }
    return {
        name: rng.standard_normal(shape) / np.sqrt(shape[0])
        if name.startswith("W")
        else 0.1 * rng.standard_normal(shape)
        for name, shape in shapes.items()
    }


@dataclass(frozen=True)
class RefinementShape:
    """The sizes a random case is drawn with (and described by): capsules (B, K, D), profile
    (B, C, F), hidden widths H_d = 5 and H = 6; `zero_interest` makes row 0's interests zero."""

    batch: int
    interests: int
    d: int
    fields: int
    field_dim: int
    zero_interest: bool = False

    def describe(self) -> str:
        return (
            f"B={self.batch}, K={self.interests}, D={self.d}, C={self.fields} fields of F={self.field_dim}, "
            f"H_d={FIELD_HIDDEN}, H={OUTPUT_HIDDEN}"
        )

    def build(self, rng: np.random.Generator) -> CaseTensors:
        b, k, d = self.batch, self.interests, self.d
        interests = rng.standard_normal((b, k, d))
        if self.zero_interest:
            interests[0] = 0.0
        return CaseTensors(
            inputs={"interests": interests, "profile": rng.standard_normal((b, self.fields, self.field_dim))},
            params=random_params(rng, d, self.fields, self.field_dim, FIELD_HIDDEN, OUTPUT_HIDDEN, d),
            upstream=upstream_like(rng, {"refined": (b, k, d)}),
        )


FIELD_HIDDEN, OUTPUT_HIDDEN = 5, 6


def _random_case(name: str, why: str, section: str, shape: RefinementShape) -> CaseSpec:
    description = f"{why}; {shape.describe()}." if why else f"{shape.describe()}."
    return CaseSpec("interest_refinement", name, description, f"{SPEC}#{section}", {}, shape.build)


def _tiny(rng: np.random.Generator) -> CaseTensors:
    """The hand-checked case of the spec page: D = F = H_d = H = 1, C = 2."""
    return CaseTensors(
        inputs={"interests": np.array([[[2.0]]]), "profile": np.array([[[1.0], [3.0]]])},
        params={
            "Wd1": np.array([[1.0], [0.0], [0.0]]),
            "bd1": np.zeros(1),
            "Wd2": np.array([[1.0, -1.0]]),
            "bd2": np.zeros(2),
            "Wa": np.ones((3, 1)),
            "ba": np.zeros(1),
            "Wb": np.ones((1, 1)),
            "bb": np.zeros(1),
        },
        upstream=upstream_like(rng, {"refined": (1, 1, 1)}),
    )


def _relu_at_zero(rng: np.random.Generator) -> CaseTensors:
    """B=1, K=2, D=2, C=2 fields of F=1, H_d=H=2, integer inputs and weights where it matters: the
    field MLP's pre-activations are exactly 0 at unit 1 for both interests and at unit 0 for
    interest 0; the output MLP's unit 0 (which reads v_k only) is exactly 0 for interest 0.
    relu'(0) = 0 (as torch): a port using [pre >= 0] fails the gradients here."""
    return CaseTensors(
        inputs={
            "interests": np.array([[[1.0, -1.0], [2.0, 1.0]]]),
            "profile": np.array([[[1.0], [-2.0]]]),
        },
        params={
            "Wd1": np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]),
            "bd1": np.array([0.0, 1.0]),
            "Wd2": np.array([[1.0, -1.0], [1.0, 0.5]]),
            "bd2": np.zeros(2),
            "Wa": np.array([[0.0, 0.5], [0.0, 0.25], [1.0, 1.0], [1.0, -1.0]]),
            "ba": np.zeros(2),
            "Wb": np.array([[1.0, -0.5], [0.5, 1.0]]),
            "bb": np.zeros(2),
        },
        upstream=upstream_like(rng, {"refined": (1, 2, 2)}),
    )


CASES = (
    CaseSpec(
        "interest_refinement",
        "tiny_hand_checked",
        "The spec's worked example (one interest, unit widths, two profile fields).",
        f"{SPEC}#worked-example",
        {},
        _tiny,
    ),
    _random_case("small", "", "equations", RefinementShape(batch=2, interests=3, d=4, fields=3, field_dim=2)),
    _random_case(
        "k1_zero_interests",
        "One interest; row 0's interest is the zero vector (an all-padded history)",
        "edge-cases",
        RefinementShape(batch=3, interests=1, d=4, fields=2, field_dim=3, zero_interest=True),
    ),
    _random_case("realistic", "", "equations", RefinementShape(batch=4, interests=4, d=8, fields=4, field_dim=4)),
    CaseSpec(
        "interest_refinement",
        "relu_at_zero",
        "Pre-activations exactly 0 in both MLPs (integer inputs and weights): relu'(0) = 0.",
        f"{SPEC}#edge-cases",
        {},
        _relu_at_zero,
    ),
)
