"""Golden cases and the reference adapter of `max_interest_score`, UMI eq. 1
(spec/max_interest_score.md).

Config: `n`, the number of items retrieved per user. Every float in these cases is a multiple of
1/8 of magnitude at most 2, so every score is exact in float32 and float64 alike: ties are real
ties, and every implementation, whatever its summation order, makes the same choices.
"""

from __future__ import annotations

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


def _random(b: int, k: int, d: int, m: int) -> Builder:
    def build(rng: np.random.Generator) -> CaseTensors:
        inputs = {"interests": _eighths(rng, (b, k, d)), "items": _eighths(rng, (m, d))}
        return CaseTensors(inputs, {}, {"d_scores": _eighths(rng, (b, m))})

    return build


def _tiny_hand(rng: np.random.Generator) -> CaseTensors:
    interests = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    items = np.array([[2.0, 1.0], [1.0, 1.0], [0.0, 2.0], [-1.0, 0.5]])
    d_scores = np.array([[0.5, -1.0, 0.25, 2.0]])
    return CaseTensors({"interests": interests, "items": items}, {}, {"d_scores": d_scores})


def _case(name: str, description: str, section: str, n: int, build: Builder) -> CaseSpec:
    return CaseSpec("max_interest_score", name, description, f"{SPEC}#{section}", {"n": n}, build)


CASES = (
    _case("tiny_hand", "B=1, K=2, D=2, M=4, n=3: an item tied between both interests, two items "
          "tied in score; numbers in the spec.", "worked-example", 3, _tiny_hand),
    _case("one_interest", "K=1: the plain inner product; B=2, D=3, M=5, n=2.", "edge-cases", 2,
          _random(2, 1, 3, 5)),
    _case("small", "B=3, K=3, D=4, M=8, n=4; values in eighths (exact in float32).", "golden-cases",
          4, _random(3, 3, 4, 8)),
    _case("realistic", "B=4, K=4, D=16, M=60, n=10; values in eighths (exact in float32).",
          "golden-cases", 10, _random(4, 4, 16, 60)),
)
