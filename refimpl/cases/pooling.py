"""Golden cases and the reference adapter of `masked_mean_pool` (spec/pooling.md)."""

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
from refimpl.nn.pooling import masked_mean_pool_backward, masked_mean_pool_forward

SPEC = "spec/pooling.md"


def masked_mean_pool_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    out, cache = masked_mean_pool_forward(inputs["x"], inputs["mask"])
    d_x = masked_mean_pool_backward(cache, upstream["d_out"])
    return Result(outputs={"out": out}, grads={"d_x": d_x})


COMPONENTS = {"masked_mean_pool": masked_mean_pool_reference}


def _random(b: int, length: int, d: int) -> Builder:
    """Random masks; row 0 all masked, row 1 all valid, row 2 (if any) a single valid position."""

    def build(rng: np.random.Generator) -> CaseTensors:
        x = rng.standard_normal((b, length, d))
        mask = rng.random((b, length)) < 0.6
        mask[0] = False
        mask[1] = True
        if b > 2:
            mask[2] = False
            mask[2, length - 1] = True
        return CaseTensors(
            inputs={"x": x, "mask": mask},
            params={},
            upstream=upstream_like(rng, {"out": (b, d)}),
        )

    return build


def _tiny_hand(rng: np.random.Generator) -> CaseTensors:
    """B=2, L=3, D=2: row 0 keeps positions 0 and 2, row 1 is all masked."""
    return CaseTensors(
        inputs={
            "x": np.array([[[1.0, 2.0], [10.0, 20.0], [3.0, -4.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 1.0]]]),
            "mask": np.array([[True, False, True], [False, False, False]]),
        },
        params={},
        upstream={"d_out": np.array([[1.0, -2.0], [3.0, 0.5]])},
    )


CASES = (
    CaseSpec(
        "masked_mean_pool",
        "tiny_hand",
        "B=2, L=3, D=2; row 1 all masked (pools to zeros, zero gradient); numbers in the spec.",
        f"{SPEC}#worked-example",
        {},
        _tiny_hand,
    ),
    CaseSpec(
        "masked_mean_pool",
        "small",
        "B=4, L=7, D=5: an all-masked row, an all-valid row, a single valid position.",
        f"{SPEC}#edge-cases",
        {},
        _random(4, 7, 5),
    ),
    CaseSpec(
        "masked_mean_pool",
        "long_rows",
        "B=8, L=50 (the short-term encoder's batch and length), D=4; row 0 all masked.",
        f"{SPEC}#shapes",
        {},
        _random(8, 50, 4),
    ),
)
