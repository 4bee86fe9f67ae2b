"""Golden cases and the reference adapter of `user_guided_attention`
(spec/user_guided_attention.md)."""

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
from refimpl.cases.capsule_routing import random_mask
from refimpl.nn.user_guided_attention import (
    UserGuidedAttentionParams,
    user_guided_attention_backward,
    user_guided_attention_forward,
)

SPEC = "spec/user_guided_attention.md"


def user_guided_attention_reference(
    inputs: Tensors, params: Tensors, config: Config, upstream: Tensors
) -> Result:
    weights, cache = user_guided_attention_forward(
        UserGuidedAttentionParams(**params), inputs["items"], inputs["user"], inputs["mask"]
    )
    grads = user_guided_attention_backward(cache, upstream["d_item_weights"])
    hidden, scores = cache.mlp.activated
    return Result(
        outputs={"item_weights": weights},
        grads={
            "d_items": grads.items,
            "d_user": grads.user,
            "d_W1": grads.params.W1,
            "d_b1": grads.params.b1,
            "d_W2": grads.params.W2,
            "d_b2": grads.params.b2,
        },
        intermediates={"hidden": hidden, "sigmoid_scores": scores[..., 0]},
    )


COMPONENTS = {"user_guided_attention": user_guided_attention_reference}


def random_params(rng: np.random.Generator, d_in: int, hidden: int) -> Tensors:
    """W1 ~ N(0, 1/d_in), W2 ~ N(0, 1/hidden), biases ~ N(0, 0.1^2)."""
    return {
        "W1": rng.standard_normal((d_in, hidden)) / np.sqrt(d_in),
        "b1": 0.1 * rng.standard_normal(hidden),
        "W2": rng.standard_normal((hidden, 1)) / np.sqrt(hidden),
        "b2": 0.1 * rng.standard_normal(1),
    }


@dataclass(frozen=True)
class AttentionShape:
    """The sizes a random case is drawn with (and described by); `empty_row` pads row 0 entirely."""

    batch: int
    length: int
    d: int
    d_user: int
    hidden: int
    empty_row: bool = False

    def describe(self) -> str:
        return f"B={self.batch}, L={self.length}, D={self.d}, D_u={self.d_user}, H={self.hidden}"

    def build(self, rng: np.random.Generator) -> CaseTensors:
        b, length = self.batch, self.length
        mask = random_mask(rng, b, length)
        if self.empty_row:
            mask[0] = False
        return CaseTensors(
            inputs={
                "items": rng.standard_normal((b, length, self.d)),
                "user": rng.standard_normal((b, self.d_user)),
                "mask": mask,
            },
            params=random_params(rng, self.d + self.d_user, self.hidden),
            upstream=upstream_like(rng, {"item_weights": (b, length)}),
        )


def _random_case(name: str, why: str, shape: AttentionShape, section: str) -> CaseSpec:
    return CaseSpec(
        "user_guided_attention", name, f"{why}; {shape.describe()}.", f"{SPEC}#{section}", {}, shape.build
    )


def _tiny(rng: np.random.Generator) -> CaseTensors:
    """The hand-checked case of the spec page: D = D_u = H = 1, unit weights, zero biases."""
    return CaseTensors(
        inputs={
            "items": np.array([[[1.0], [-2.0], [3.0]]]),
            "user": np.array([[0.5]]),
            "mask": np.array([[True, True, False]]),
        },
        params={
            "W1": np.array([[1.0], [1.0]]),
            "b1": np.zeros(1),
            "W2": np.array([[1.0]]),
            "b2": np.zeros(1),
        },
        upstream=upstream_like(rng, {"item_weights": (1, 3)}),
    )


def _relu_at_zero(rng: np.random.Generator) -> CaseTensors:
    """Integer-valued inputs and weights make pre-activations exactly 0: item 0 has both hidden
    units at 0, item 2 one unit at -0.5 and one at 2. relu'(0) = 0 (as torch): a port using
    [pre >= 0] fails d_items, d_user and d_W1, d_b1 here."""
    return CaseTensors(
        inputs={
            "items": np.array([[[1.0, -2.0], [2.0, 0.0], [0.5, 0.5]]]),
            "user": np.array([[1.0]]),
            "mask": np.ones((1, 3), dtype=bool),
        },
        params={
            "W1": np.array([[1.0, 1.0], [1.0, 0.0], [1.0, -1.0]]),
            "b1": np.zeros(2),
            "W2": np.array([[1.0], [-1.0]]),
            "b2": np.array([0.5]),
        },
        upstream=upstream_like(rng, {"item_weights": (1, 3)}),
    )


CASES = (
    CaseSpec(
        "user_guided_attention",
        "tiny_hand_checked",
        "The spec's worked example (D = D_u = H = 1, unit weights, zero biases); the last item padded.",
        f"{SPEC}#worked-example",
        {},
        _tiny,
    ),
    _random_case("small", "Random masks", AttentionShape(batch=2, length=4, d=3, d_user=2, hidden=5), "equation"),
    _random_case(
        "all_padded_row",
        "Row 0 all padded (weights and gradients zero)",
        AttentionShape(batch=3, length=5, d=4, d_user=3, hidden=4, empty_row=True),
        "edge-cases",
    ),
    _random_case(
        "realistic", "A realistic shape", AttentionShape(batch=4, length=30, d=8, d_user=6, hidden=8), "equation"
    ),
    CaseSpec(
        "user_guided_attention",
        "relu_at_zero",
        "Pre-activations exactly 0 (integer inputs and weights): relu'(0) = 0.",
        f"{SPEC}#edge-cases",
        {},
        _relu_at_zero,
    ),
)
