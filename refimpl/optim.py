"""Adam (Kingma & Ba 2015, Algorithm 1), as `torch.optim.Adam` computes it (eps outside the root).

    m_t = b1 m_{t-1} + (1 - b1) g_t
    v_t = b2 v_{t-1} + (1 - b2) g_t^2
    p_t = p_{t-1} - lr * (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)

Pure: `adam_step` returns new params and a new state and leaves its arguments untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import Array


@dataclass(frozen=True)
class AdamConfig:
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        # beta = 1 would make the bias correction 1 - beta^t zero: a division by zero, not an error
        if not self.lr > 0:
            raise ValueError(f"AdamConfig.lr: expected > 0, got {self.lr!r}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"AdamConfig.{name}: expected [0, 1), got {getattr(self, name)!r}")
        if not self.eps >= 0:
            raise ValueError(f"AdamConfig.eps: expected >= 0, got {self.eps!r}")


@dataclass(frozen=True)
class AdamState:
    step: int
    m: dict[str, Array]
    v: dict[str, Array]


def adam_init(params: dict[str, Array]) -> AdamState:
    """Zero moments for every parameter, step 0."""
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
    for name, p in params.items():
        if grads[name].shape != p.shape:
            raise ValueError(
                f"grads[{name!r}]: expected shape {p.shape} like the param, got {grads[name].shape}"
            )
        if grads[name].dtype != p.dtype:
            raise TypeError(
                f"grads[{name!r}]: dtype {grads[name].dtype} differs from the param's {p.dtype}"
            )
    step = state.step + 1
    correction1 = 1.0 - cfg.beta1**step
    correction2 = 1.0 - cfg.beta2**step
    new_params: dict[str, Array] = {}
    m: dict[str, Array] = {}
    v: dict[str, Array] = {}
    for name, p in params.items():
        g = grads[name]
        m[name] = cfg.beta1 * state.m[name] + (1 - cfg.beta1) * g
        v[name] = cfg.beta2 * state.v[name] + (1 - cfg.beta2) * g * g
        new_params[name] = p - cfg.lr * (m[name] / correction1) / (
            np.sqrt(v[name] / correction2) + cfg.eps
        )
    return new_params, AdamState(step=step, m=m, v=v)
