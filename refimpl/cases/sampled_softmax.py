"""Golden cases and the reference adapter of `sampled_softmax` (spec/sampled_softmax.md).

Config keys: `temperature`, `denominator` (with_positive | negatives_only),
`remove_accidental_hits`, `logq_correction` (when true the inputs hold positive_q, negative_q).
Negatives are shared when `negatives` is (N, D), per row when it is (B, N, D).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
from refimpl.nn.sampled_softmax import (
    SampledSoftmaxConfig,
    sampled_softmax_backward,
    sampled_softmax_forward,
)

SPEC = "spec/sampled_softmax.md"


def loss_config(config: Config) -> SampledSoftmaxConfig:
    """The sampled-softmax options of a case config (defaults where a key is absent)."""
    return SampledSoftmaxConfig(
        temperature=config.get("temperature", 1.0),
        denominator=config.get("denominator", "with_positive"),
        remove_accidental_hits=config.get("remove_accidental_hits", True),
    )


def q_inputs(inputs: Tensors, config: Config) -> dict[str, np.ndarray]:
    """positive_q/negative_q keyword arguments when the case uses the logQ correction."""
    if not config.get("logq_correction", False):
        return {}
    return {"positive_q": inputs["positive_q"], "negative_q": inputs["negative_q"]}


def q_grads(positive_q: np.ndarray | None, negative_q: np.ndarray | None) -> Tensors:
    if positive_q is None or negative_q is None:
        return {}
    return {"d_positive_q": positive_q, "d_negative_q": negative_q}


def sampled_softmax_reference(
    inputs: Tensors, params: Tensors, config: Config, upstream: Tensors
) -> Result:
    loss, cache = sampled_softmax_forward(
        inputs["user"], inputs["positive"], inputs["negatives"], inputs["positive_ids"],
        inputs["negative_ids"], loss_config(config), **q_inputs(inputs, config),
    )
    grads = sampled_softmax_backward(cache, upstream["d_loss"])
    logits = cache.logit_loss
    return Result(
        outputs={"loss": loss},
        grads={
            "d_user": grads.user, "d_positive": grads.positive, "d_negatives": grads.negatives,
            **q_grads(grads.positive_q, grads.negative_q),
        },
        intermediates={
            "positive_logits": cache.positive_logits,
            "negative_logits": cache.negative_logits,
            "negative_kept": cache.negative_kept,
            "row_losses": logits.row_losses,
            "row_counted": logits.row_counted,
        },
    )


COMPONENTS = {"sampled_softmax": sampled_softmax_reference}

Hits = tuple[tuple[int, int], ...]
"""(row, negative) pairs whose negative id is set to the row's positive id."""


def draw_ids(
    rng: np.random.Generator, b: int, n: int, shared: bool, hits: Hits
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct positive ids 100.. and negative ids 200.. (no accidental hit but the planted ones)."""
    positive_ids = 100 + rng.permutation(b).astype(np.int64)
    negative_ids = 200 + rng.permutation(n if shared else b * n).astype(np.int64)
    if not shared:
        negative_ids = negative_ids.reshape(b, n)
    for row, neg in hits:
        if shared:
            negative_ids[neg] = positive_ids[row]
        else:
            negative_ids[row, neg] = positive_ids[row]
    return positive_ids, negative_ids


def draw_q(rng: np.random.Generator, b: int, n: int, shared: bool) -> Tensors:
    """Sampling probabilities in [0.001, 0.1], as a popularity sampler gives."""
    return {
        "positive_q": rng.uniform(0.001, 0.1, size=b),
        "negative_q": rng.uniform(0.001, 0.1, size=(n,) if shared else (b, n)),
    }


@dataclass(frozen=True)
class ScoredShape:
    """A random case, declared once: B users scored against their positive and N negatives of
    width D, shared (N, D) or per row (B, N, D); `hits` plants accidental hits (row, negative);
    `logq` draws sampling probabilities; with `interests` = K the user is K interest vectors
    (B, K, D), as the multi-interest readout reads. User, positive and negatives are
    N(0, scale^2 / sqrt(D)), so scores are O(scale)."""

    batch: int
    negatives: int
    d: int
    shared: bool = True
    hits: Hits = ()
    logq: bool = False
    scale: float = 1.0
    interests: int | None = None

    def describe(self) -> str:
        interests = "" if self.interests is None else f", K={self.interests}"
        negatives = "shared negatives" if self.shared else "per-row negatives"
        hits = {0: "", 1: ", one accidental hit"}.get(len(self.hits), f", {len(self.hits)} accidental hits")
        return f"B={self.batch}{interests}, N={self.negatives}, D={self.d}, {negatives}{hits}"

    def build(self, rng: np.random.Generator) -> CaseTensors:
        b, n, d, shared = self.batch, self.negatives, self.d, self.shared
        std = self.scale / d**0.25
        positive_ids, negative_ids = draw_ids(rng, b, n, shared, self.hits)
        user_name, user_shape = ("user", (b, d)) if self.interests is None else ("interests", (b, self.interests, d))
        inputs = {
            user_name: std * rng.standard_normal(user_shape),
            "positive": std * rng.standard_normal((b, d)),
            "negatives": std * rng.standard_normal((n, d) if shared else (b, n, d)),
            "positive_ids": positive_ids,
            "negative_ids": negative_ids,
        }
        if self.logq:
            inputs |= draw_q(rng, b, n, shared)
        return CaseTensors(inputs=inputs, params={}, upstream=upstream_like(rng, {"loss": ()}))


def fixed_case(inputs: Callable[[], Tensors]) -> Builder:
    """Hand-written inputs; only the upstream gradient is drawn."""

    def build(rng: np.random.Generator) -> CaseTensors:
        return CaseTensors(inputs=inputs(), params={}, upstream=upstream_like(rng, {"loss": ()}))

    return build


def _tiny() -> Tensors:
    """The worked example of the spec page: logits (2 | 0, 1) and (1 | 1, 0)."""
    return {
        "user": np.array([[1.0, 0.0], [0.0, 1.0]]),
        "positive": np.array([[2.0, 0.0], [1.0, 1.0]]),
        "negatives": np.array([[0.0, 1.0], [1.0, 0.0]]),
        "positive_ids": np.array([10, 11], dtype=np.int64),
        "negative_ids": np.array([20, 21], dtype=np.int64),
    }


def _extreme() -> Tensors:
    """Scores of +-1e4: row 0 the positive wins by 1e4, row 1 a negative wins by 2e4, row 2 ties."""
    return {
        "user": np.array([[100.0, 0.0], [0.0, 100.0], [100.0, 100.0]]),
        "positive": np.array([[100.0, 0.0], [0.0, -100.0], [50.0, 50.0]]),
        "negatives": np.array([[-100.0, 0.0], [0.0, 100.0], [0.0, -100.0]]),
        "positive_ids": np.array([1, 2, 3], dtype=np.int64),
        "negative_ids": np.array([4, 5, 6], dtype=np.int64),
    }


def _all_equal() -> Tensors:
    """A zero user vector: every logit is 0, the loss is log(N + 1) in every row."""
    rng = np.random.Generator(np.random.PCG64(7))
    return {
        "user": np.zeros((3, 4)),
        "positive": rng.standard_normal((3, 4)),
        "negatives": rng.standard_normal((5, 4)),
        "positive_ids": np.array([1, 2, 3], dtype=np.int64),
        "negative_ids": np.array([4, 5, 6, 7, 8], dtype=np.int64),
    }


def _equal_to_positive() -> Tensors:
    """Row 1's positive is also negative 2: same id and same vector (an accidental hit)."""
    rng = np.random.Generator(np.random.PCG64(11))
    positive = rng.standard_normal((3, 4))
    negatives = rng.standard_normal((4, 4))
    negatives[2] = positive[1]
    return {
        "user": rng.standard_normal((3, 4)),
        "positive": positive,
        "negatives": negatives,
        "positive_ids": np.array([1, 2, 3], dtype=np.int64),
        "negative_ids": np.array([4, 5, 2, 7], dtype=np.int64),
    }


def _all_removed() -> Tensors:
    """Both shared negatives are row 0's positive: under negatives_only row 0 has no denominator."""
    rng = np.random.Generator(np.random.PCG64(13))
    return {
        "user": rng.standard_normal((3, 4)),
        "positive": rng.standard_normal((3, 4)),
        "negatives": rng.standard_normal((2, 4)),
        "positive_ids": np.array([7, 8, 9], dtype=np.int64),
        "negative_ids": np.array([7, 7], dtype=np.int64),
    }


def _case(name: str, description: str, section: str, config: Config, build: Builder,
          atol: float = 1e-9) -> CaseSpec:
    return CaseSpec("sampled_softmax", name, description, f"{SPEC}#{section}", config, build,
                    atol=atol)


DEFAULT = {"temperature": 1.0, "denominator": "with_positive", "remove_accidental_hits": True,
           "logq_correction": False}
NEGATIVES_ONLY = DEFAULT | {"denominator": "negatives_only"}

def _random_case(name: str, why: str, section: str, config: Config, shape: ScoredShape) -> CaseSpec:
    return _case(name, f"{why}; {shape.describe()}.", section, config, shape.build)


CASES = (
    _case("tiny", "The spec's worked example: hand-checkable logits.",
          "worked-example", DEFAULT, fixed_case(_tiny)),
    _random_case("shared_accidental_hit", "Negative 3 is row 1's positive", "accidental-hits", DEFAULT,
                 ScoredShape(batch=4, negatives=6, d=8, hits=((1, 3),))),
    _random_case("per_row", "Row 2's negative 0 is a hit", "shapes", DEFAULT,
                 ScoredShape(batch=4, negatives=5, d=8, shared=False, hits=((2, 0),))),
    _random_case("logq_temperature", "logQ correction and temperature 0.1", "temperature-and-logq-correction",
                 DEFAULT | {"temperature": 0.1, "logq_correction": True},
                 ScoredShape(batch=4, negatives=6, d=8, logq=True)),
    _random_case("logq_per_row", "logQ with per-row negatives and q (B, N)", "temperature-and-logq-correction",
                 DEFAULT | {"logq_correction": True},
                 ScoredShape(batch=3, negatives=4, d=6, shared=False, logq=True)),
    _random_case("negatives_only", "ULIM eq. 2 as printed; negative 0 hits row 3", "denominator-and-reduction",
                 NEGATIVES_ONLY, ScoredShape(batch=4, negatives=5, d=8, hits=((3, 0),))),
    _case("negatives_only_all_removed",
          "negatives_only; both shared negatives are row 0's positive: row 0 is not counted.",
          "every-negative-removed", NEGATIVES_ONLY, fixed_case(_all_removed)),
    _case("with_positive_all_removed",
          "The same inputs with the positive in the denominator: row 0's loss is 0, still counted.",
          "every-negative-removed", DEFAULT, fixed_case(_all_removed)),
    _case("hits_kept", "remove_accidental_hits off: negative 2 (row 1's positive, same vector) stays.",
          "accidental-hits", DEFAULT | {"remove_accidental_hits": False},
          fixed_case(_equal_to_positive)),
    _case("negative_equal_to_positive", "Negative 2 is row 1's positive (id and vector); removed.",
          "accidental-hits", DEFAULT, fixed_case(_equal_to_positive)),
    _random_case("one_negative", "One shared negative", "edge-cases", DEFAULT,
                 ScoredShape(batch=3, negatives=1, d=4)),
    _random_case("one_negative_negatives_only", "N = 1 under negatives_only: l_b = s_b1 - s_b", "edge-cases",
                 NEGATIVES_ONLY, ScoredShape(batch=3, negatives=1, d=4)),
    _case("all_logits_equal", "A zero user vector: every logit 0, loss log(N + 1).", "edge-cases",
          DEFAULT, fixed_case(_all_equal)),
    _case("extreme_logits", "Scores of +-1e4 in float64: no overflow, loss finite and >= 0.",
          "edge-cases", DEFAULT, fixed_case(_extreme), atol=1e-6),
    _random_case("realistic", "In-category negatives with logQ", "shapes", DEFAULT | {"logq_correction": True},
                 ScoredShape(batch=16, negatives=32, d=16, hits=((0, 5), (9, 20)), logq=True, scale=2.0)),
)
