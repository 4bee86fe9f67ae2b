"""Golden cases and the reference adapter of `multi_interest_readout` (spec/multi_interest_readout.md).

Config keys: `mode` (standard | harder_negatives) and the sampled-softmax keys of
refimpl.cases.sampled_softmax (`temperature`, `denominator`, `remove_accidental_hits`,
`logq_correction`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from refimpl.cases._base import Builder, CaseSpec, Config, Result, Tensors
from refimpl.cases.sampled_softmax import (
    DEFAULT,
    ScoredShape,
    fixed_case,
    loss_config,
    q_grads,
    q_inputs,
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


def _random_case(name: str, why: str, section: str, config: Config, shape: ScoredShape) -> CaseSpec:
    """Interests, positive and negatives ~ N(0, 1/sqrt(D)): scores O(1), argmax gaps >> float32 eps
    for these seeds (checked by tests/test_multi_interest_readout.py)."""
    return _case(name, f"{why}; {shape.describe()}.", section, config, shape.build)


SMALL = ScoredShape(batch=3, interests=3, negatives=4, d=6)

CASES = (
    _random_case("standard_small", "Standard readout", "standard-readout", STANDARD, SMALL),
    _random_case("harder_small", "Harder negatives on the same shapes", "harder-negatives", HARDER, SMALL),
    _random_case("harder_per_row", "Harder negatives, per-row negatives", "harder-negatives", HARDER,
                 replace(SMALL, shared=False, hits=((1, 2),))),
    _random_case("standard_per_row", "Standard readout, per-row negatives", "standard-readout", STANDARD,
                 replace(SMALL, shared=False)),
    _case("ties_standard", "Exact argmax ties (integer scores): the lowest interest index wins.",
          "ties", STANDARD, fixed_case(_ties)),
    _case("ties_harder", "Exact argmax ties under harder negatives: the lowest index wins.",
          "ties", HARDER, fixed_case(_ties)),
    _random_case("one_interest_standard", "One interest: equal to the plain sampled softmax", "edge-cases",
                 STANDARD, ScoredShape(batch=3, interests=1, negatives=4, d=5)),
    _random_case("one_interest_harder", "One interest under harder negatives: equal to the plain sampled softmax",
                 "edge-cases", HARDER, ScoredShape(batch=3, interests=1, negatives=4, d=5)),
    _random_case("harder_logq_temperature", "Harder negatives with logQ and temperature 0.5", "harder-negatives",
                 HARDER | {"temperature": 0.5, "logq_correction": True},
                 ScoredShape(batch=4, interests=3, negatives=5, d=6, logq=True)),
    _random_case("harder_negatives_only", "Harder negatives under negatives_only; negative 1 hits row 0",
                 "harder-negatives", HARDER | {"denominator": "negatives_only"},
                 ScoredShape(batch=4, interests=3, negatives=5, d=6, hits=((0, 1),))),
    _random_case("harder_one_negative", "Harder negatives with one negative", "edge-cases", HARDER,
                 ScoredShape(batch=3, interests=3, negatives=1, d=6)),
    _random_case("realistic_harder", "In-category negatives", "harder-negatives", HARDER,
                 ScoredShape(batch=8, interests=4, negatives=24, d=16, hits=((2, 7), (5, 20)))),
)
