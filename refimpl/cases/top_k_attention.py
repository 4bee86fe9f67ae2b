"""Golden cases and the reference adapter of top-k target attention: `top_k_attention`, the GSU
(SIM-soft's inner product or TWIN's attention score) then the ESU target attention over the k
selected behaviours (spec/top_k_attention.md).

Coverage: both scores; one and two heads; k below, equal to and above the number of valid
behaviours; a request without a valid behaviour and masked candidates; planted exact ties at the
k-th place (broken towards the lower position); behaviours selected by several candidates (their
gradients sum).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl.cases._base import CaseSpec, CaseTensors, Config, Result, Tensors, upstream_like
from refimpl.cases.attention import param_grads, random_mask, random_params
from refimpl.nn.attention import AttentionParams
from refimpl.nn.top_k_attention import (
    TopKAttentionConfig,
    top_k_attention_backward,
    top_k_attention_forward,
)

SPEC = "spec/top_k_attention.md"


def top_k_attention_config(config: Config) -> TopKAttentionConfig:
    """The component config from a case's JSON config."""
    return TopKAttentionConfig(k=config["k"], num_heads=config["num_heads"], score=config["score"])


def top_k_attention_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    out, cache = top_k_attention_forward(
        AttentionParams(**params),
        inputs["candidates"],
        inputs["seq"],
        inputs["seq_mask"],
        top_k_attention_config(config),
        cand_mask=inputs["cand_mask"],
    )
    grads, d_candidates, d_seq = top_k_attention_backward(cache, upstream["d_out"])
    b, m, slots = cache.indices.shape
    heads = cache.attention.weights.shape[1]
    return Result(
        outputs={"out": out},
        grads={"d_candidates": d_candidates, "d_seq": d_seq, **param_grads(grads)},
        intermediates={
            "scores": cache.scores,
            "indices": cache.indices,
            "selected_mask": cache.selected_mask,
            "attn_weights": cache.attention.weights.reshape(b, m, heads, slots),
        },
    )


COMPONENTS = {"top_k_attention": top_k_attention_reference}


@dataclass(frozen=True)
class TopKShape:
    """The sizes a case is drawn with (and described by). `empty_request`: request 0 has no valid
    behaviour; `masked_candidates`: candidate 0 of the last request is masked; `ties`: behaviours
    1..4 of every request are copies of behaviour 0, so their scores tie exactly for every candidate,
    and candidate 0 is 2 e_0, so under the inner product the tied five lead and the k-th place falls
    among them."""

    batch: int
    candidates: int
    length: int
    width: int
    empty_request: bool = False
    masked_candidates: bool = False
    ties: bool = False

    def describe(self, config: Config) -> str:
        return (
            f"B={self.batch}, M={self.candidates}, L={self.length}, D={self.width}, "
            f"H={config['num_heads']}, k={config['k']}, score={config['score']}"
        )

    def build(self, rng: np.random.Generator) -> CaseTensors:
        b, m, length, d = self.batch, self.candidates, self.length, self.width
        seq = rng.standard_normal((b, length, d))
        if self.ties:
            seq[:, 1:5] = seq[:, :1]
        candidates = rng.standard_normal((b, m, d))
        if self.ties:
            candidates[:, 0] = 2 * seq[:, 0]
        seq_mask = random_mask(rng, b, length)
        if self.ties:
            seq_mask[:, :5] = True
        if self.empty_request:
            seq_mask[0] = False
        cand_mask = np.ones((b, m), dtype=bool)
        if self.masked_candidates:
            cand_mask[-1, 0] = False
        return CaseTensors(
            inputs={"candidates": candidates, "seq": seq, "seq_mask": seq_mask, "cand_mask": cand_mask},
            params=random_params(rng, d),
            upstream=upstream_like(rng, {"out": (b, m, d)}),
        )


def _case(name: str, why: str, section: str, config: Config, shape: TopKShape) -> CaseSpec:
    return CaseSpec(
        "top_k_attention", name, f"{why}; {shape.describe(config)}.", f"{SPEC}#{section}", config, shape.build
    )


def _config(k: int, heads: int, score: str) -> Config:
    return {"k": k, "num_heads": heads, "score": score}


CASES = (
    _case("inner_product", "SIM-soft: the inner product picks 3 of about 7 valid behaviours; "
          "behaviours 4 and 6 of request 1 are picked by all three candidates (their gradients sum)",
          "sim-soft-inner-product", _config(3, 1, "inner_product"), TopKShape(2, 3, 10, 4)),
    _case("attention_two_heads", "TWIN: head 0's attention score picks 3, the ESU attends with two heads",
          "twin-the-esus-own-score", _config(3, 2, "attention"), TopKShape(2, 3, 10, 8)),
    _case("k_above_valid", "k larger than the valid behaviours (and than L): every valid one is "
          "selected, the other slots are masked", "edge-cases", _config(12, 2, "attention"),
          TopKShape(2, 2, 6, 4)),
    _case("masked", "Request 0 has no valid behaviour (zero rows), candidate 0 of request 1 is masked",
          "edge-cases", _config(2, 1, "inner_product"),
          TopKShape(2, 3, 5, 4, empty_request=True, masked_candidates=True)),
    _case("ties", "Behaviours 1-4 copy behaviour 0 and candidate 0 is 2 e_0: five exactly tied "
          "leaders, of which the three lowest positions are kept", "ties", _config(3, 1, "inner_product"),
          TopKShape(2, 2, 8, 4, ties=True)),
)
