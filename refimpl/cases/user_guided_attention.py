"""Golden cases and the reference adapter of `user_guided_attention`
(spec/user_guided_attention.md)."""

from __future__ import annotations

import numpy as np

from refimpl.cases._base import (
    Builder,
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


def _build(b: int, length: int, d: int, d_user: int, hidden: int, empty_row: bool) -> Builder:
    def build(rng: np.random.Generator) -> CaseTensors:
        mask = random_mask(rng, b, length)
        if empty_row:
            mask[0] = False
        return CaseTensors(
            inputs={
                "items": rng.standard_normal((b, length, d)),
                "user": rng.standard_normal((b, d_user)),
                "mask": mask,
            },
            params=random_params(rng, d + d_user, hidden),
            upstream=upstream_like(rng, {"item_weights": (b, length)}),
        )

    return build


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
        "B=1, L=3, D=D_u=H=1, unit weights: the spec's worked example; the last item padded.",
        f"{SPEC}#worked-example",
        {},
        _tiny,
    ),
    CaseSpec(
        "user_guided_attention",
        "small",
        "B=2, L=4, D=3, D_u=2, H=5, random masks.",
        f"{SPEC}#equation",
        {},
        _build(2, 4, 3, 2, 5, False),
    ),
    CaseSpec(
        "user_guided_attention",
        "all_padded_row",
        "Row 0 all padded (weights and gradients zero); B=3, L=5, D=4, D_u=3, H=4.",
        f"{SPEC}#edge-cases",
        {},
        _build(3, 5, 4, 3, 4, True),
    ),
    CaseSpec(
        "user_guided_attention",
        "realistic",
        "B=4, L=30, D=8, D_u=6, H=8.",
        f"{SPEC}#equation",
        {},
        _build(4, 30, 8, 6, 8, False),
    ),
    CaseSpec(
        "user_guided_attention",
        "relu_at_zero",
        "Pre-activations exactly 0 (integer inputs and weights): relu'(0) = 0. B=1, L=3, D=2, D_u=1, H=2.",
        f"{SPEC}#edge-cases",
        {},
        _relu_at_zero,
    ),
)
