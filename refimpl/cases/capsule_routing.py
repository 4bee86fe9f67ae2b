"""Golden cases and the reference adapter of `capsule_routing` (spec/capsule_routing.md)."""

from __future__ import annotations

import numpy as np

from refimpl._check import BoolArray
from refimpl.cases._base import (
    Builder,
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
    shape: (B, L, K, D_out) per interest, (B, L, D_out) for the shared map)."""
    mapped = cache.mapped[:, :, 0, :] if cache.cfg.map == "shared" else cache.mapped
    named: Tensors = {
        "mapped_items": np.ascontiguousarray(mapped),
        "effective_item_weights": cache.weights,
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


def _config(iterations: int, update: str, detach: bool, mapping: str) -> Config:
    return {"iterations": iterations, "update": update, "detach_routing": detach, "map": mapping}


def _routing(
    b: int,
    length: int,
    k: int,
    d_in: int,
    d_out: int,
    mapping: str,
    rows: tuple[str, ...] = (),
    ones: bool = False,
    logit_scale: float = 1.0,
) -> Builder:
    """A routing case; `rows` names special rows: 'single' (one valid behaviour), 'empty' (all
    padded), 'zero' (valid behaviours whose vectors are zero); `ones` gives MIND's a_i = 1."""

    def build(rng: np.random.Generator) -> CaseTensors:
        items = rng.standard_normal((b, length, d_in))
        mask = random_mask(rng, b, length)
        for row, kind in enumerate(rows):
            mask[row] = kind == "zero"
            if kind == "single":
                mask[row, length // 2] = True
            if kind == "zero":
                items[row] = 0.0
        weights = np.ones((b, length)) if ones else rng.uniform(0.05, 1.0, (b, length))
        w_shape = (d_in, d_out) if mapping == "shared" else (k, d_in, d_out)
        return CaseTensors(
            inputs={
                "items": items,
                "item_weights": weights,
                "mask": mask,
                "initial_logits": logit_scale * rng.standard_normal((b, length, k)),
            },
            params={"W": rng.standard_normal(w_shape) / np.sqrt(d_in)},
            upstream=upstream_like(rng, {"interests": (b, k, d_out)}),
        )

    return build


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


def _case(
    name: str, description: str, config: Config, build: Builder, section: str = ""
) -> CaseSpec:
    return CaseSpec(
        "capsule_routing", name, description, f"{SPEC}#{section or 'algorithm'}", config, build
    )


UMI = ("per_interest", "replace")
MIND = ("shared", "accumulate")
EDGE_ROWS = ("single", "empty", "zero")

CASES = (
    _case(
        "tiny_hand_checked",
        "B=1, L=3, K=2, D=2, t=1, zero initial logits: the spec's worked example.",
        _config(1, "replace", True, "per_interest"),
        _tiny,
        "worked-example",
    ),
    _case(
        "umi_detached_t3",
        "UMI default: per-interest maps, replace, 3 iterations, detached; "
        "B=3, L=6, K=3, D_in=4, D_out=5.",
        _config(3, "replace", True, "per_interest"),
        _routing(3, 6, 3, 4, 5, "per_interest"),
    ),
    _case(
        "umi_exact_t3",
        "Per-interest maps, replace, 3 iterations, exact gradient; B=3, L=6, K=3, D_in=4, D_out=5.",
        _config(3, "replace", False, "per_interest"),
        _routing(3, 6, 3, 4, 5, "per_interest"),
        "gradient-modes",
    ),
    _case(
        "mind_detached_t3",
        "MIND: shared map, accumulate, a_i = 1, 3 iterations, detached; B=3, L=6, K=3, D=4.",
        _config(3, "accumulate", True, "shared"),
        _routing(3, 6, 3, 4, 4, "shared", ones=True),
    ),
    _case(
        "mind_exact_t3",
        "Shared map, accumulate, random a_i, exact gradient; B=3, L=6, K=3, D_in=4, D_out=5.",
        _config(3, "accumulate", False, "shared"),
        _routing(3, 6, 3, 4, 5, "shared"),
        "gradient-modes",
    ),
    _case(
        "per_interest_accumulate_exact_t3",
        "Per-interest maps with the accumulate update, exact; B=2, L=5, K=3, D=4.",
        _config(3, "accumulate", False, "per_interest"),
        _routing(2, 5, 3, 4, 4, "per_interest"),
        "gradient-modes",
    ),
    _case(
        "shared_replace_detached_t3",
        "Shared map with the replace update, detached; B=2, L=5, K=3, D=4.",
        _config(3, "replace", True, "shared"),
        _routing(2, 5, 3, 4, 4, "shared"),
    ),
    _case(
        "t1_exact",
        "One iteration, exact gradient (initial logits get a gradient through c^0); "
        "B=2, L=5, K=3, D=4.",
        _config(1, "replace", False, "per_interest"),
        _routing(2, 5, 3, 4, 4, "per_interest"),
        "gradient-modes",
    ),
    _case(
        "t1_detached",
        "One iteration, detached: interests = squash(sum a_i softmax(b0)_ij W_j e_i); "
        "B=2, L=5, K=3, D=4.",
        _config(1, "replace", True, "per_interest"),
        _routing(2, 5, 3, 4, 4, "per_interest"),
    ),
    _case(
        "k1_exact_t3",
        "K = 1 (c = 1 everywhere), 3 iterations, exact; B=2, L=5, D_in=4, D_out=3.",
        _config(3, "replace", False, "per_interest"),
        _routing(2, 5, 1, 4, 3, "per_interest"),
        "edge-cases",
    ),
    _case(
        "edge_rows_exact",
        "Row 0 one valid behaviour, row 1 all padded, row 2 valid but zero vectors "
        "(squash(0)); exact, t=3.",
        _config(3, "replace", False, "per_interest"),
        _routing(4, 5, 3, 4, 4, "per_interest", EDGE_ROWS),
        "edge-cases",
    ),
    _case(
        "edge_rows_mind_detached",
        "The edge rows of edge_rows_exact under MIND routing (shared, accumulate, a_i = 1), "
        "detached.",
        _config(3, "accumulate", True, "shared"),
        _routing(4, 5, 3, 4, 4, "shared", EDGE_ROWS, ones=True),
        "edge-cases",
    ),
    _case(
        "large_initial_logits_exact",
        "Initial logits ~ N(0, 30^2): the softmax over interests must not overflow; exact, t=3.",
        _config(3, "replace", False, "per_interest"),
        _routing(2, 5, 3, 4, 4, "per_interest", logit_scale=30.0),
        "edge-cases",
    ),
    _case(
        "realistic",
        "UMI default at a realistic shape: B=3, L=24, K=4, D_in=D_out=8, detached.",
        _config(3, "replace", True, "per_interest"),
        _routing(3, 24, 4, 8, 8, "per_interest", ("single",)),
    ),
)
