"""Golden cases and the reference adapter of the `comirec` model (spec/dynamic_routing.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl.cases._base import Builder, CaseSpec, CaseTensors, Config, Result, Tensors, upstream_like
from refimpl.cases.dynamic_routing import (
    describe_dynamic_routing,
    dynamic_routing_case_config,
    dynamic_routing_config,
)
from refimpl.cases.umi import model_inputs
from refimpl.models.comirec import ComiRecConfig, comirec_backward, comirec_forward, comirec_init
from refimpl.models.umi import UserBatch

SPEC = "spec/dynamic_routing.md"


def comirec_config(params: Tensors, config: Config) -> ComiRecConfig:
    """The model config, its sizes read off the params."""
    max_length, k, d, _ = params["routing_W"].shape
    return ComiRecConfig(
        num_items=params["item_table"].shape[0],
        dim=d,
        num_interests=k,
        max_length=max_length,
        routing=dynamic_routing_config(config),
    )


def comirec_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    cfg = comirec_config(params, config)
    ids = inputs["behaviour_ids"]
    b, length = ids.shape
    # ComiRec reads neither a profile nor a logit initialisation: empty profile, zero logits
    batch = UserBatch(
        behaviour_ids=ids,
        mask=inputs["mask"],
        profile_ids=np.zeros((b, 0), dtype=np.int64),
        initial_logits=np.zeros((b, length, cfg.num_interests), dtype=params["item_table"].dtype),
    )
    interests, cache = comirec_forward(params, batch, cfg)
    grads = comirec_backward(cache, upstream["d_interests"])
    coefficients = {f"routing_coefficients_iter{r}": c for r, c in enumerate(cache.routing.coefficients)}
    return Result(
        outputs={"interests": interests},
        grads={f"d_{name}": g for name, g in grads.items()},
        intermediates=coefficients,
    )


COMPONENTS = {"comirec": comirec_reference}


@dataclass(frozen=True)
class ComiRecShape:
    batch: int
    length: int  # L of the batch
    max_length: int  # L_max of the params (>= L)
    interests: int
    vocab: int
    dim: int

    def describe(self) -> str:
        return (
            f"B={self.batch}, L={self.length}, L_max={self.max_length}, K={self.interests}, V={self.vocab}, "
            f"D={self.dim}"
        )


def _build(shape: ComiRecShape) -> Builder:
    cfg = ComiRecConfig(
        num_items=shape.vocab, dim=shape.dim, num_interests=shape.interests, max_length=shape.max_length
    )

    def build(rng: np.random.Generator) -> CaseTensors:
        params = comirec_init(rng, cfg)
        inputs = model_inputs(rng, shape.batch, shape.length, shape.interests, shape.vocab, 0, 1)
        return CaseTensors(
            inputs={"behaviour_ids": inputs["behaviour_ids"], "mask": inputs["mask"]},
            params=params,
            upstream=upstream_like(rng, {"interests": (shape.batch, shape.interests, shape.dim)}),
        )

    return build


def _case(name: str, why: str, shape: ComiRecShape, detach: bool) -> CaseSpec:
    config = dynamic_routing_case_config(iterations=3, detach_routing=detach)
    description = f"{why}: {describe_dynamic_routing(config)}; {shape.describe()}."
    return CaseSpec("comirec", name, description, f"{SPEC}#model", config, _build(shape))


PADDED = "duplicate behaviour ids, row 1 fully padded"
SMALL = ComiRecShape(batch=3, length=5, max_length=5, interests=3, vocab=7, dim=4)

CASES = (
    _case("small_detached", f"ComiRec-DR default, {PADDED}", SMALL, detach=True),
    _case(
        "short_batch_detached",
        f"A batch shorter than max_length: maps 4 and 5 unused, zero gradient; {PADDED}",
        ComiRecShape(batch=3, length=4, max_length=6, interests=2, vocab=7, dim=3),
        detach=True,
    ),
)
