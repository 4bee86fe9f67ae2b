"""Golden cases and the reference adapter of the whole PGIN model (spec/pgin.md)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

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
from refimpl.cases.pointer_generator import pointer_generator_intermediates
from refimpl.models.pgin import (
    PGINBatch,
    PGINConfig,
    make_batch,
    pgin_backward,
    pgin_forward,
    pgin_init,
)

SPEC = "spec/pgin.md"
BATCH_FIELDS = tuple(PGINBatch.__dataclass_fields__)


def model_config(config: Config) -> PGINConfig:
    """The PGINConfig of a case's JSON config (mlp_hidden is a list there)."""
    return PGINConfig(
        num_categories=config["num_categories"],
        num_items=config["num_items"],
        user_feature_dim=config["user_feature_dim"],
        dim=config["dim"],
        num_heads=config["num_heads"],
        mlp_hidden=tuple(config["mlp_hidden"]),
        gate=config.get("gate", "learned"),
    )


def pgin_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    batch = PGINBatch(**{name: inputs[name] for name in BATCH_FIELDS})
    out, cache = pgin_forward(params, batch, model_config(config))
    grads, d_user_features = pgin_backward(cache, upstream["d_loss"], upstream["d_y"])
    assert out.loss is not None
    return Result(
        outputs={"y": out.y, "loss": out.loss},
        grads={"d_user_features": d_user_features, **{f"d_{k}": v for k, v in grads.items()}},
        intermediates={
            "user_embedding": cache.user_embedding,
            "long_pooled": cache.long_pooled,
            "short_pooled": cache.short_pooled,
            "generator_hidden": cache.generator_hidden,
            "generator_logits": cache.generator_logits,
            **pointer_generator_intermediates(out),
        },
    )


COMPONENTS = {"pgin": pgin_reference}


def random_batch(
    rng: np.random.Generator, cfg: PGINConfig, b: int, long_length: int, short_length: int, p: int
) -> PGINBatch:
    """Random sequences (at least one valid behaviour per row in the long sequence), the merged
    history and labels drawn half from the history, half from all categories."""
    long_mask = rng.random((b, long_length)) < 0.8
    long_mask[:, 0] = True
    short_mask = rng.random((b, short_length)) < 0.8
    batch = make_batch(
        rng.standard_normal((b, cfg.user_feature_dim)),
        rng.integers(0, cfg.num_items, size=(b, long_length)),
        rng.integers(0, cfg.num_categories, size=(b, long_length)),
        long_mask,
        rng.integers(0, cfg.num_items, size=(b, short_length)),
        rng.integers(0, cfg.num_categories, size=(b, short_length)),
        short_mask,
        p,
    )
    from_history = batch.history[np.arange(b), rng.integers(0, batch.history_mask.sum(axis=1))]
    anywhere = rng.integers(0, cfg.num_categories, size=b)
    label = np.where(rng.random(b) < 0.5, from_history, anywhere).astype(np.int64)
    return replace(batch, label=label)


@dataclass(frozen=True)
class PGINShape:
    """The sizes of a case: B users, L long-term and S short-term behaviours, a merged category
    history of P; `empty_short` leaves row 0 without a short-term behaviour."""

    batch: int
    long: int
    short: int
    history: int
    empty_short: bool = False

    def describe(self) -> str:
        return f"B={self.batch}, L={self.long}, S={self.short}, P={self.history}"


def describe_config(config: dict[str, Any]) -> str:
    """The model config in words, e.g. 'C=6, V=10, F=3, D=4, H=2, hidden layers (5,), learned gate'."""
    return (
        f"C={config['num_categories']}, V={config['num_items']}, F={config['user_feature_dim']}, "
        f"D={config['dim']}, H={config['num_heads']}, hidden layers {tuple(config['mlp_hidden'])}, "
        f"{config['gate']} gate"
    )


def _draw(config: dict[str, Any], shape: PGINShape) -> Builder:
    cfg = model_config(config)
    b, long_length, short_length, p, empty_short = (
        shape.batch, shape.long, shape.short, shape.history, shape.empty_short
    )

    def build(rng: np.random.Generator) -> CaseTensors:
        params = pgin_init(rng, cfg)
        for name, value in params.items():
            if value.ndim == 1 and name != "gate_w":
                params[name] = 0.1 * rng.standard_normal(value.shape)
        batch = random_batch(rng, cfg, b, long_length, short_length, p)
        if empty_short:
            batch.short_mask[0] = False
        inputs: Tensors = {name: getattr(batch, name) for name in BATCH_FIELDS}
        return CaseTensors(
            inputs, params, upstream_like(rng, {"y": (b, cfg.num_categories), "loss": ()})
        )

    return build


def _config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "num_categories": 6, "num_items": 10, "user_feature_dim": 3, "dim": 4,
        "num_heads": 2, "mlp_hidden": [5], "gate": "learned",
    }
    return {**base, **overrides}


def _case(name: str, why: str, config: dict[str, Any], shape: PGINShape) -> CaseSpec:
    description = f"{why}: {describe_config(config)}; {shape.describe()}."
    return CaseSpec("pgin", name, description, f"{SPEC}#model", config, _draw(config, shape))


CASES = (
    _case("small", "Row 0 has an empty short sequence", _config(mlp_hidden=[6, 5]),
          PGINShape(batch=3, long=6, short=3, history=4, empty_short=True)),
    _case("one_category", "One category: y = [1] for every row", _config(num_categories=1, num_heads=1),
          PGINShape(batch=2, long=4, short=2, history=2)),
)
