"""Golden cases and the reference adapter of `max_interest_score`, UMI eq. 1
(spec/max_interest_score.md).

Config: `n`, the number of items retrieved per user. Every float in these cases is a multiple of
1/8 of magnitude at most 2, so every score is exact in float32 and float64 alike: ties are real
ties, and every implementation, whatever its summation order, makes the same choices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl.cases._base import Builder, CaseSpec, CaseTensors, Config, Result, Tensors
from refimpl.nn.max_interest_score import (
    max_interest_score_backward,
    max_interest_score_forward,
    max_interest_top_n,
)

SPEC = "spec/max_interest_score.md"


def max_interest_score_reference(
    inputs: Tensors, params: Tensors, config: Config, upstream: Tensors
) -> Result:
    scores, cache = max_interest_score_forward(inputs["interests"], inputs["items"])
    top_n_ids, _ = max_interest_top_n(inputs["interests"], inputs["items"], int(config["n"]))
    d_interests, d_items = max_interest_score_backward(cache, upstream["d_scores"])
    return Result(
        outputs={"scores": scores, "top_n_ids": top_n_ids},
        grads={"d_interests": d_interests, "d_items": d_items},
        intermediates={"best_interest": cache.best_interest},
    )


COMPONENTS = {"max_interest_score": max_interest_score_reference}


def _eighths(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(-16, 17, size=shape) / 8.0


@dataclass(frozen=True)
class ScoreShape:
    """A random case in eighths (exact in float32): interests (B, K, D), items (M, D), top n."""

    batch: int
    interests: int
    d: int
    items: int
    n: int

    def describe(self) -> str:
        return f"B={self.batch}, K={self.interests}, D={self.d}, M={self.items}, n={self.n}"

    def build(self, rng: np.random.Generator) -> CaseTensors:
        b, m = self.batch, self.items
        inputs = {"interests": _eighths(rng, (b, self.interests, self.d)), "items": _eighths(rng, (m, self.d))}
        return CaseTensors(inputs, {}, {"d_scores": _eighths(rng, (b, m))})


def _tiny_hand(rng: np.random.Generator) -> CaseTensors:
    interests = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    items = np.array([[2.0, 1.0], [1.0, 1.0], [0.0, 2.0], [-1.0, 0.5]])
    d_scores = np.array([[0.5, -1.0, 0.25, 2.0]])
    return CaseTensors({"interests": interests, "items": items}, {}, {"d_scores": d_scores})


def _case(name: str, description: str, section: str, n: int, build: Builder) -> CaseSpec:
    return CaseSpec("max_interest_score", name, description, f"{SPEC}#{section}", {"n": n}, build)


def _random_case(name: str, why: str, section: str, shape: ScoreShape) -> CaseSpec:
    return _case(name, f"{why}; {shape.describe()}.", section, shape.n, shape.build)


CASES = (
    _case("tiny_hand", "The spec's worked example: an item tied between both interests, two items tied in "
          "score.", "worked-example", 3, _tiny_hand),
    _random_case("one_interest", "One interest: the plain inner product, values in eighths", "edge-cases",
                 ScoreShape(batch=2, interests=1, d=3, items=5, n=2)),
    _random_case("small", "Values in eighths (exact in float32)", "golden-cases",
                 ScoreShape(batch=3, interests=3, d=4, items=8, n=4)),
    _random_case("realistic", "Values in eighths (exact in float32)", "golden-cases",
                 ScoreShape(batch=4, interests=4, d=16, items=60, n=10)),
)
