"""Golden cases and the reference adapter of the `umi` model (spec/umi.md)."""

from __future__ import annotations

from collections.abc import Callable

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
from refimpl.cases.capsule_routing import random_mask, routing_config
from refimpl.models.umi import Params, UMIConfig, UserBatch, umi_backward_with_inputs, umi_forward, umi_init
from refimpl.nn.capsule_routing import CapsuleRoutingCache

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
    return Result(
        outputs={"interests": interests},
        grads=model_grads(grads, d_logits),
        intermediates={
            "item_weights": cache.routing.weights,
            **capsule_intermediates(cache.routing),
            "field_weights": cache.refinement.field_weights,
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


def _build(b: int, length: int, k: int, vocab: int, d: int, hidden: int) -> Builder:
    cfg = UMIConfig(
        num_items=vocab,
        num_profile_values=PROFILE_VALUES,
        num_fields=FIELDS,
        dim=d,
        profile_dim=FIELD_DIM,
        num_interests=k,
        attention_hidden=hidden,
        field_hidden=hidden,
        refine_hidden=hidden,
    )
    return model_builder(lambda rng: umi_init(rng, cfg), b, length, k, vocab, d)


def _config(detach: bool) -> Config:
    return {"iterations": 3, "update": "replace", "detach_routing": detach, "map": "per_interest"}


CASES = (
    CaseSpec(
        "umi",
        "small_detached",
        "UMI default (detached routing, 3 iterations): B=3, L=6, K=3, V=7, D=4, C=2 fields of F=3; "
        "duplicate behaviour ids, row 1 fully padded.",
        f"{SPEC}#model",
        _config(True),
        _build(3, 6, 3, 7, 4, 5),
    ),
    CaseSpec(
        "umi",
        "small_exact",
        "As small_detached with the exact routing gradient (initial logits get a gradient).",
        f"{SPEC}#model",
        _config(False),
        _build(3, 6, 3, 7, 4, 5),
    ),
    CaseSpec(
        "umi",
        "realistic",
        "B=3, L=16, K=4, V=30, D=8, hidden 8; detached.",
        f"{SPEC}#model",
        _config(True),
        _build(3, 16, 4, 30, 8, 8),
    ),
)
