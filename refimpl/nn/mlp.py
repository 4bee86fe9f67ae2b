"""Multi-layer perceptron: a stack of affine layers, each followed by its own activation
(spec/mlp.md). Used by UMI's user-guided attention (eq. 2) and interest refinement (eq. 7-9), PGIN's
generator head (ULIM) and IFA's impression and click towers.

    h_0 = x,   h_l = act_l(h_{l-1} W_l + b_l)   (layers l = 1..n),   act_l in {relu, sigmoid, identity}

Shapes: x (..., D_0), W_l (D_{l-1}, D_l), b_l (D_l,), output (..., D_n).
Activation gradients: relu'(z) = [z > 0] (0 at z = 0), sigmoid'(z) = s (1 - s), identity' = 1.
Golden tensors number the layers from 0: `W_0, b_0` is the first layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, Shapes
from refimpl.nn._upstream import check_upstream
from refimpl.nn.linear import (
    LinearCache,
    LinearParams,
    affine,
    affine_backward,
    check_features,
)

__all__ = [
    "MLPCache",
    "MLPConfig",
    "MLPParams",
    "mlp_backward",
    "mlp_forward",
]

ACTIVATIONS = ("relu", "sigmoid", "identity")


@dataclass(frozen=True)
class MLPParams:
    layers: tuple[LinearParams, ...]


@dataclass(frozen=True)
class MLPConfig:
    activations: tuple[str, ...]  # one per layer


@dataclass(frozen=True)
class MLPCache:
    linear: tuple[LinearCache, ...]
    activated: tuple[Array, ...]  # act_l(z_l) per layer
    activations: tuple[str, ...]


def sigmoid(z: Array) -> Array:
    """Numerically stable logistic function (no overflow warning for large |z|)."""
    e = np.exp(-np.abs(z))
    result: Array = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)
    return result


def activate(name: str, z: Array) -> Array:
    if name == "relu":
        return np.maximum(z, 0)
    if name == "sigmoid":
        return sigmoid(z)
    return z


def activation_backward(name: str, activated: Array, d_activated: Array) -> Array:
    """d_z from d_act, using the activated value (relu: a > 0 iff z > 0; sigmoid: s (1 - s))."""
    if name == "relu":
        return d_activated * (activated > 0)
    if name == "sigmoid":
        return d_activated * activated * (1 - activated)
    return d_activated


def check_mlp(params: MLPParams, cfg: MLPConfig, shapes: Shapes | None = None) -> None:
    """Validate the layers (W_l chained through shared widths D_l) and one activation per layer."""
    shapes = Shapes() if shapes is None else shapes
    if not isinstance(params.layers, tuple | list) or len(params.layers) == 0:
        raise ValueError("params.layers: an MLP needs a non-empty sequence of layers")
    if not isinstance(cfg.activations, tuple | list) or len(cfg.activations) != len(params.layers):
        raise ValueError(
            f"cfg.activations: expected a sequence of one activation per layer "
            f"({len(params.layers)}), got {cfg.activations!r}"
        )
    for index, name in enumerate(cfg.activations):
        if name not in ACTIVATIONS:
            raise ValueError(f"cfg.activations[{index}]: expected one of {ACTIVATIONS}, got {name!r}")
    for index, layer in enumerate(params.layers):
        shapes.check_float(f"W_{index}", layer.W, (f"D_{index}", f"D_{index + 1}"))
        shapes.check_float(f"b_{index}", layer.b, (f"D_{index + 1}",))


def mlp_forward(params: MLPParams, x: Array, cfg: MLPConfig) -> tuple[Array, MLPCache]:
    """Apply every layer in turn; returns the last activation (..., D_n)."""
    shapes = Shapes()
    check_mlp(params, cfg, shapes)
    check_features(shapes, "x", x, "D_0")
    caches: list[LinearCache] = []
    activated: list[Array] = []
    h = x
    # x and every layer are validated above: each layer is `linear_forward`'s unchecked kernel
    for layer, act in zip(params.layers, cfg.activations, strict=True):
        h_in = h
        h = activate(act, affine(h_in, layer.W, layer.b))
        caches.append(LinearCache(x=h_in, W=layer.W))
        activated.append(h)
    return h, MLPCache(linear=tuple(caches), activated=tuple(activated), activations=cfg.activations)


def mlp_backward(cache: MLPCache, d_out: Array) -> tuple[MLPParams, Array]:
    """Gradients of every layer (as MLPParams) and d_x."""
    last = cache.activated[-1]
    check_upstream("d_out", d_out, last.shape, last.dtype)
    grads: list[LinearParams] = []
    d_h = d_out
    for lin, act, a in zip(reversed(cache.linear), reversed(cache.activations), reversed(cache.activated), strict=True):
        # in the forward pass this was: h = activate(act, z)
        d_z = activation_backward(act, a, d_h)
        # in the forward pass this was: z = h_previous W + b (`linear_backward`'s unchecked kernel:
        # d_out is validated above, and every later d_z is computed here from it)
        d_W, d_b, d_h = affine_backward(lin.x, lin.W, d_z)
        grads.append(LinearParams(W=d_W, b=d_b))
    return MLPParams(layers=tuple(reversed(grads))), d_h
