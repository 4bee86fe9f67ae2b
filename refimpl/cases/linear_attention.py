"""Golden cases and reference adapters of IFA's degree-normalized linear attention:
`linear_attention` (the O((Q + L) D_h^2) form) and `linear_attention_explicit` (the executable
definition diag(A 1 + eps)^-1 A V), both in spec/linear_attention.md."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from refimpl._check import Array
from refimpl.cases._base import (
    Builder,
    CaseSpec,
    CaseTensors,
    ComponentFn,
    Config,
    Result,
    Tensors,
    upstream_like,
)
from refimpl.cases.attention import param_grads, random_mask
from refimpl.cases.attention import random_params as random_params  # re-exported for the tests
from refimpl.nn.attention import PARAM_NAMES, AttentionParams
from refimpl.nn.linear_attention import (
    ExplicitCache,
    LinearAttentionCache,
    LinearAttentionConfig,
    linear_attention_backward,
    linear_attention_explicit_backward,
    linear_attention_explicit_forward,
    linear_attention_forward,
)

SPEC = "spec/linear_attention.md"

Cache = TypeVar("Cache", LinearAttentionCache, ExplicitCache)


def linear_attention_config(config: Config) -> LinearAttentionConfig:
    """The component config from a case's JSON config (phi and eps optional)."""
    return LinearAttentionConfig(
        num_heads=config["num_heads"],
        phi=config.get("phi", "softplus"),
        eps=config.get("eps", 1e-6),
    )


def _reference(
    forward: Callable[..., tuple[Array, Cache]],
    backward: Callable[[Cache, Array], tuple[AttentionParams, Array, Array]],
    intermediates: Callable[[Cache], Tensors],
) -> ComponentFn:
    """The reference adapter of one form: both forms share inputs, params, outputs and grads and
    differ only in their forward/backward pair and the intermediates their caches hold."""

    def reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
        out, cache = forward(
            AttentionParams(**params),
            inputs["q_in"],
            inputs["kv_in"],
            inputs["key_mask"],
            linear_attention_config(config),
            query_mask=inputs["query_mask"],
        )
        grads, d_q_in, d_kv_in = backward(cache, upstream["d_out"])
        return Result(
            outputs={"out": out},
            grads={"d_q_in": d_q_in, "d_kv_in": d_kv_in, **param_grads(grads)},
            intermediates=intermediates(cache),
        )

    return reference


linear_attention_reference = _reference(
    linear_attention_forward,
    linear_attention_backward,
    lambda cache: {
        "phi_q": cache.proj.phi_q,
        "phi_k": cache.proj.phi_k,
        "kv_summary": cache.kv_summary,
        "key_sum": cache.key_sum,
        "degree": cache.degree,
        "context": cache.context,
    },
)

linear_attention_explicit_reference = _reference(
    linear_attention_explicit_forward,
    linear_attention_explicit_backward,
    lambda cache: {
        "phi_q": cache.proj.phi_q,
        "phi_k": cache.proj.phi_k,
        "degree": cache.degree,
        "attn_weights": cache.weights,
        "context": cache.context,
    },
)


COMPONENTS = {
    "linear_attention": linear_attention_reference,
    "linear_attention_explicit": linear_attention_explicit_reference,
}


@dataclass(frozen=True)
class CrossShape:
    """The sizes a random case is drawn with (and described by): queries (B, Q, D), keys and
    values (B, L, D); weights scaled by `scale`; the first `empty_rows` batch rows have no valid key."""

    batch: int
    queries: int
    keys: int
    width: int
    scale: float = 1.0
    empty_rows: int = 0

    def describe(self) -> str:
        return f"B={self.batch}, Q={self.queries}, L={self.keys}, D={self.width}"

    def build(self, rng: np.random.Generator) -> CaseTensors:
        b, q, length, d = self.batch, self.queries, self.keys, self.width
        key_mask = random_mask(rng, b, length)
        key_mask[: self.empty_rows] = False
        return CaseTensors(
            inputs={
                "q_in": rng.standard_normal((b, q, d)),
                "kv_in": rng.standard_normal((b, length, d)),
                "key_mask": key_mask,
                "query_mask": random_mask(rng, b, q),
            },
            params=random_params(rng, d, self.scale),
            upstream=upstream_like(rng, {"out": (b, q, d)}),
        )


def describe_config(config: Config) -> str:
    """The attention config in words, e.g. 'phi = relu, H = 2'."""
    eps = f", eps = {config['eps']:g}" if "eps" in config else ""
    return f"phi = {config['phi']}, H = {config['num_heads']}{eps}"


def _identity_params(d: int) -> Tensors:
    return {
        name: np.eye(d) if name.startswith("W") else np.zeros(d) for name in PARAM_NAMES
    }


def _hand_checkable(rng: np.random.Generator) -> CaseTensors:
    """Identity projections, relu: the numbers in spec/linear_attention.md#worked-example."""
    return CaseTensors(
        inputs={
            "q_in": np.array([[[1.0, -1.0], [-1.0, 2.0]]]),
            "kv_in": np.array([[[1.0, 1.0], [2.0, -1.0], [-1.0, 3.0]]]),
            "key_mask": np.array([[True, True, False]]),
            "query_mask": np.array([[True, True]]),
        },
        params=_identity_params(2),
        upstream=upstream_like(rng, {"out": (1, 2, 2)}),
    )


def _zero_degree(rng: np.random.Generator) -> CaseTensors:
    """relu, D=4, H=2: bk[0] = -1 and Wk[:, 0] = 0 make feature 0 of every key zero after relu.

    Query row 0 is positive only in feature 0 (degree 0 although phi(q) != 0 in head 0, and
    phi(q) = 0 in head 1); query row 1 is all negative (phi(q) = 0 in both heads)."""
    params = random_params(rng, 4)
    params["Wq"] = np.eye(4)
    params["bq"] = np.zeros(4)
    params["Wk"][:, 0] = 0.0
    params["bk"][0] = -1.0
    q_in = rng.standard_normal((2, 3, 4))
    q_in[0, 0] = [2.0, -1.0, -1.0, -0.5]
    q_in[0, 1] = [-1.0, -2.0, -0.5, -1.5]
    return CaseTensors(
        inputs={
            "q_in": q_in,
            "kv_in": rng.standard_normal((2, 5, 4)),
            "key_mask": random_mask(rng, 2, 5),
            "query_mask": np.ones((2, 3), dtype=bool),
        },
        params=params,
        upstream=upstream_like(rng, {"out": (2, 3, 4)}),
    )


MASKED_QUERIES = CrossShape(batch=2, queries=4, keys=5, width=4)


def _masked_queries(rng: np.random.Generator) -> CaseTensors:
    """MASKED_QUERIES with fixed masks: row 0 masks queries 1 and 3 (its keys partly valid), row 1
    masks query 0 and has every key valid."""
    tensors = MASKED_QUERIES.build(rng)
    key_mask = np.array([[True, False, True, True, False], [True] * 5])
    query_mask = np.array([[True, False, True, False], [False, True, True, True]])
    return CaseTensors({**tensors.inputs, "key_mask": key_mask, "query_mask": query_mask},
                       tensors.params, tensors.upstream)


def _cases(component: str) -> tuple[CaseSpec, ...]:
    def case(name: str, why: str, section: str, config: Config, build: Builder, shape: str = "") -> CaseSpec:
        description = f"{why}: {describe_config(config)}{'; ' + shape if shape else ''}."
        return CaseSpec(component, name, description, f"{SPEC}#{section}", config, build)

    def random_case(name: str, why: str, section: str, config: Config, shape: CrossShape) -> CaseSpec:
        return case(name, why, section, config, shape.build, shape.describe())

    softplus = {"num_heads": 2, "phi": "softplus"}
    small = CrossShape(batch=2, queries=4, keys=6, width=8)
    return (
        case("hand_checkable", "Identity projections, the third key masked (the spec's worked example)",
             "worked-example", {"num_heads": 1, "phi": "relu"}, _hand_checkable),
        random_case("softplus_multihead", "Default phi, random masks", "the-component", softplus, small),
        random_case("relu_multihead", "relu, random masks", "the-component", {"num_heads": 2, "phi": "relu"},
                    small),
        random_case("elu1_multihead", "elu+1 with a larger eps", "the-component",
                    {"num_heads": 2, "phi": "elu+1", "eps": 1e-3}, small),
        case("relu_zero_degree", "relu with queries of degree 0 (context 0 / eps = 0)",
             "edge-cases", {"num_heads": 2, "phi": "relu"}, _zero_degree),
        case("masked_queries", "Masked queries with valid keys: zero attn_weights, context and "
             "output rows there, no gradient", "masked-rows", softplus, _masked_queries, MASKED_QUERIES.describe()),
        random_case("fully_masked_sequence", "Batch row 0 has no valid key: its output rows are zero",
                    "edge-cases", softplus, CrossShape(batch=2, queries=3, keys=5, width=4, empty_rows=1)),
        random_case("single_candidate_single_key", "One query, one key", "edge-cases", softplus,
                    CrossShape(batch=2, queries=1, keys=1, width=4)),
        random_case("large_inputs", "Weights scaled by 30: phi values in the tens, degrees in the hundreds",
                    "edge-cases", softplus, CrossShape(batch=2, queries=3, keys=6, width=8, scale=30.0)),
        random_case("realistic", "A realistic shape (Q candidates, L behaviours)", "the-component",
                    {"num_heads": 3, "phi": "softplus"}, CrossShape(batch=2, queries=16, keys=40, width=12)),
    )


CASES = _cases("linear_attention") + tuple(
    c for c in _cases("linear_attention_explicit")
    if c.name in ("hand_checkable", "softplus_multihead", "relu_zero_degree", "masked_queries",
                  "fully_masked_sequence")
)
