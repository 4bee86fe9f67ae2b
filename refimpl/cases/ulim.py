"""Golden cases and the reference adapter of the whole ULIM model's training step (spec/ulim.md).

One case = one category-homogeneous batch: the short sequences, the category subsequences, the
positives and the shared in-category negatives, through the item tower, both encoders and ULIM's
loss (eq. 1); the gradient of every parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from refimpl.cases._base import Builder, CaseSpec, CaseTensors, Config, Result, Tensors, upstream_like
from refimpl.models.ulim import ULIMBatch, ULIMConfig, category_subsequence, ulim_init, ulim_loss_and_grads
from refimpl.nn.ulim_loss import UlimLossConfig

SPEC = "spec/ulim.md"
BATCH_FIELDS = ("short_items", "short_mask", "long_items", "long_mask")


def model_config(config: Config) -> ULIMConfig:
    """The ULIMConfig of a case's JSON config."""
    return ULIMConfig(
        num_items=config["num_items"],
        num_categories=config["num_categories"],
        dim=config["dim"],
        num_heads=config["num_heads"],
        long_encoder=config["long_encoder"],
        loss=UlimLossConfig(alpha=config["alpha"], beta=config["beta"]),
    )


def ulim_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    """The training step. Given the whole `long_sequence` (not yet clustered), it first extracts
    the batch category's subsequence (ULIM 2.1.1) and reports it as intermediates."""
    clustered: Tensors = {}
    if "long_sequence" in inputs:
        long_items, long_mask = category_subsequence(
            inputs["long_sequence"], inputs["long_sequence_mask"], inputs["item_category"],
            np.full(inputs["long_sequence"].shape[0], int(config["batch_category"])),
            int(config["max_subsequence"]),
        )
        clustered = {"subsequence_items": long_items, "subsequence_mask": long_mask}
        inputs = {**inputs, "long_items": long_items, "long_mask": long_mask}
    batch = ULIMBatch(**{name: inputs[name] for name in BATCH_FIELDS})
    dtype = params["tower_W"].dtype
    out = ulim_loss_and_grads(
        params, batch, inputs["positive_ids"], inputs["negative_ids"],
        int(config["batch_category"]), inputs["item_category"], model_config(config),
        d_loss=float(upstream["d_loss"]),
    )
    return Result(
        outputs={"loss": np.asarray(out.loss, dtype=dtype)},
        grads={f"d_{name}": grad for name, grad in out.grads.items()},
        intermediates={**clustered, "short_user": out.short_user, "long_user": out.long_user},
    )


COMPONENTS = {"ulim": ulim_reference}


@dataclass(frozen=True)
class BatchShape:
    """The sizes of a category-homogeneous batch: B users, S short-term behaviours, L long-term
    (already clustered) behaviours, N shared negatives; `empty_long_row` leaves row 0 without a
    behaviour of the batch's category."""

    batch: int
    short: int
    long: int
    negatives: int
    empty_long_row: bool = False

    def describe(self) -> str:
        return f"B={self.batch}, S={self.short}, L={self.long}, N={self.negatives} shared negatives"


def describe_config(config: dict[str, Any]) -> str:
    """The model config in words, e.g. 'I=12 items in C=3 categories, D=4, H=2, target attention,
    alpha=1, beta=1, batch category 1'."""
    encoder = "target attention" if config["long_encoder"] == "target" else "self attention"
    return (
        f"I={config['num_items']} items in C={config['num_categories']} categories, D={config['dim']}, "
        f"H={config['num_heads']}, {encoder}, alpha={config['alpha']:g}, beta={config['beta']:g}, "
        f"batch category {config['batch_category']}"
    )


def _draw(config: dict[str, Any], shape: BatchShape) -> Builder:
    b, s, length, n, empty_long_row = shape.batch, shape.short, shape.long, shape.negatives, shape.empty_long_row
    cfg = model_config(config)
    items, categories, category = cfg.num_items, cfg.num_categories, config["batch_category"]

    def build(rng: np.random.Generator) -> CaseTensors:
        params = ulim_init(rng, cfg)
        for name, value in params.items():
            if value.ndim == 1:
                params[name] = 0.1 * rng.standard_normal(value.shape)
        item_category = (np.arange(items) % categories).astype(np.int64)
        in_category = np.flatnonzero(item_category == category)
        short_mask = rng.random((b, s)) < 0.8
        short_mask[:, 0] = True
        long_mask = rng.random((b, length)) < 0.8
        long_mask[:, 0] = True
        if empty_long_row:
            long_mask[0] = False
        inputs: Tensors = {
            "short_items": rng.integers(0, items, size=(b, s)).astype(np.int64),
            "short_mask": short_mask,
            "long_items": rng.choice(in_category, size=(b, length)).astype(np.int64),
            "long_mask": long_mask,
            "positive_ids": rng.choice(in_category, size=b).astype(np.int64),
            "negative_ids": rng.choice(in_category, size=n, replace=False).astype(np.int64),
            "item_category": item_category,
        }
        return CaseTensors(inputs, params, upstream_like(rng, {"loss": ()}))

    return build


UNCLUSTERED = BatchShape(batch=3, short=4, long=10, negatives=3)


def _draw_unclustered(config: dict[str, Any]) -> Builder:
    """UNCLUSTERED, with a long sequence over every category: row 0 holds more behaviours of the
    batch's category than `max_subsequence` keeps, row 2 none at all."""
    # everything but the long input, which is drawn below
    clustered = _draw(config, BatchShape(batch=3, short=4, long=1, negatives=3))
    items, category = config["num_items"], config["batch_category"]

    def build(rng: np.random.Generator) -> CaseTensors:
        drawn = clustered(rng)
        item_category = drawn.inputs["item_category"]
        foreign = np.flatnonzero(item_category != category)
        in_category = np.flatnonzero(item_category == category)
        sequence = rng.integers(0, items, size=(3, UNCLUSTERED.long)).astype(np.int64)
        sequence[0, ::2] = rng.choice(in_category, size=5)
        sequence[2] = rng.choice(foreign, size=UNCLUSTERED.long)
        mask = rng.random((3, UNCLUSTERED.long)) < 0.9
        mask[0, ::2] = True
        inputs = {
            name: value for name, value in drawn.inputs.items() if name not in ("long_items", "long_mask")
        }
        inputs = {**inputs, "long_sequence": sequence, "long_sequence_mask": mask}
        return CaseTensors(inputs, drawn.params, drawn.upstream)

    return build


def _config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "num_items": 12, "num_categories": 3, "dim": 4, "num_heads": 2,
        "long_encoder": "target", "alpha": 1.0, "beta": 1.0, "batch_category": 1,
    }
    return {**base, **overrides}


def _case(name: str, why: str, config: dict[str, Any], shape: BatchShape) -> CaseSpec:
    description = f"{why}: {describe_config(config)}; {shape.describe()}."
    return CaseSpec("ulim", name, description, f"{SPEC}#golden-cases", config, _draw(config, shape), atol=1e-8)


SMALL = BatchShape(batch=3, short=4, long=5, negatives=3)
UNCLUSTERED_CONFIG = _config(max_subsequence=4)

CASES = (
    _case("small", "A batch of one category (item i has category i mod 3)", _config(), SMALL),
    _case("self_attention", "The ULIM-self-attention ablation (MHSA + masked mean over the subsequence)",
          _config(long_encoder="self"), SMALL),
    _case(
        "empty_subsequence", "Row 0 has no behaviour of the batch's category: v_l = 0 for that row and its "
        "long-term loss is log(1 + N) (every score 0)",
        _config(num_heads=1, beta=0.5), BatchShape(batch=2, short=3, long=4, negatives=2, empty_long_row=True),
    ),
    CaseSpec(
        "ulim", "unclustered_long_sequence", "The whole long sequence (every category) goes in: the model "
        "clusters it first (ULIM 2.1.1), keeping the batch category's behaviours in time order, the most "
        f"recent max_subsequence={UNCLUSTERED_CONFIG['max_subsequence']} (row 0 has 7); row 2 has none "
        f"(v_l = 0). The extracted subsequence is an intermediate: {describe_config(UNCLUSTERED_CONFIG)}; "
        f"{UNCLUSTERED.describe()}.",
        f"{SPEC}#category-clustering-ulim-211", UNCLUSTERED_CONFIG, _draw_unclustered(UNCLUSTERED_CONFIG),
        atol=1e-8,
    ),
    _case("accidental_hit", "A negative equal to a row's positive is removed from that row",
          _config(alpha=0.3), BatchShape(batch=4, short=3, long=3, negatives=4)),
)
