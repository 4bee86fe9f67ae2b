"""Golden cases and the reference adapter of `masked_mean_pool` (spec/pooling.md)."""

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
from refimpl.nn.pooling import masked_mean_pool_backward, masked_mean_pool_forward

SPEC = "spec/pooling.md"


def masked_mean_pool_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    out, cache = masked_mean_pool_forward(inputs["x"], inputs["mask"])
    d_x = masked_mean_pool_backward(cache, upstream["d_out"])
    return Result(outputs={"out": out}, grads={"d_x": d_x})


COMPONENTS = {"masked_mean_pool": masked_mean_pool_reference}


@dataclass(frozen=True)
class PoolShape:
    """A random case of x (B, L, D): row 0 all masked, row 1 all valid, row 2 (if any) a single
    valid position, the others random."""

    batch: int
    length: int
    d: int

    def describe(self) -> str:
        return f"B={self.batch}, L={self.length}, D={self.d}"

    def build(self, rng: np.random.Generator) -> CaseTensors:
        b, length = self.batch, self.length
        x = rng.standard_normal((b, length, self.d))
        mask = rng.random((b, length)) < 0.6
        mask[0] = False
        mask[1] = True
        if b > 2:
            mask[2] = False
            mask[2, length - 1] = True
        return CaseTensors(
            inputs={"x": x, "mask": mask},
            params={},
            upstream=upstream_like(rng, {"out": (b, self.d)}),
        )


def _random_case(name: str, why: str, section: str, shape: PoolShape) -> CaseSpec:
    return CaseSpec("masked_mean_pool", name, f"{why}; {shape.describe()}.", f"{SPEC}#{section}", {}, shape.build)


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
        "The spec's worked example: row 1 all masked (pools to zeros, zero gradient).",
        f"{SPEC}#worked-example",
        {},
        _tiny_hand,
    ),
    _random_case("small", "An all-masked row, an all-valid row, a single valid position", "edge-cases",
                 PoolShape(batch=4, length=7, d=5)),
    _random_case("long_rows", "The short-term encoder's batch and length; row 0 all masked", "shapes",
                 PoolShape(batch=8, length=50, d=4)),
)
