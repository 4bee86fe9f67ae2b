"""Golden cases and the reference adapter of the `mind` model (spec/mind.md)."""

from __future__ import annotations

from refimpl.cases._base import Builder, CaseSpec, Config, Result, Tensors
from refimpl.cases.capsule_routing import routing_config
from refimpl.cases.umi import (
    FIELD_DIM,
    FIELDS,
    PROFILE_VALUES,
    batch_of,
    capsule_intermediates,
    model_builder,
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


def _build(b: int, length: int, k: int, vocab: int, d: int, hidden: int) -> Builder:
    cfg = MINDConfig(
        num_items=vocab,
        num_profile_values=PROFILE_VALUES,
        num_fields=FIELDS,
        dim=d,
        profile_dim=FIELD_DIM,
        num_interests=k,
        hidden=hidden,
    )
    return model_builder(lambda rng: mind_init(rng, cfg), b, length, k, vocab, d)


def _config(detach: bool) -> Config:
    return {"iterations": 3, "update": "accumulate", "detach_routing": detach, "map": "shared"}


CASES = (
    CaseSpec(
        "mind",
        "small_detached",
        "MIND default (shared map, accumulate, a_i = 1, detached, 3 iterations): B=3, L=6, K=3, "
        "V=7, D=4, C=2 fields of F=3; duplicate behaviour ids, row 1 fully padded.",
        f"{SPEC}#model",
        _config(True),
        _build(3, 6, 3, 7, 4, 5),
    ),
    CaseSpec(
        "mind",
        "small_exact",
        "As small_detached with the exact routing gradient.",
        f"{SPEC}#model",
        _config(False),
        _build(3, 6, 3, 7, 4, 5),
    ),
    CaseSpec(
        "mind",
        "realistic",
        "B=3, L=16, K=4, V=30, D=8, hidden 8; detached.",
        f"{SPEC}#model",
        _config(True),
        _build(3, 16, 4, 30, 8, 8),
    ),
)
