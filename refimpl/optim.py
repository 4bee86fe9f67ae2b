"""Adam (Kingma & Ba 2015, Algorithm 1), as `torch.optim.Adam` computes it (eps outside the root).

    m_t = b1 m_{t-1} + (1 - b1) g_t
    v_t = b2 v_{t-1} + (1 - b2) g_t^2
    p_t = p_{t-1} - lr * (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)

Pure: `adam_step` returns new params and a new state and leaves its arguments untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, Shapes, require_int, require_real

__all__ = [
    "AdamConfig",
    "AdamState",
    "adam_init",
    "adam_step",
]


@dataclass(frozen=True)
class AdamConfig:
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        # beta = 1 would make the bias correction 1 - beta^t zero: a division by zero, not an error;
        # eps = 0 divides 0 by 0 for a parameter whose gradients have all been 0
        require_real("AdamConfig.lr", self.lr, low=0.0, low_open=True)
        for name in ("beta1", "beta2"):
            value = require_real(f"AdamConfig.{name}", getattr(self, name), low=0.0)
            if not value < 1.0:
                raise ValueError(f"AdamConfig.{name}: expected [0, 1), got {value!r}")
        require_real("AdamConfig.eps", self.eps, low=0.0, low_open=True)


@dataclass(frozen=True)
class AdamState:
    step: int
    m: dict[str, Array]
    v: dict[str, Array]


def adam_init(params: dict[str, Array]) -> AdamState:
    """Zero moments for every parameter, step 0."""
    for name, p in params.items():
        Shapes().check_float(f"params[{name!r}]", p, tuple(np.shape(p)))
    return AdamState(
        step=0,
        m={name: np.zeros_like(p) for name, p in params.items()},
        v={name: np.zeros_like(p) for name, p in params.items()},
    )


def adam_step(
    params: dict[str, Array], grads: dict[str, Array], state: AdamState, cfg: AdamConfig
) -> tuple[dict[str, Array], AdamState]:
    """One Adam update of every parameter; `grads` must have exactly the keys of `params`."""
    if set(grads) != set(params):
        missing = sorted(set(params) - set(grads))
        extra = sorted(set(grads) - set(params))
        raise ValueError(f"grads: keys must match params (missing {missing}, unexpected {extra})")
    for moments in ("m", "v"):
        if set(getattr(state, moments)) != set(params):
            raise ValueError(f"state.{moments}: keys must match params ({sorted(params)})")
    require_int("state.step", state.step, low=0)
    for name, p in params.items():
        shapes = Shapes()
        dims = tuple(np.shape(p))
        shapes.check_float(f"params[{name!r}]", p, dims)
        for label, value in (
            (f"grads[{name!r}]", grads[name]),
            (f"state.m[{name!r}]", state.m[name]),
            (f"state.v[{name!r}]", state.v[name]),
        ):
            if isinstance(value, np.ndarray) and value.shape != dims:
                raise ValueError(f"{label}: expected shape {dims} like the param, got {value.shape}")
            shapes.check_float(label, value, dims)
        if (state.v[name] < 0).any():
            raise ValueError(f"state.v[{name!r}]: a second moment is >= 0, got a negative entry")
    step = state.step + 1
    correction1 = 1.0 - cfg.beta1**step
    correction2 = 1.0 - cfg.beta2**step
    new_params: dict[str, Array] = {}
    m: dict[str, Array] = {}
    v: dict[str, Array] = {}
    for name, p in params.items():
        g = grads[name]
        # The module docstring's operations in its order, written in place into the five arrays
        # this update allocates (m_t, v_t, two scratch arrays, p_t): with table-sized params each
        # temporary costs a pass over memory. Bit for bit the numbers of the one-line formulas.
        # m_t = b1 m_{t-1} + (1 - b1) g_t
        m[name] = cfg.beta1 * state.m[name]
        update = (1 - cfg.beta1) * g
        m[name] += update
        # v_t = b2 v_{t-1} + (1 - b2) g_t^2
        v[name] = cfg.beta2 * state.v[name]
        np.multiply((1 - cfg.beta2), g, out=update)
        update *= g
        v[name] += update
        # p_t = p_{t-1} - lr * (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)
        denominator = np.divide(v[name], correction2)
        np.sqrt(denominator, out=denominator)
        denominator += cfg.eps
        np.divide(m[name], correction1, out=update)
        update *= cfg.lr
        update /= denominator
        new_params[name] = p - update
    return new_params, AdamState(step=step, m=m, v=v)
