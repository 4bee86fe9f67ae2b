"""Adam (Kingma & Ba 2015, Algorithm 1), as `torch.optim.Adam` computes it (eps outside the root).

    m_t = b1 m_{t-1} + (1 - b1) g_t
    v_t = b2 v_{t-1} + (1 - b2) g_t^2
    p_t = p_{t-1} - lr * (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)

Pure: `adam_step` returns new params and a new state and leaves its arguments untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, IntArray, Shapes, require_finite_array, require_int, require_real
from refimpl.nn.row_sparse import RowSparseGrad, require_row_sparse

__all__ = [
    "AdamConfig",
    "AdamState",
    "adam_init",
    "adam_step",
    "lazy_adam_step",
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
    _require_dict("params", params)
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
    _require_config_and_state(cfg, state, params, grads)
    _require_same_keys(params, grads)
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
    return adam_update(params, grads, state, cfg)


def adam_update(
    params: dict[str, Array], grads: dict[str, Array], state: AdamState, cfg: AdamConfig
) -> tuple[dict[str, Array], AdamState]:
    """`adam_step` unchecked (the same numbers), for a caller that checked its params and state once
    and checks each step's gradients (`check_gradients`), as `refimpl.train.fit` does: the state is
    the previous update's and the params its result, so a check of every moment every step (four
    scans of each param-sized array) would find nothing new."""
    step = state.step + 1
    new_params: dict[str, Array] = {}
    m: dict[str, Array] = {}
    v: dict[str, Array] = {}
    for name, p in params.items():
        new_params[name], m[name], v[name] = _adam_update(p, grads[name], state.m[name], state.v[name], step, cfg)
    return new_params, AdamState(step=step, m=m, v=v)


def check_gradients(params: Mapping[str, Array], grads: Mapping[str, object]) -> None:
    """Every param has a gradient: a finite array of its shape and dtype (errors name grads[name])."""
    _require_same_keys(params, grads)
    for name, p in params.items():
        label, g = f"grads[{name!r}]", grads[name]
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{label}: expected a numpy array, got {type(g).__name__}")
        if g.shape != p.shape:
            raise ValueError(f"{label}: expected shape {p.shape} like the param, got {g.shape}")
        if g.dtype != p.dtype:
            raise TypeError(f"{label}: dtype {g.dtype} differs from the param's {p.dtype}")
        require_finite_array(label, g)


def _adam_update(
    p: Array, g: Array, m_prev: Array, v_prev: Array, step: int, cfg: AdamConfig
) -> tuple[Array, Array, Array]:
    """(p_t, m_t, v_t) of the module docstring for one array (a whole param, or the rows a lazy
    update gathered), as new arrays."""
    correction1 = 1.0 - cfg.beta1**step
    correction2 = 1.0 - cfg.beta2**step
    # The module docstring's operations in its order, written in place into the five arrays
    # this update allocates (m_t, v_t, two scratch arrays, p_t): with table-sized params each
    # temporary costs a pass over memory. Bit for bit the numbers of the one-line formulas.
    # m_t = b1 m_{t-1} + (1 - b1) g_t
    m = cfg.beta1 * m_prev
    update = (1 - cfg.beta1) * g
    m += update
    # v_t = b2 v_{t-1} + (1 - b2) g_t^2
    v = cfg.beta2 * v_prev
    np.multiply((1 - cfg.beta2), g, out=update)
    update *= g
    v += update
    # p_t = p_{t-1} - lr * (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps)
    denominator = np.divide(v, correction2)
    np.sqrt(denominator, out=denominator)
    denominator += cfg.eps
    np.divide(m, correction1, out=update)
    update *= cfg.lr
    update /= denominator
    return p - update, m, v


def lazy_adam_step(
    params: dict[str, Array], grads: dict[str, Array | RowSparseGrad], state: AdamState, cfg: AdamConfig
) -> tuple[dict[str, Array], AdamState]:
    """One lazy Adam update (as torch.optim.SparseAdam and TensorFlow's LazyAdam): a param whose
    gradient is a RowSparseGrad updates only the rows listed, by the module docstring's equations
    at step t = state.step + 1; every other row keeps its value and both moments. A param with a
    dense gradient gets `adam_step`'s update, bit for bit.

    How it differs from dense Adam: dense Adam gives an absent row g_t = 0, so it decays the row's
    moments (m_t = b1 m_{t-1}, v_t = b2 v_{t-1}) and still moves it by lr m_hat / (sqrt(v_hat) + eps)
    after its last gradient; lazy Adam leaves the row alone until its next gradient. The two agree
    on a row until its first gradient, and everywhere when every row is present at every step.
    Its cost grows with the rows of the batch, not the table: for large embedding tables
    (spec/optim.md#lazy-adam).

    The row-sparse params and their moments are updated IN PLACE (the returned dicts hold the same
    arrays): a copy would cost the table-sized pass this update exists to avoid; copy them first
    to keep the old values. Checks: every gradient, and for a row-sparse param the shape and dtype
    of the param and its moments and the finiteness (and v >= 0) of the rows it reads; the rows it
    does not read are not scanned. Every check comes before the first write: a refused step leaves
    every array as it was.
    """
    _require_config_and_state(cfg, state, params, grads)
    _require_same_keys(params, grads)
    sparse = {name for name, g in grads.items() if isinstance(g, RowSparseGrad)}
    dense_params = {name: p for name, p in params.items() if name not in sparse}
    dense_state = AdamState(
        step=state.step,
        m={name: m for name, m in state.m.items() if name not in sparse},
        v={name: v for name, v in state.v.items() if name not in sparse},
    )
    dense_grads: dict[str, Array] = {name: g for name, g in grads.items() if not isinstance(g, RowSparseGrad)}
    # every check before the first write: a refused step leaves every array as it was
    gathered: dict[str, tuple[IntArray, Array, Array, Array, Array]] = {}
    for name in sorted(sparse):
        for moments in ("m", "v"):
            if name not in getattr(state, moments):
                raise ValueError(f"state.{moments}: keys must match params ({sorted(params)})")
        p = params[name]
        for label, value in ((f"params[{name!r}]", p), (f"state.m[{name!r}]", state.m[name]),
                             (f"state.v[{name!r}]", state.v[name])):
            # shape and dtype only: a finiteness scan of the table is the cost this update avoids
            if not isinstance(value, np.ndarray) or value.dtype not in (np.float32, np.float64):
                raise TypeError(f"{label}: expected a float32 or float64 array, got "
                                f"{getattr(value, 'dtype', type(value).__name__)}")
            if value.shape != p.shape or value.dtype != p.dtype:
                raise ValueError(f"{label}: expected shape {p.shape} and dtype {p.dtype} like the param, "
                                 f"got {value.shape} {value.dtype}")
            if value.ndim == 0:
                raise ValueError(f"{label}: a row-sparse gradient needs a table with rows (ndim >= 1), "
                                 f"got shape {value.shape}")
            if not value.flags.writeable:
                raise ValueError(f"{label}: lazy Adam writes its rows in place; got a read-only array")
        grad = grads[name]
        require_row_sparse(f"grads[{name!r}]", grad, p.shape, p.dtype)
        assert isinstance(grad, RowSparseGrad)
        rows = grad.rows
        p_rows, m_rows, v_rows = p[rows], state.m[name][rows], state.v[name][rows]
        for label, value in ((f"params[{name!r}]", p_rows), (f"state.m[{name!r}]", m_rows),
                             (f"state.v[{name!r}]", v_rows)):
            bad = ~np.isfinite(value)
            if bad.any():
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(f"{label} (rows of grads[{name!r}].rows): expected finite values, got "
                                 f"{value[where]} in row {int(rows[where[0]])} at {where[1:]}")
        if (v_rows < 0).any():
            raise ValueError(f"state.v[{name!r}]: a second moment is >= 0, got a negative entry")
        gathered[name] = (rows, grad.values, p_rows, m_rows, v_rows)
    new_params, new_state = adam_step(dense_params, dense_grads, dense_state, cfg)
    step = state.step + 1
    for name, (rows, values, p_rows, m_rows, v_rows) in gathered.items():
        params[name][rows], state.m[name][rows], state.v[name][rows] = _adam_update(
            p_rows, values, m_rows, v_rows, step, cfg
        )
        new_params[name] = params[name]
        new_state.m[name] = state.m[name]
        new_state.v[name] = state.v[name]
    return new_params, new_state


def _require_same_keys(params: Mapping[str, object], grads: Mapping[str, object]) -> None:
    if set(grads) != set(params):
        missing = sorted(set(params) - set(grads))
        extra = sorted(set(grads) - set(params))
        raise ValueError(f"grads: keys must match params (missing {missing}, unexpected {extra})")


def _require_dict(name: str, value: object) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name}: expected a dict keyed by param name, got {type(value).__name__}")


def _require_config_and_state(cfg: AdamConfig, state: AdamState, params: object, grads: object) -> None:
    """An AdamConfig, an AdamState and dicts, by name (not an AttributeError deep in the update)."""
    if not isinstance(cfg, AdamConfig):
        raise TypeError(f"cfg: expected an AdamConfig, got {type(cfg).__name__}")
    if not isinstance(state, AdamState):
        raise TypeError(f"state: expected an AdamState, got {type(state).__name__}")
    for name, value in (("params", params), ("grads", grads), ("state.m", state.m), ("state.v", state.v)):
        _require_dict(name, value)
