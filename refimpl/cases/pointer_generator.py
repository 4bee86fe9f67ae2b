"""Golden cases and the reference adapter of `pointer_generator`, PGIN's gated mixture and loss
(spec/pointer_generator.md)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from refimpl._check import BoolArray, IntArray
from refimpl.cases._base import (
    Builder,
    CaseSpec,
    CaseTensors,
    Config,
    Result,
    Tensors,
    upstream_like,
)
from refimpl.nn.attention import PARAM_NAMES, AttentionParams
from refimpl.nn.pointer_generator import (
    PointerGeneratorCache,
    PointerGeneratorConfig,
    PointerGeneratorOutput,
    PointerGeneratorParams,
    pointer_generator_backward,
    pointer_generator_forward,
)

SPEC = "spec/pointer_generator.md"


def _config(config: Config) -> PointerGeneratorConfig:
    """Every case states `gate`; "learned" (the model) is also the spec's default."""
    return PointerGeneratorConfig(num_heads=config["num_heads"], gate=config.get("gate", "learned"))


def _params(params: Tensors) -> PointerGeneratorParams:
    return PointerGeneratorParams(
        attention=AttentionParams(**{name: params[name] for name in PARAM_NAMES}),
        gate_w=params["gate_w"],
        gate_b=params["gate_b"],
    )


def _forward(
    inputs: Tensors, params: Tensors, config: Config, label: IntArray | None
) -> tuple[PointerGeneratorOutput, PointerGeneratorCache]:
    """The forward pass on a case's tensors, with the label (training) or without (serving)."""
    return pointer_generator_forward(
        _params(params),
        inputs["query"],
        inputs["history_emb"],
        inputs["history"],
        inputs["history_mask"],
        inputs["generator_logits"],
        inputs["generator_hidden"],
        label,
        _config(config),
    )


def pointer_generator_reference(
    inputs: Tensors, params: Tensors, config: Config, upstream: Tensors
) -> Result:
    out, cache = _forward(inputs, params, config, inputs["label"])
    grads = pointer_generator_backward(cache, upstream["d_y"], upstream["d_loss"])
    assert out.loss is not None
    return Result(
        outputs={"y": out.y, "loss": out.loss},
        grads={
            "d_query": grads.query,
            "d_history_emb": grads.history_emb,
            "d_generator_logits": grads.generator_logits,
            "d_generator_hidden": grads.generator_hidden,
            **{f"d_{name}": getattr(grads.params.attention, name) for name in PARAM_NAMES},
            "d_gate_w": grads.params.gate_w,
            "d_gate_b": grads.params.gate_b,
        },
        intermediates=pointer_generator_intermediates(out),
    )


def pointer_generator_intermediates(out: PointerGeneratorOutput) -> Tensors:
    """The named intermediates of the pointer-generator, in computation order (row_loss only
    with labels)."""
    serving = {
        "pointer_weights": out.pointer_weights,
        "pointer_context": out.pointer_context,
        "y_poi": out.y_poi,
        "y_gen": out.y_gen,
        "P_poi": out.P_poi,
    }
    return serving if out.row_loss is None else {**serving, "row_loss": out.row_loss}


def pointer_generator_serving_reference(
    inputs: Tensors, params: Tensors, config: Config, upstream: Tensors
) -> Result:
    """Serving: the forward pass without a label (no loss, no backward); y (B, C) only."""
    out, _ = _forward(inputs, params, config, None)
    return Result(outputs={"y": out.y}, grads={}, intermediates=pointer_generator_intermediates(out))


COMPONENTS = {
    "pointer_generator": pointer_generator_reference,
    "pointer_generator_serving": pointer_generator_serving_reference,
}


@dataclass(frozen=True)
class Recipe:
    """How to draw one case. `valid` fixes the number of valid history positions of the first rows;
    `duplicates` draws history ids with repeats; rows in `single_id_rows` repeat one id at every
    position; `label` is 'random', 'absent' or 'present'
    (relative to each row's history); `gate_bias` fixes gate_b (None: drawn)."""

    batch: int
    positions: int
    width: int
    categories: int
    hidden: int
    valid: tuple[int, ...] = ()
    duplicates: bool = False
    single_id_rows: tuple[int, ...] = ()
    label: str = "random"
    gate_bias: float | None = None
    weight_scale: float = 1.0

    def describe(self, heads: int) -> str:
        return (
            f"B={self.batch}, P={self.positions}, D={self.width}, H={heads}, C={self.categories}, "
            f"G={self.hidden}"
        )


def _history(rng: np.random.Generator, r: Recipe) -> tuple[IntArray, BoolArray]:
    counts = rng.integers(1, r.positions + 1, size=r.batch)
    counts[: len(r.valid)] = r.valid
    history = np.zeros((r.batch, r.positions), dtype=np.int64)
    mask = np.arange(r.positions)[None, :] < counts[:, None]
    for row in range(r.batch):
        if r.duplicates:
            ids = rng.integers(0, min(r.categories, 3), size=r.positions)
        else:
            ids = (
                rng.permutation(r.categories)[: r.positions]
                if r.categories >= r.positions
                else rng.integers(0, r.categories, size=r.positions)
            )
        if row in r.single_id_rows:
            ids = np.full(r.positions, ids[0])
        history[row] = np.where(mask[row], ids, 0)
    return history, mask


def _labels(rng: np.random.Generator, r: Recipe, history: IntArray, mask: BoolArray) -> IntArray:
    labels = rng.integers(0, r.categories, size=r.batch)
    for row in range(r.batch):
        present = np.unique(history[row, mask[row]])
        absent = np.setdiff1d(np.arange(r.categories), present)
        if r.label == "present" and present.size:
            labels[row] = rng.choice(present)
        elif r.label == "absent" and absent.size:
            labels[row] = rng.choice(absent)
    return labels.astype(np.int64)


def _draw(r: Recipe) -> Builder:
    def build(rng: np.random.Generator) -> CaseTensors:
        history, mask = _history(rng, r)
        table = rng.standard_normal((r.categories, r.width))
        params: Tensors = {
            name: rng.standard_normal((r.width, r.width)) * r.weight_scale / np.sqrt(r.width)
            if name.startswith("W")
            else 0.1 * rng.standard_normal(r.width)
            for name in PARAM_NAMES
        }
        params["gate_w"] = rng.standard_normal(r.width + r.hidden) / np.sqrt(r.width + r.hidden)
        bias = rng.standard_normal() if r.gate_bias is None else r.gate_bias
        params["gate_b"] = np.array([bias])
        inputs: Tensors = {
            "query": rng.standard_normal((r.batch, r.width)),
            "history_emb": table[history],
            "history": history,
            "history_mask": mask,
            "generator_logits": rng.standard_normal((r.batch, r.categories)),
            "generator_hidden": rng.standard_normal((r.batch, r.hidden)),
            "label": _labels(rng, r, history, mask),
        }
        return CaseTensors(inputs, params, upstream_like(rng, {"y": (r.batch, r.categories), "loss": ()}))

    return build


def _without_label(build: Builder) -> Builder:
    """The same draw, for serving: no label, no upstream gradient."""
    def serving(rng: np.random.Generator) -> CaseTensors:
        drawn = build(rng)
        inputs = {name: value for name, value in drawn.inputs.items() if name != "label"}
        return CaseTensors(inputs, drawn.params, {})

    return serving


def _hand(rng: np.random.Generator) -> CaseTensors:
    """The worked example of the spec: scores (0, 0, ln 2) over history ids (2, 0, 2), C = 4."""
    eye = np.eye(2)
    zero = np.zeros(2)
    params: Tensors = {name: eye if name.startswith("W") else zero for name in PARAM_NAMES}
    params["gate_w"] = np.zeros(3)
    params["gate_b"] = np.zeros(1)
    inputs: Tensors = {
        "query": np.array([[1.0, 0.0]]),
        "history_emb": np.array([[[0.0, 1.0], [0.0, -1.0], [np.sqrt(2.0) * np.log(2.0), 0.0]]]),
        "history": np.array([[2, 0, 2]], dtype=np.int64),
        "history_mask": np.ones((1, 3), dtype=bool),
        "generator_logits": np.zeros((1, 4)),
        "generator_hidden": np.array([[0.5]]),
        "label": np.array([1], dtype=np.int64),
    }
    return CaseTensors(inputs, params, upstream_like(rng, {"y": (1, 4), "loss": ()}))


def _case(
    name: str, description: str, section: str, recipe: Recipe | Builder, num_heads: int = 1, gate: str = "learned"
) -> CaseSpec:
    """A case; a Recipe's shapes and heads are appended to `description`."""
    if isinstance(recipe, Recipe):
        description = f"{description}; {recipe.describe(num_heads)}."
        recipe = _draw(recipe)
    config = {"num_heads": num_heads, "gate": gate}
    return CaseSpec("pointer_generator", name, description, f"{SPEC}#{section}", config, recipe)


SMALL = Recipe(batch=4, positions=5, width=4, categories=7, hidden=3)
EDGE = Recipe(batch=3, positions=4, width=4, categories=6, hidden=2)

TRAINING_CASES = (
    _case(
        "tiny_hand", "The spec's worked example: history ids (2, 0, 2), gate 0.5.",
        "worked-example", _hand,
    ),
    _case("small", "Random history lengths and labels", "equations", SMALL, num_heads=2),
    _case(
        "duplicates", "Un-deduplicated histories with repeated ids (ids from {0, 1, 2}): the scatter must sum them",
        "edge-cases",
        Recipe(batch=4, positions=6, width=4, categories=5, hidden=2, valid=(6, 6), duplicates=True),
    ),
    _case(
        "single_category_history", "Rows 0 and 1 have one valid history position, row 2 repeats one "
        "category at every position",
        "edge-cases", replace(EDGE, valid=(1, 1, 4), single_id_rows=(2,)),
    ),
    _case(
        "label_absent", "Every label is absent from its row's history: y[label] comes from the generator only",
        "edge-cases", Recipe(batch=4, positions=4, width=4, categories=9, hidden=3, label="absent"),
    ),
    _case(
        "gate_near_one", "gate_b = +20 saturates the gate: P_poi = 1 - O(1e-9); labels in the history",
        "edge-cases", replace(EDGE, label="present", gate_bias=20.0),
    ),
    _case(
        "gate_near_zero", "gate_b = -20 saturates the gate: P_poi = O(1e-9); labels in the history",
        "edge-cases", replace(EDGE, label="present", gate_bias=-20.0),
    ),
    _case(
        "one_category", "One category: y = [1] whatever the gate; loss -log(1 + 1e-12); zero logit grads",
        "edge-cases", Recipe(batch=3, positions=3, width=4, categories=1, hidden=2, duplicates=True),
    ),
    _case(
        "empty_history_row", "Row 0 has no valid history: its gate is 0 and y = y_gen",
        "edge-cases", replace(EDGE, valid=(0,)),
    ),
    _case(
        "gate_pointer", "cfg.gate = 'pointer' (ablation): P_poi = 1 on rows with a history; row 0 empty",
        "gate-modes", replace(EDGE, valid=(0,)), gate="pointer",
    ),
    _case(
        "gate_generator", "cfg.gate = 'generator' (ablation): P_poi = 0, y = y_gen",
        "gate-modes", EDGE, gate="generator",
    ),
    _case(
        "realistic", "Kept small for the golden size budget", "equations",
        Recipe(batch=6, positions=20, width=8, categories=60, hidden=8), num_heads=2,
    ),
)

SERVING_WITHOUT_HISTORY = replace(SMALL, valid=(0,))
SERVING_CASES = (
    CaseSpec(
        "pointer_generator_serving", "no_label", "Serving without a label (no loss), row 0 without history "
        f"(y = y_gen there); {SERVING_WITHOUT_HISTORY.describe(2)}.", f"{SPEC}#serving-without-a-label",
        {"num_heads": 2, "gate": "learned"}, _without_label(_draw(SERVING_WITHOUT_HISTORY)),
    ),
)

CASES = TRAINING_CASES + SERVING_CASES
