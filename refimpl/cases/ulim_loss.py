"""Golden cases and the reference adapter of `ulim_loss`, ULIM eq. 1 (spec/batching.md#ulim-loss).

Config keys: `alpha`, `beta` and the sampled-softmax keys of refimpl.cases.sampled_softmax.
Inputs: long_user, short_user, positive (B, D); negatives (N, D); positive_ids (B,);
negative_ids (N,); batch_category () int64; item_categories (I,) int64; with logQ positive_q,
negative_q.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl.cases._base import CaseSpec, CaseTensors, Config, Result, Tensors, upstream_like
from refimpl.cases.sampled_softmax import DEFAULT, draw_q, loss_config, q_grads, q_inputs
from refimpl.nn.ulim_loss import UlimLossConfig, ulim_loss_backward, ulim_loss_forward

SPEC = "spec/batching.md"


def ulim_loss_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    cfg = UlimLossConfig(alpha=config["alpha"], beta=config["beta"], loss=loss_config(config))
    loss, cache = ulim_loss_forward(
        inputs["long_user"], inputs["short_user"], inputs["positive"], inputs["negatives"],
        inputs["positive_ids"], inputs["negative_ids"], int(inputs["batch_category"]),
        inputs["item_categories"], cfg, **q_inputs(inputs, config),
    )
    grads = ulim_loss_backward(cache, upstream["d_loss"])
    return Result(
        outputs={"loss": loss},
        grads={
            "d_long_user": grads.long_user, "d_short_user": grads.short_user,
            "d_positive": grads.positive, "d_negatives": grads.negatives,
            **q_grads(grads.positive_q, grads.negative_q),
        },
        intermediates={
            "long_row_losses": cache.long.logit_loss.row_losses,
            "long_loss": cache.long_loss,
            "short_row_losses": cache.short.logit_loss.row_losses,
            "short_loss": cache.short_loss,
        },
    )


COMPONENTS = {"ulim_loss": ulim_loss_reference}


@dataclass(frozen=True)
class LossShape:
    """A catalogue of 30 items in 3 categories (item i is of category i % 3); the batch of B users
    is of category 1: positives and N shared negatives of width D drawn from items 1, 4, 7, ...;
    `hit` makes negative 0 row 0's positive, `logq` draws sampling probabilities."""

    batch: int
    negatives: int
    d: int
    logq: bool = False
    hit: bool = False

    def describe(self) -> str:
        hit = ", one accidental hit" if self.hit else ""
        return f"B={self.batch}, N={self.negatives}, D={self.d}, category-pure batch{hit}"

    def build(self, rng: np.random.Generator) -> CaseTensors:
        b, n, d, logq, hit = self.batch, self.negatives, self.d, self.logq, self.hit
        item_categories = (np.arange(30) % 3).astype(np.int64)
        in_category = np.flatnonzero(item_categories == 1)
        chosen = rng.permutation(in_category)
        positive_ids = chosen[:b].astype(np.int64)
        negative_ids = chosen[b : b + n].astype(np.int64)
        if hit:
            negative_ids[0] = positive_ids[0]
        std = 1.0 / d**0.25
        inputs = {
            "long_user": std * rng.standard_normal((b, d)),
            "short_user": std * rng.standard_normal((b, d)),
            "positive": std * rng.standard_normal((b, d)),
            "negatives": std * rng.standard_normal((n, d)),
            "positive_ids": positive_ids,
            "negative_ids": negative_ids,
            "batch_category": np.array(1, dtype=np.int64),
            "item_categories": item_categories,
        }
        if logq:
            inputs |= draw_q(rng, b, n, True)
        return CaseTensors(inputs=inputs, params={}, upstream=upstream_like(rng, {"loss": ()}))


def _case(name: str, why: str, config: Config, shape: LossShape) -> CaseSpec:
    return CaseSpec("ulim_loss", name, f"{why}; {shape.describe()}.", f"{SPEC}#ulim-loss", config, shape.build)


CASES = (
    _case("small", "alpha=1, beta=0.5", DEFAULT | {"alpha": 1.0, "beta": 0.5},
          LossShape(batch=3, negatives=4, d=5, hit=True)),
    _case("logq_negatives_only", "alpha=0.7, beta=0.3 with logQ under negatives_only",
          DEFAULT | {"alpha": 0.7, "beta": 0.3, "logq_correction": True, "denominator": "negatives_only"},
          LossShape(batch=3, negatives=5, d=4, logq=True)),
)
