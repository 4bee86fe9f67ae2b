"""Golden cases and the reference adapters of the Adam optimiser, `adam`, and of lazy Adam,
`lazy_adam` (spec/optim.md).

Adam has no backward: a case holds parameters, a fixed sequence of T gradients (one per step,
given, not recomputed from the parameters), the moments it starts from and the step count; it
checks the parameters and moments after the T updates, and the parameters after every earlier
step as intermediates (so a failing implementation learns at which step it first diverges).

Tensor names, for params `w` and `b`: params `w`, `b`; inputs `grad_w` (T, *w.shape),
`grad_b` (T, *b.shape), `m_w`, `v_w`, `m_b`, `v_b` (the moments before the first step);
outputs `new_w`, `new_b`, `new_m_w`, `new_v_w`, `new_m_b`, `new_v_b`; intermediates
`w_after_step{t}`, `b_after_step{t}` for t = 1..T-1. Config: lr, beta1, beta2, eps and `step`, the
number of updates already made (0 for fresh moments).
Two cases hold second moments near 1e-17 (gradients of 1e-7 to 1e-9): their float64 atol is
1e-24, so those moments are checked relative to their size, not drowned in an absolute 1e-9.
`lazy_adam` adds the input `present_w` (T, V) bool: the rows of `w` (V, D) whose gradient is given
at step t (their rows of `grad_w[t]`; the other rows of `grad_w[t]` are zero and not read); `b`'s
gradient is dense.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from refimpl._check import Array
from refimpl.cases._base import Builder, CaseSpec, CaseTensors, Config, Result, Tensors
from refimpl.nn.row_sparse import RowSparseGrad
from refimpl.optim import AdamConfig, AdamState, adam_step, lazy_adam_step

SPEC = "spec/optim.md"
PARAMS = ("w", "b")


AdamStepFn = Callable[
    [dict[str, Array], dict[str, Array], AdamState, AdamConfig], tuple[dict[str, Array], AdamState]
]
"""refimpl.optim.adam_step's signature: (params, grads, state, cfg) -> (new params, new state)."""


def adam_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    return run_adam_steps(inputs, params, config, adam_step)


def run_adam_steps(inputs: Tensors, params: Tensors, config: Config, step: AdamStepFn) -> Result:
    """The case's T updates with a given step function (the reference's, or a test's variant)."""
    cfg = AdamConfig(lr=config["lr"], beta1=config["beta1"], beta2=config["beta2"], eps=config["eps"])
    state = AdamState(
        step=int(config["step"]),
        m={name: inputs[f"m_{name}"] for name in PARAMS},
        v={name: inputs[f"v_{name}"] for name in PARAMS},
    )
    current = {name: params[name] for name in PARAMS}
    steps = inputs["grad_w"].shape[0]
    intermediates: Tensors = {}
    for t in range(steps):
        grads = {name: inputs[f"grad_{name}"][t] for name in PARAMS}
        current, state = step(current, grads, state, cfg)
        if t < steps - 1:
            intermediates.update({f"{name}_after_step{t + 1}": current[name] for name in PARAMS})
    outputs = {f"new_{name}": current[name] for name in PARAMS}
    for name in PARAMS:
        outputs[f"new_m_{name}"] = state.m[name]
        outputs[f"new_v_{name}"] = state.v[name]
    return Result(outputs=outputs, grads={}, intermediates=intermediates)


def lazy_adam_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    return run_lazy_adam_steps(inputs, params, config, lazy_adam_step)


LazyAdamStepFn = Callable[
    [dict[str, Array], dict[str, Array | RowSparseGrad], AdamState, AdamConfig],
    tuple[dict[str, Array], AdamState],
]
"""refimpl.optim.lazy_adam_step's signature."""


def run_lazy_adam_steps(inputs: Tensors, params: Tensors, config: Config, step: LazyAdamStepFn) -> Result:
    """The case's T lazy updates: `w`'s gradient row-sparse over the rows `present_w[t]` marks.
    Works on copies (lazy Adam updates in place) and stores copies of every intermediate."""
    cfg = AdamConfig(lr=config["lr"], beta1=config["beta1"], beta2=config["beta2"], eps=config["eps"])
    state = AdamState(
        step=int(config["step"]),
        m={name: inputs[f"m_{name}"].copy() for name in PARAMS},
        v={name: inputs[f"v_{name}"].copy() for name in PARAMS},
    )
    current = {name: params[name].copy() for name in PARAMS}
    steps = inputs["grad_w"].shape[0]
    intermediates: Tensors = {}
    for t in range(steps):
        rows = np.flatnonzero(inputs["present_w"][t])
        grads: dict[str, Array | RowSparseGrad] = {
            "w": RowSparseGrad(rows, inputs["grad_w"][t][rows]), "b": inputs["grad_b"][t],
        }
        current, state = step(current, grads, state, cfg)
        if t < steps - 1:
            intermediates.update({f"{name}_after_step{t + 1}": current[name].copy() for name in PARAMS})
    outputs = {f"new_{name}": current[name].copy() for name in PARAMS}
    for name in PARAMS:
        outputs[f"new_m_{name}"] = state.m[name].copy()
        outputs[f"new_v_{name}"] = state.v[name].copy()
    return Result(outputs=outputs, grads={}, intermediates=intermediates)


COMPONENTS = {"adam": adam_reference, "lazy_adam": lazy_adam_reference}


def _config(lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, step: int = 0) -> Config:
    return {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "step": step}


def _fresh(w_shape: tuple[int, ...], b_size: int, steps: int, grad_scale: float = 1.0) -> Builder:
    """Random params and T random gradients, zero moments."""

    def build(rng: np.random.Generator) -> CaseTensors:
        w = rng.standard_normal(w_shape)
        b = rng.standard_normal(b_size)
        return CaseTensors(
            inputs={
                "grad_w": grad_scale * rng.standard_normal((steps, *w_shape)),
                "grad_b": grad_scale * rng.standard_normal((steps, b_size)),
                "m_w": np.zeros(w_shape),
                "v_w": np.zeros(w_shape),
                "m_b": np.zeros(b_size),
                "v_b": np.zeros(b_size),
            },
            params={"w": w, "b": b},
            upstream={},
        )

    return build


def _hand_checkable(rng: np.random.Generator) -> CaseTensors:
    """One step from zero moments; gradients chosen so every update is written in the spec:
    a large one, a negative one, zero (no move), eps (half a step), and a tiny one."""
    del rng  # every number of this case is written by hand
    return CaseTensors(
        inputs={
            "grad_w": np.array([[[0.5, -2.0, 0.0], [1e-8, 3.0, -1e-9]]]),
            "grad_b": np.array([[4.0, -0.25]]),
            "m_w": np.zeros((2, 3)),
            "v_w": np.zeros((2, 3)),
            "m_b": np.zeros(2),
            "v_b": np.zeros(2),
        },
        params={"w": np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 0.5]]), "b": np.array([0.0, 1.0])},
        upstream={},
    )


def _resumed(rng: np.random.Generator) -> CaseTensors:
    """Two steps continuing from step 10: random moments (v >= 0), gradients of mixed scales."""
    w_shape, b_size, steps = (3, 4), 4, 2
    return CaseTensors(
        inputs={
            "grad_w": rng.standard_normal((steps, *w_shape)) * np.array([1e-3, 1.0, 10.0, 0.1]),
            "grad_b": rng.standard_normal((steps, b_size)),
            "m_w": 0.1 * rng.standard_normal(w_shape),
            "v_w": 0.01 * rng.random(w_shape),
            "m_b": 0.1 * rng.standard_normal(b_size),
            "v_b": 0.01 * rng.random(b_size),
        },
        params={"w": rng.standard_normal(w_shape), "b": rng.standard_normal(b_size)},
        upstream={},
    )


def _rows_come_and_go(rng: np.random.Generator) -> CaseTensors:
    """Three steps on w (5, 2): rows {0, 1, 2}, then {1}, then {1, 3}. Rows 0 and 2 carry momentum
    into steps 2 and 3 without a gradient (dense Adam would move them; lazy Adam does not), row 3
    is first touched at step 3 (its bias correction is step 3's), row 4 never."""
    present = np.zeros((3, 5), dtype=bool)
    present[0, [0, 1, 2]] = present[1, 1] = present[2, [1, 3]] = True
    return CaseTensors(
        inputs={
            "grad_w": np.where(present[:, :, None], rng.standard_normal((3, 5, 2)), 0.0),
            "present_w": present,
            "grad_b": rng.standard_normal((3, 2)),
            "m_w": np.zeros((5, 2)),
            "v_w": np.zeros((5, 2)),
            "m_b": np.zeros(2),
            "v_b": np.zeros(2),
        },
        params={"w": rng.standard_normal((5, 2)), "b": rng.standard_normal(2)},
        upstream={},
    )


CASES = (
    CaseSpec(
        "adam",
        "one_step_tiny",
        "One step from zero moments, default hyperparameters; hand-checkable (numbers in the spec).",
        f"{SPEC}#worked-example",
        _config(),
        _hand_checkable,
        atol=1e-24,
    ),
    CaseSpec(
        "adam",
        "one_step_random",
        "One step from zero moments, lr=0.01; w (4, 5), b (5,), random gradients.",
        f"{SPEC}#the-update",
        _config(lr=0.01),
        _fresh((4, 5), 5, 1),
    ),
    CaseSpec(
        "adam",
        "five_steps",
        "Five steps from zero moments, lr=0.01, beta2=0.99; w (3, 4), b (4,).",
        f"{SPEC}#the-update",
        _config(lr=0.01, beta2=0.99),
        _fresh((3, 4), 4, 5),
    ),
    CaseSpec(
        "adam",
        "resumed_custom_betas",
        "Two steps resuming at step 10 from given moments; lr=0.05, betas (0.8, 0.99), eps=1e-6.",
        f"{SPEC}#state",
        _config(lr=0.05, beta1=0.8, beta2=0.99, eps=1e-6, step=10),
        _resumed,
    ),
    CaseSpec(
        "adam",
        "small_gradients",
        "Three steps with gradients ~1e-7 (eps=1e-8 is no longer negligible); w (2, 3), b (3,).",
        f"{SPEC}#edge-cases",
        _config(),
        _fresh((2, 3), 3, 3, grad_scale=1e-7),
        atol=1e-24,
    ),
    CaseSpec(
        "lazy_adam",
        "rows_come_and_go",
        "Three lazy steps on w (5, 2), rows {0,1,2} then {1} then {1,3}, b dense; lr=0.01.",
        f"{SPEC}#lazy-adam",
        _config(lr=0.01),
        _rows_come_and_go,
    ),
)
