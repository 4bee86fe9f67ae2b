"""Golden cases and the reference adapter of the whole IFA model (`ifa`, spec/ifa.md): the loss, the
named intermediates of every stage and the gradient of every parameter."""

from __future__ import annotations

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
from refimpl.models.ifa import (
    IFAConfig,
    ifa_backward,
    ifa_batch_from_dict,
    ifa_forward,
    ifa_params_from_dict,
    ifa_params_to_dict,
    init_ifa_params,
)

SPEC = "spec/ifa.md"


def ifa_config(config: Config) -> IFAConfig:
    return IFAConfig(
        num_heads=config["num_heads"], phi=config.get("phi", "softplus"), eps=config.get("eps", 1e-6)
    )


def ifa_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    output, cache = ifa_forward(ifa_params_from_dict(params), ifa_batch_from_dict(inputs), ifa_config(config))
    grads = ifa_params_to_dict(ifa_backward(cache, upstream["d_loss"]))
    return Result(
        outputs={"loss": output.loss},
        grads={f"d_{name}": value for name, value in grads.items()},
        intermediates={
            "fsm_out": output.fsm_out,
            "ram_out": output.ram_out,
            "impression_logit": output.impression_logit,
            "click_logit": output.click_logit,
            "p_imp": output.p_imp,
            "p_clk": output.p_clk,
            "score": output.score,
            "per_candidate_loss": output.per_candidate_loss,
        },
    )


COMPONENTS = {"ifa": ifa_reference}


@dataclass(frozen=True)
class Shape:
    batch: int = 2
    candidates: int = 4
    length: int = 6
    width: int = 8
    items: int = 12
    users: int = 3
    cross: int = 4
    hidden: tuple[int, ...] = (8,)
    scale: float = 1.0  # multiplies the embedding tables (large inputs)
    logit_scale: float = 1.0  # multiplies the towers' output layers (large logits)

    def describe(self, heads: int) -> str:
        return (
            f"B={self.batch}, M={self.candidates}, L={self.length}, E={self.width}, H={heads}, "
            f"hidden {self.hidden}"
        )


def _mask(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    mask = rng.random((b, n)) < 0.75
    mask[:, 0] = True
    return mask


def _build(shape: Shape, empty_sequence_rows: int = 0) -> Builder:
    def build(rng: np.random.Generator) -> CaseTensors:
        b, m, length = shape.batch, shape.candidates, shape.length
        impression = (rng.random((b, m)) < 0.5).astype(np.int64)
        click = impression * (rng.random((b, m)) < 0.5)
        seq_mask = _mask(rng, b, length)
        seq_mask[:empty_sequence_rows] = False
        params = ifa_params_to_dict(
            init_ifa_params(rng, shape.items, shape.users, shape.cross, shape.width, shape.hidden)
        )
        for name in ("item_table", "user_table", "cross_table"):
            params[name] = params[name] * shape.scale
        last = len(shape.hidden)
        for tower in ("impression", "click"):
            params[f"{tower}_W{last}"] = params[f"{tower}_W{last}"] * shape.logit_scale
        for name in params:
            if "_b" in name:
                params[name] = params[name] + 0.1 * rng.standard_normal(params[name].shape)
        return CaseTensors(
            inputs={
                "user_ids": rng.integers(0, shape.users, size=b),
                "cand_ids": rng.integers(0, shape.items, size=(b, m)),
                "cross_ids": rng.integers(0, shape.cross, size=(b, m)),
                "cand_mask": _mask(rng, b, m),
                "seq_ids": rng.integers(0, shape.items, size=(b, length)),
                "seq_mask": seq_mask,
                "impression": impression,
                "click": click.astype(np.int64),
            },
            params=params,
            upstream=upstream_like(rng, {"loss": ()}),
        )

    return build


def _placed_logits(
    impression_logit: np.ndarray, click_logit: np.ndarray, impression: np.ndarray, click: np.ndarray
) -> Builder:
    """Linear towers (no hidden layer) and one cross id per candidate, whose cross embedding is moved
    so that each candidate's impression and click logits take the given values (B, M): the cross
    block of the two towers' weights spans the 2-D move, so every other input stays as drawn."""

    def build(rng: np.random.Generator) -> CaseTensors:
        b, m = impression_logit.shape
        drawn = _build(Shape(batch=b, candidates=m, cross=b * m, hidden=()))(rng)
        inputs = {**drawn.inputs, "cross_ids": np.arange(b * m, dtype=np.int64).reshape(b, m),
                  "cand_mask": np.ones((b, m), dtype=bool),
                  "impression": impression.astype(np.int64), "click": click.astype(np.int64)}
        params = dict(drawn.params)
        width = params["cross_table"].shape[1]
        cross_block = slice(2 * width, 3 * width)  # features are [user; item; cross; FSM; RAM]
        directions = np.stack([params["impression_W0"][cross_block, 0], params["click_W0"][cross_block, 0]])
        output, _ = ifa_forward(ifa_params_from_dict(params), ifa_batch_from_dict(inputs), IFAConfig(num_heads=2))
        wanted = np.stack([impression_logit - output.impression_logit, click_logit - output.click_logit], axis=-1)
        move = np.linalg.solve(directions @ directions.T, wanted.reshape(-1, 2).T).T @ directions
        params["cross_table"] = params["cross_table"] + move
        return CaseTensors(inputs, params, drawn.upstream)

    return build


def _softplus_threshold(rng: np.random.Generator) -> CaseTensors:
    """Every impression logit in (-20.65, -20.05), every label 0: BCE(p_imp p_clk, 0) subtracts two
    softplus values of about 20, so a softplus that returns x above 20 (torch's threshold) is off
    by e^a ~ 1.5e-9 on a per-candidate loss of ~3e-9."""
    logit_rng = np.random.default_rng(20)
    impression_logit = -20.05 - 0.6 * logit_rng.random((2, 4))
    click_logit = logit_rng.uniform(-2.0, 2.0, size=(2, 4))
    labels = np.zeros((2, 4), dtype=np.int64)
    return _placed_logits(impression_logit, click_logit, labels, labels)(rng)


def _saturated_logits(rng: np.random.Generator) -> CaseTensors:
    """Logits near +-30 with every label pattern: (a, c, impression, click) per candidate. Where
    a = +30 with impression 0, or a = c = +30 with click 0, the probabilities round to 1 within
    1e-13 and a BCE computed from them (1 - p) loses 3 of its 16 digits."""
    table = np.array([
        [30.0, 30.0, 1, 0], [30.5, 29.5, 0, 0], [30.0, -30.0, 1, 1], [-30.0, 30.0, 0, 0],
        [-30.0, -30.0, 1, 1], [29.5, 30.5, 1, 1], [-29.5, 30.0, 1, 0], [29.0, -29.5, 0, 0],
    ]).reshape(2, 4, 4)
    return _placed_logits(table[..., 0], table[..., 1], table[..., 2], table[..., 3])(rng)


def _case(name: str, description: str, section: str, config: Config, build: Builder, atol: float = 1e-9) -> CaseSpec:
    return CaseSpec("ifa", name, description, f"{SPEC}#{section}", config, build, atol=atol)


SINGLE = Shape(batch=3, candidates=1, length=1, width=4)
REALISTIC = Shape(batch=2, candidates=16, length=48, width=8, items=40, users=5, cross=6, hidden=(16,))

CASES = (
    _case("small_softplus", f"Masked candidates; {Shape().describe(heads=2)}.",
          "the-model", {"num_heads": 2, "phi": "softplus"}, _build(Shape())),
    _case("small_elu1", "As small_softplus with phi = elu+1 and two hidden layers (8, 4).",
          "the-model", {"num_heads": 2, "phi": "elu+1"}, _build(Shape(hidden=(8, 4)))),
    _case("fully_masked_sequence", "Batch row 0 has no valid behaviour: its FSM rows are zero.",
          "edge-cases", {"num_heads": 2}, _build(Shape(), empty_sequence_rows=1)),
    _case("single_candidate_single_behaviour", f"One candidate, one behaviour; {SINGLE.describe(heads=1)}.",
          "edge-cases", {"num_heads": 1}, _build(SINGLE)),
    _case("large_inputs",
          "Tables scaled by 10, tower outputs by 20: logits in the tens, the BCE stays finite.",
          "edge-cases", {"num_heads": 2}, _build(Shape(scale=10.0, logit_scale=20.0))),
    _case("softplus_threshold",
          "Impression logits in (-20.65, -20.05), labels 0, linear towers: per-candidate losses of "
          "~3e-9 held to atol 1e-12, so a softplus with torch's threshold 20 fails by 1000x.",
          "the-loss-and-softplus", {"num_heads": 2}, _softplus_threshold, atol=1e-12),
    _case("saturated_logits",
          "Logits near +-30 with every label pattern, linear towers: a BCE of the probabilities "
          "(1 - p rounded) fails; the logit form does not.",
          "the-loss-and-softplus", {"num_heads": 2}, _saturated_logits),
    _case("realistic", f"A realistic shape; {REALISTIC.describe(heads=2)}.", "the-model", {"num_heads": 2},
          _build(REALISTIC)),
)
