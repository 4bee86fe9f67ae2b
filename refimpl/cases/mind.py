"""Golden cases and the reference adapter of the `mind` model (spec/mind.md)."""

from __future__ import annotations

from refimpl.cases._base import Builder, Config, Result, Tensors
from refimpl.cases.capsule_routing import routing_case_config, routing_config
from refimpl.cases.umi import (
    FIELD_DIM,
    FIELDS,
    PROFILE_VALUES,
    ModelShape,
    batch_of,
    capsule_intermediates,
    model_builder,
    model_cases,
    model_grads,
)
from refimpl.models.mind import MINDConfig, mind_backward_with_inputs, mind_forward, mind_init

SPEC = "spec/mind.md"


def mind_config(inputs: Tensors, params: Tensors, config: Config) -> MINDConfig:
    """The model config, its sizes read off the tensors."""
    return MINDConfig(
        num_items=params["item_table"].shape[0],
        num_profile_values=params["profile_table"].shape[0],
        num_fields=inputs["profile_ids"].shape[1],
        dim=params["item_table"].shape[1],
        profile_dim=params["profile_table"].shape[1],
        num_interests=inputs["initial_logits"].shape[2],
        hidden=params["mlp_W1"].shape[1],
        routing=routing_config(config),
    )


def mind_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    interests, cache = mind_forward(params, batch_of(inputs), mind_config(inputs, params, config))
    grads, d_logits = mind_backward_with_inputs(cache, upstream["d_interests"])
    return Result(
        outputs={"interests": interests},
        grads=model_grads(grads, d_logits),
        intermediates={**capsule_intermediates(cache.routing), "hidden": cache.output.activated[0]},
    )


COMPONENTS = {"mind": mind_reference}


def _build(shape: ModelShape) -> Builder:
    cfg = MINDConfig(
        num_items=shape.vocab,
        num_profile_values=PROFILE_VALUES,
        num_fields=FIELDS,
        dim=shape.dim,
        profile_dim=FIELD_DIM,
        num_interests=shape.interests,
        hidden=shape.hidden,
    )
    return model_builder(lambda rng: mind_init(rng, cfg), shape.batch, shape.length, shape.interests, shape.vocab,
                         shape.dim)


def _routing(detach: bool) -> Config:
    return routing_case_config(iterations=3, update="accumulate", detach_routing=detach, map="shared")


CASES = model_cases("mind", _routing, _build)
