"""Golden cases and the reference adapter of `dynamic_routing` (spec/dynamic_routing.md)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from refimpl.cases._base import CaseSpec, CaseTensors, Config, Result, Tensors, upstream_like
from refimpl.cases.capsule_routing import random_mask
from refimpl.nn.dynamic_routing import (
    DynamicRoutingCache,
    DynamicRoutingConfig,
    DynamicRoutingParams,
    dynamic_routing_backward,
    dynamic_routing_forward,
)

SPEC = "spec/dynamic_routing.md"


def dynamic_routing_config(config: Config) -> DynamicRoutingConfig:
    """The routing config of a case config (keys iterations, detach_routing)."""
    return DynamicRoutingConfig(iterations=config["iterations"], detach_routing=config["detach_routing"])


def dynamic_routing_intermediates(cache: DynamicRoutingCache) -> Tensors:
    """The routing's named intermediates in computation order (b^0 = 0 is not stored)."""
    named: Tensors = {"mapped_items": cache.mapped}
    for r in range(cache.cfg.iterations):
        named[f"routing_coefficients_iter{r}"] = cache.coefficients[r]
        named[f"weighted_sums_iter{r}"] = cache.sums[r]
        named[f"interests_iter{r}"] = cache.interests[r]
        if r + 1 < cache.cfg.iterations:
            named[f"routing_logits_iter{r + 1}"] = cache.logits[r + 1]
    return named


def dynamic_routing_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    interests, cache = dynamic_routing_forward(
        DynamicRoutingParams(W=params["W"]), inputs["items"], inputs["mask"], dynamic_routing_config(config)
    )
    grads = dynamic_routing_backward(cache, upstream["d_interests"])
    return Result(
        outputs={"interests": interests},
        grads={"d_items": grads.items, "d_W": grads.W},
        intermediates=dynamic_routing_intermediates(cache),
    )


COMPONENTS = {"dynamic_routing": dynamic_routing_reference}


def dynamic_routing_case_config(iterations: int, detach_routing: bool) -> Config:
    """A case config of the routing (the keys `dynamic_routing_config` reads)."""
    return {"iterations": iterations, "detach_routing": detach_routing}


def describe_dynamic_routing(config: Config) -> str:
    """The routing config in words, e.g. '3 iterations, detached'."""
    iterations = config["iterations"]
    gradient = "detached" if config["detach_routing"] else "exact gradient"
    return f"per-position maps, zero initial logits, {iterations} iteration{'s' * (iterations != 1)}, {gradient}"


@dataclass(frozen=True)
class Routing:
    """One routing case: its config, the shapes its tensors are drawn with and the description
    both give. `special_rows` names rows: 'single' (one valid behaviour), 'empty' (all padded),
    'zero' (valid behaviours whose vectors are zero); `item_scale` scales the items (large
    agreements, hence large logits)."""

    batch: int
    length: int
    interests: int
    d_in: int
    d_out: int
    iterations: int = 3
    detach_routing: bool = True
    special_rows: tuple[str, ...] = ()
    item_scale: float = 1.0

    @property
    def config(self) -> Config:
        return dynamic_routing_case_config(self.iterations, self.detach_routing)

    def describe(self) -> str:
        widths = f"D={self.d_in}" if self.d_in == self.d_out else f"D_in={self.d_in}, D_out={self.d_out}"
        return f"{describe_dynamic_routing(self.config)}; B={self.batch}, L={self.length}, K={self.interests}, {widths}"

    def build(self, rng: np.random.Generator) -> CaseTensors:
        b, length, k, d_in, d_out = self.batch, self.length, self.interests, self.d_in, self.d_out
        items = self.item_scale * rng.standard_normal((b, length, d_in))
        mask = random_mask(rng, b, length)
        for row, kind in enumerate(self.special_rows):
            mask[row] = kind == "zero"
            if kind == "single":
                mask[row, length // 2] = True
            if kind == "zero":
                items[row] = 0.0
        return CaseTensors(
            inputs={"items": items, "mask": mask},
            params={"W": rng.standard_normal((length, k, d_in, d_out)) / np.sqrt(d_in)},
            upstream=upstream_like(rng, {"interests": (b, k, d_out)}),
        )


def _tiny(rng: np.random.Generator) -> CaseTensors:
    """The hand-checked case of the spec page: two positions, two interests, W[i, j] = I except
    W[1, 1] which swaps the coordinates."""
    identity, swap = np.eye(2), np.array([[0.0, 1.0], [1.0, 0.0]])
    return CaseTensors(
        inputs={"items": np.array([[[3.0, 0.0], [0.0, 1.0]]]), "mask": np.ones((1, 2), dtype=bool)},
        params={"W": np.stack([np.stack([identity, identity]), np.stack([identity, swap])])},
        upstream=upstream_like(rng, {"interests": (1, 2, 2)}),
    )


def _case(
    name: str, why: str, routing: Routing, section: str = "algorithm", store_intermediates: bool = True
) -> CaseSpec:
    return CaseSpec(
        "dynamic_routing", name, f"{why}: {routing.describe()}.", f"{SPEC}#{section}", routing.config, routing.build,
        store_intermediates=store_intermediates,
    )


TINY_CONFIG = dynamic_routing_case_config(iterations=1, detach_routing=True)
SMALL = Routing(batch=2, length=5, interests=3, d_in=4, d_out=3)
EDGE_ROWS = ("single", "empty", "zero")

CASES = (
    CaseSpec(
        "dynamic_routing",
        "tiny_hand_checked",
        "The spec's worked example (W[i, j] = I except W[1, 1] swaps the coordinates): "
        f"{describe_dynamic_routing(TINY_CONFIG)}.",
        f"{SPEC}#worked-example",
        TINY_CONFIG,
        _tiny,
    ),
    _case("comirec_detached_t3", "ComiRec-DR default", Routing(batch=3, length=6, interests=3, d_in=4, d_out=4)),
    _case("comirec_exact_t3", "Exact routing gradient", replace(SMALL, detach_routing=False), "gradient-modes"),
    _case("t1_detached", "One iteration: c = 1/K at every valid position", replace(SMALL, iterations=1)),
    _case(
        "k1_exact_t3", "K = 1 (c = 1 at every valid position)", replace(SMALL, interests=1, detach_routing=False),
        "edge-cases",
        store_intermediates=False,
    ),
    _case(
        "edge_rows_exact",
        "Row 0 one valid behaviour, row 1 all padded, row 2 valid but zero vectors (squash(0))",
        replace(SMALL, batch=3, special_rows=EDGE_ROWS, detach_routing=False),
        "edge-cases",
    ),
    _case(
        "large_agreement_exact",
        "Items scaled by 30: the logits reach the thousands and the softmax must not overflow",
        replace(SMALL, item_scale=30.0, detach_routing=False),
        "edge-cases",
        store_intermediates=False,
    ),
)
