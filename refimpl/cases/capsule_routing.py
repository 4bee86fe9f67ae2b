"""Golden cases and the reference adapter of `capsule_routing` (spec/capsule_routing.md)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from refimpl._check import BoolArray
from refimpl.cases._base import (
    CaseSpec,
    CaseTensors,
    Config,
    Result,
    Tensors,
    upstream_like,
)
from refimpl.nn.capsule_routing import (
    CapsuleRoutingCache,
    CapsuleRoutingConfig,
    CapsuleRoutingParams,
    capsule_routing_backward,
    capsule_routing_forward,
)

SPEC = "spec/capsule_routing.md"


def routing_config(config: Config) -> CapsuleRoutingConfig:
    """The routing config of a case config (keys iterations, update, detach_routing, map)."""
    return CapsuleRoutingConfig(
        iterations=config["iterations"],
        update=config["update"],
        detach_routing=config["detach_routing"],
        map=config["map"],
    )


def routing_intermediates(cache: CapsuleRoutingCache) -> Tensors:
    """The routing's named intermediates in computation order (the mapped items in their natural
    shape: (B, L, K, D_out) per interest, (B, L, D_out) for the shared map). The item weights a_i
    the routing uses are the input `item_weights` with padded behaviours at 0: a function of two
    inputs, not stored again under a second name."""
    mapped = cache.mapped[:, :, 0, :] if cache.cfg.map == "shared" else cache.mapped
    named: Tensors = {
        "mapped_items": np.ascontiguousarray(mapped),
    }
    for r in range(cache.cfg.iterations):
        named[f"routing_coefficients_iter{r}"] = cache.coefficients[r]
        named[f"weighted_sums_iter{r}"] = cache.sums[r]
        named[f"interests_iter{r}"] = cache.interests[r]
        if r + 1 < cache.cfg.iterations:
            named[f"routing_logits_iter{r + 1}"] = cache.logits[r + 1]
    return named


def capsule_routing_reference(
    inputs: Tensors, params: Tensors, config: Config, upstream: Tensors
) -> Result:
    interests, cache = capsule_routing_forward(
        CapsuleRoutingParams(W=params["W"]),
        inputs["items"],
        inputs["item_weights"],
        inputs["mask"],
        inputs["initial_logits"],
        routing_config(config),
    )
    grads = capsule_routing_backward(cache, upstream["d_interests"])
    return Result(
        outputs={"interests": interests},
        grads={
            "d_items": grads.items,
            "d_item_weights": grads.item_weights,
            "d_initial_logits": grads.initial_logits,
            "d_W": grads.W,
        },
        intermediates=routing_intermediates(cache),
    )


COMPONENTS = {"capsule_routing": capsule_routing_reference}


def random_mask(rng: np.random.Generator, b: int, length: int) -> BoolArray:
    """About 70% valid positions, at least one per row."""
    mask = rng.random((b, length)) < 0.7
    mask[np.arange(b), rng.integers(0, length, size=b)] = True
    return mask


@dataclass(frozen=True)
class Routing:
    """One routing case, declared once: the routing config (`config`), the shapes its tensors are
    drawn with (`build`) and the description both give (`describe`).

    `special_rows` names rows of the batch: 'single' (one valid behaviour), 'empty' (all padded),
    'zero' (valid behaviours whose vectors are zero); `unit_item_weights` gives MIND's a_i = 1."""

    batch: int
    length: int
    interests: int
    d_in: int
    d_out: int
    iterations: int = 3
    update: str = "replace"
    detach_routing: bool = True
    map: str = "per_interest"
    special_rows: tuple[str, ...] = ()
    unit_item_weights: bool = False
    logit_scale: float = 1.0

    @property
    def config(self) -> Config:
        return routing_case_config(self.iterations, self.update, self.detach_routing, self.map)

    def describe(self) -> str:
        widths = f"D={self.d_in}" if self.d_in == self.d_out else f"D_in={self.d_in}, D_out={self.d_out}"
        shapes = f"B={self.batch}, L={self.length}, K={self.interests}, {widths}"
        weights = "a_i = 1" if self.unit_item_weights else "random a_i"
        return f"{describe_routing(self.config)}, {weights}; {shapes}"

    def build(self, rng: np.random.Generator) -> CaseTensors:
        b, length, k, d_in, d_out = self.batch, self.length, self.interests, self.d_in, self.d_out
        items = rng.standard_normal((b, length, d_in))
        mask = random_mask(rng, b, length)
        for row, kind in enumerate(self.special_rows):
            mask[row] = kind == "zero"
            if kind == "single":
                mask[row, length // 2] = True
            if kind == "zero":
                items[row] = 0.0
        weights = np.ones((b, length)) if self.unit_item_weights else rng.uniform(0.05, 1.0, (b, length))
        w_shape = (d_in, d_out) if self.map == "shared" else (k, d_in, d_out)
        return CaseTensors(
            inputs={
                "items": items,
                "item_weights": weights,
                "mask": mask,
                "initial_logits": self.logit_scale * rng.standard_normal((b, length, k)),
            },
            params={"W": rng.standard_normal(w_shape) / np.sqrt(d_in)},
            upstream=upstream_like(rng, {"interests": (b, k, d_out)}),
        )


def routing_case_config(iterations: int, update: str, detach_routing: bool, map: str) -> Config:
    """A case config of the routing (the keys `routing_config` reads)."""
    return {"iterations": iterations, "update": update, "detach_routing": detach_routing, "map": map}


def describe_routing(config: Config) -> str:
    """The routing config in words, e.g. 'per-interest maps, replace, 3 iterations, detached'."""
    maps = "per-interest maps" if config["map"] == "per_interest" else "shared map"
    gradient = "detached" if config["detach_routing"] else "exact gradient"
    iterations = config["iterations"]
    return f"{maps}, {config['update']}, {iterations} iteration{'s' * (iterations != 1)}, {gradient}"


def _tiny(rng: np.random.Generator) -> CaseTensors:
    """The hand-checked case of the spec page: W_0 = I, W_1 swaps the two coordinates."""
    return CaseTensors(
        inputs={
            "items": np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]),
            "item_weights": np.array([[1.0, 0.5, 1.0]]),
            "mask": np.ones((1, 3), dtype=bool),
            "initial_logits": np.zeros((1, 3, 2)),
        },
        params={"W": np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])},
        upstream=upstream_like(rng, {"interests": (1, 2, 2)}),
    )


def _case(name: str, why: str, routing: Routing, section: str = "algorithm") -> CaseSpec:
    """A case whose description is `why` followed by what `routing` declares."""
    return CaseSpec(
        "capsule_routing", name, f"{why}: {routing.describe()}.", f"{SPEC}#{section}", routing.config, routing.build
    )


TINY_CONFIG = routing_case_config(iterations=1, update="replace", detach_routing=True, map="per_interest")
SMALL = Routing(batch=2, length=5, interests=3, d_in=4, d_out=4)
EDGE_ROWS = ("single", "empty", "zero")

CASES = (
    CaseSpec(
        "capsule_routing",
        "tiny_hand_checked",
        "The spec's worked example (W_0 = I, W_1 swaps the coordinates, zero initial logits): "
        f"{describe_routing(TINY_CONFIG)}.",
        f"{SPEC}#worked-example",
        TINY_CONFIG,
        _tiny,
    ),
    _case("umi_detached_t3", "UMI default", Routing(batch=3, length=6, interests=3, d_in=4, d_out=5)),
    _case(
        "umi_exact_t3",
        "UMI's routing with the exact gradient",
        Routing(batch=3, length=6, interests=3, d_in=4, d_out=5, detach_routing=False),
        "gradient-modes",
    ),
    _case(
        "mind_detached_t3",
        "MIND default",
        Routing(batch=3, length=6, interests=3, d_in=4, d_out=4, update="accumulate", map="shared",
                unit_item_weights=True),
    ),
    _case(
        "mind_exact_t3",
        "MIND's routing with random a_i and the exact gradient",
        Routing(batch=3, length=6, interests=3, d_in=4, d_out=5, update="accumulate", map="shared",
                detach_routing=False),
        "gradient-modes",
    ),
    _case(
        "per_interest_accumulate_exact_t3",
        "UMI's maps with MIND's update",
        replace(SMALL, update="accumulate", detach_routing=False),
        "gradient-modes",
    ),
    _case(
        "shared_replace_detached_t3",
        "Shared map with the replace update",
        replace(SMALL, map="shared"),
    ),
    _case(
        "t1_exact",
        "One iteration, exact gradient (initial logits get a gradient through c^0)",
        replace(SMALL, iterations=1, detach_routing=False),
        "gradient-modes",
    ),
    _case(
        "t1_detached",
        "One iteration, detached: interests = squash(sum a_i softmax(b0)_ij W_j e_i)",
        replace(SMALL, iterations=1),
    ),
    _case(
        "k1_exact_t3",
        "K = 1 (c = 1 everywhere)",
        Routing(batch=2, length=5, interests=1, d_in=4, d_out=3, detach_routing=False),
        "edge-cases",
    ),
    _case(
        "edge_rows_exact",
        "Row 0 one valid behaviour, row 1 all padded, row 2 valid but zero vectors (squash(0))",
        replace(SMALL, batch=4, special_rows=EDGE_ROWS, detach_routing=False),
        "edge-cases",
    ),
    _case(
        "edge_rows_mind_detached",
        "The edge rows of edge_rows_exact under MIND routing",
        replace(SMALL, batch=4, special_rows=EDGE_ROWS, update="accumulate", map="shared",
                unit_item_weights=True),
        "edge-cases",
    ),
    _case(
        "large_initial_logits_exact",
        "Initial logits ~ N(0, 30^2): the softmax over interests must not overflow",
        replace(SMALL, logit_scale=30.0, detach_routing=False),
        "edge-cases",
    ),
    _case(
        "realistic",
        "UMI default at a realistic shape, row 0 with one valid behaviour",
        Routing(batch=3, length=24, interests=4, d_in=8, d_out=8, special_rows=("single",)),
    ),
)
