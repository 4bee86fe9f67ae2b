"""Golden cases and the reference adapter of `multi_interest_readout` (spec/multi_interest_readout.md).

Config keys: `mode` (standard | harder_negatives) and the sampled-softmax keys of
refimpl.cases.sampled_softmax (`temperature`, `denominator`, `remove_accidental_hits`,
`logq_correction`).
"""

from __future__ import annotations

import numpy as np

from refimpl.cases._base import Builder, CaseSpec, Config, Result, Tensors
from refimpl.cases.sampled_softmax import (
    DEFAULT,
    Hits,
    fixed_case,
    loss_config,
    q_grads,
    q_inputs,
    random_case,
)
from refimpl.nn.multi_interest_readout import (
    ReadoutConfig,
    multi_interest_readout_backward,
    multi_interest_readout_forward,
)

SPEC = "spec/multi_interest_readout.md"


def multi_interest_readout_reference(
    inputs: Tensors, params: Tensors, config: Config, upstream: Tensors
) -> Result:
    cfg = ReadoutConfig(mode=config["mode"], loss=loss_config(config))
    loss, cache = multi_interest_readout_forward(
        inputs["interests"], inputs["positive"], inputs["negatives"], inputs["positive_ids"],
        inputs["negative_ids"], cfg, **q_inputs(inputs, config),
    )
    grads = multi_interest_readout_backward(cache, upstream["d_loss"])
    return Result(
        outputs={"loss": loss},
        grads={
            "d_interests": grads.interests, "d_positive": grads.positive,
            "d_negatives": grads.negatives, **q_grads(grads.positive_q, grads.negative_q),
        },
        intermediates={
            "positive_interest": cache.positive_interest,
            "negative_interests": cache.negative_interests,
            "positive_logits": cache.positive_logits,
            "negative_logits": cache.negative_logits,
            "row_losses": cache.logit_loss.row_losses,
            "row_counted": cache.logit_loss.row_counted,
        },
    )


COMPONENTS = {"multi_interest_readout": multi_interest_readout_reference}


def readout_case(
    b: int, k: int, n: int, d: int, shared: bool = True, hits: Hits = (), logq: bool = False
) -> Builder:
    """Interests, positive and negatives ~ N(0, 1/sqrt(D)): scores O(1), argmax gaps >> float32 eps
    for these seeds (checked by tests/test_multi_interest_readout.py)."""
    return random_case(b, n, d, shared, hits, logq, interests=k)


def _ties() -> Tensors:
    """Small integers, so every score is exact in any float type and the ties are exact.

    Row 0: interests 1 and 2 are equal and best for the positive (chosen: 1); negative 0 ties
    all three (chosen: 0), negative 2 ties interests 1 and 2 (chosen: 1). Row 1: all interests
    equal (chosen: 0 everywhere).
    """
    return {
        "interests": np.array([
            [[1.0, 0.0, 1.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0]],
            [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]],
        ]),
        "positive": np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]),
        "negatives": np.array([[2.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),
        "positive_ids": np.array([1, 2], dtype=np.int64),
        "negative_ids": np.array([3, 4, 5], dtype=np.int64),
    }


STANDARD = DEFAULT | {"mode": "standard"}
HARDER = DEFAULT | {"mode": "harder_negatives"}


def _case(name: str, description: str, section: str, config: Config, build: Builder) -> CaseSpec:
    return CaseSpec("multi_interest_readout", name, description, f"{SPEC}#{section}", config, build)


CASES = (
    _case("standard_small", "Standard readout: B=3, K=3, N=4, D=6, shared negatives.",
          "standard-readout", STANDARD, readout_case(3, 3, 4, 6)),
    _case("harder_small", "Harder negatives on the same shapes: B=3, K=3, N=4, D=6.",
          "harder-negatives", HARDER, readout_case(3, 3, 4, 6)),
    _case("harder_per_row", "Harder negatives, per-row negatives (B, N, D) = (3, 4, 6), one hit.",
          "harder-negatives", HARDER, readout_case(3, 3, 4, 6, shared=False, hits=((1, 2),))),
    _case("standard_per_row", "Standard readout, per-row negatives (B, N, D) = (3, 4, 6).",
          "standard-readout", STANDARD, readout_case(3, 3, 4, 6, shared=False)),
    _case("ties_standard", "Exact argmax ties (integer scores): the lowest interest index wins.",
          "ties", STANDARD, fixed_case(_ties)),
    _case("ties_harder", "Exact argmax ties under harder negatives: the lowest index wins.",
          "ties", HARDER, fixed_case(_ties)),
    _case("one_interest_standard", "K = 1: equal to the plain sampled softmax.", "edge-cases",
          STANDARD, readout_case(3, 1, 4, 5)),
    _case("one_interest_harder", "K = 1 under harder negatives: equal to the plain sampled softmax.",
          "edge-cases", HARDER, readout_case(3, 1, 4, 5)),
    _case("harder_logq_temperature", "Harder negatives with logQ and temperature 0.5.",
          "harder-negatives", HARDER | {"temperature": 0.5, "logq_correction": True},
          readout_case(4, 3, 5, 6, logq=True)),
    _case("harder_negatives_only", "Harder negatives under negatives_only; negative 1 hits row 0.",
          "harder-negatives", HARDER | {"denominator": "negatives_only"},
          readout_case(4, 3, 5, 6, hits=((0, 1),))),
    _case("harder_one_negative", "Harder negatives with N = 1.", "edge-cases", HARDER,
          readout_case(3, 3, 1, 6)),
    _case("realistic_harder", "B=8, K=4, N=24, D=16 shared in-category negatives, two hits.",
          "harder-negatives", HARDER, readout_case(8, 4, 24, 16, hits=((2, 7), (5, 20)))),
)
