"""Golden cases and the reference adapter of the `umi` model (spec/umi.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from refimpl._check import Array
from refimpl.cases._base import (
    Builder,
    CaseSpec,
    CaseTensors,
    Config,
    Result,
    Tensors,
    upstream_like,
)
from refimpl.cases.capsule_routing import describe_routing, random_mask, routing_case_config, routing_config
from refimpl.models.umi import Params, UMIConfig, UserBatch, umi_backward_with_inputs, umi_forward, umi_init
from refimpl.nn.capsule_routing import CapsuleRoutingCache
from refimpl.nn.interest_refinement import InterestRefinementCache

SPEC = "spec/umi.md"
FIELDS, FIELD_DIM, PROFILE_VALUES = 2, 3, 5  # C profile fields of width F, V_p profile rows


def batch_of(inputs: Tensors) -> UserBatch:
    """The model batch of a case's inputs."""
    return UserBatch(
        behaviour_ids=inputs["behaviour_ids"],
        mask=inputs["mask"],
        profile_ids=inputs["profile_ids"],
        initial_logits=inputs["initial_logits"],
    )


def umi_config(inputs: Tensors, params: Tensors, config: Config) -> UMIConfig:
    """The model config, its sizes read off the tensors."""
    return UMIConfig(
        num_items=params["item_table"].shape[0],
        num_profile_values=params["profile_table"].shape[0],
        num_fields=inputs["profile_ids"].shape[1],
        dim=params["item_table"].shape[1],
        profile_dim=params["profile_table"].shape[1],
        num_interests=inputs["initial_logits"].shape[2],
        attention_hidden=params["uga_W1"].shape[1],
        field_hidden=params["refine_Wd1"].shape[1],
        refine_hidden=params["refine_Wa"].shape[1],
        routing=routing_config(config),
    )


def capsule_intermediates(routing: CapsuleRoutingCache) -> Tensors:
    """Each routing iteration's coefficients, then the capsules, in computation order."""
    coefficients = {f"routing_coefficients_iter{r}": c for r, c in enumerate(routing.coefficients)}
    return {**coefficients, "capsules": routing.interests[-1]}


def model_grads(grads: Params, d_initial_logits: Array) -> Tensors:
    """The golden grads of a multi-interest model: the routing-logit initialisation's, then every
    parameter's."""
    return {"d_initial_logits": d_initial_logits, **{f"d_{name}": g for name, g in grads.items()}}


def umi_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    interests, cache = umi_forward(params, batch_of(inputs), umi_config(inputs, params, config))
    grads, d_logits = umi_backward_with_inputs(cache, upstream["d_interests"])
    refinement = cache.refinement
    if not isinstance(refinement, InterestRefinementCache):
        raise ValueError("config: the umi golden cases are the full model (interest refinement on)")
    return Result(
        outputs={"interests": interests},
        grads=model_grads(grads, d_logits),
        intermediates={
            "item_weights": cache.routing.item_weights,
            **capsule_intermediates(cache.routing),
            "field_weights": refinement.field_weights,
        },
    )


COMPONENTS = {"umi": umi_reference}


def model_inputs(
    rng: np.random.Generator,
    b: int,
    length: int,
    k: int,
    vocab: int,
    fields: int,
    profile_values: int,
) -> Tensors:
    """Ids with duplicates (row 0 repeats its first behaviour; profile ids repeat across rows),
    a random mask whose row 1 is fully padded (when B > 2), and N(0, 1) initial logits."""
    ids = rng.integers(0, vocab, (b, length))
    ids[0, 1] = ids[0, 0]
    mask = random_mask(rng, b, length)
    mask[0, :2] = True
    if b > 2:
        mask[1] = False
    return {
        "behaviour_ids": ids.astype(np.int64),
        "mask": mask,
        "profile_ids": rng.integers(0, profile_values, (b, fields)).astype(np.int64),
        "initial_logits": rng.standard_normal((b, length, k)),
    }


def model_builder(
    init: Callable[[np.random.Generator], Params], b: int, length: int, k: int, vocab: int, d: int
) -> Builder:
    """A multi-interest model case: params from `init` with N(0, 0.1^2) biases, `model_inputs`
    of FIELDS profile fields, and the upstream d_interests (B, K, D)."""

    def build(rng: np.random.Generator) -> CaseTensors:
        params = init(rng)
        # Nonzero biases so a transposed or dropped bias shows.
        for name, value in params.items():
            if value.ndim == 1:
                params[name] = 0.1 * rng.standard_normal(value.shape)
        return CaseTensors(
            inputs=model_inputs(rng, b, length, k, vocab, FIELDS, PROFILE_VALUES),
            params=params,
            upstream=upstream_like(rng, {"interests": (b, k, d)}),
        )

    return build


@dataclass(frozen=True)
class ModelShape:
    """The sizes a multi-interest model case is drawn with (C = FIELDS profile fields of width
    F = FIELD_DIM, V_p = PROFILE_VALUES profile rows throughout)."""

    batch: int
    length: int
    interests: int
    vocab: int
    dim: int
    hidden: int

    def describe(self) -> str:
        return (
            f"B={self.batch}, L={self.length}, K={self.interests}, V={self.vocab}, D={self.dim}, "
            f"hidden {self.hidden}, C={FIELDS} fields of F={FIELD_DIM}"
        )


SMALL = ModelShape(batch=3, length=6, interests=3, vocab=7, dim=4, hidden=5)
REALISTIC = ModelShape(batch=3, length=16, interests=4, vocab=30, dim=8, hidden=8)


def model_cases(
    component: str, routing: Callable[[bool], Config], build: Callable[[ModelShape], Builder]
) -> tuple[CaseSpec, ...]:
    """The cases every multi-interest model has: small (detached and exact routing gradient) and
    realistic (detached). `routing(detach)` is the model's routing config, `build(shape)` draws
    its tensors."""
    section = f"spec/{component}.md#model"

    def case(name: str, why: str, shape: ModelShape, detach: bool) -> CaseSpec:
        config = routing(detach)
        description = f"{why}: {describe_routing(config)}; {shape.describe()}."
        return CaseSpec(component, name, description, section, config, build(shape))

    padded = "duplicate behaviour ids, row 1 fully padded"
    return (
        case("small_detached", f"Default routing, {padded}", SMALL, detach=True),
        case("small_exact", f"Exact routing gradient (initial logits get a gradient), {padded}", SMALL, detach=False),
        case("realistic", "A realistic shape", REALISTIC, detach=True),
    )


def _build(shape: ModelShape) -> Builder:
    cfg = UMIConfig(
        num_items=shape.vocab,
        num_profile_values=PROFILE_VALUES,
        num_fields=FIELDS,
        dim=shape.dim,
        profile_dim=FIELD_DIM,
        num_interests=shape.interests,
        attention_hidden=shape.hidden,
        field_hidden=shape.hidden,
        refine_hidden=shape.hidden,
    )
    return model_builder(lambda rng: umi_init(rng, cfg), shape.batch, shape.length, shape.interests, shape.vocab,
                         shape.dim)


def _routing(detach: bool) -> Config:
    return routing_case_config(iterations=3, update="replace", detach_routing=detach, map="per_interest")


CASES = model_cases("umi", _routing, _build)
