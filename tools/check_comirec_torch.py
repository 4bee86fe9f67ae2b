"""Check refimpl's dynamic routing (spec/dynamic_routing.md) against ComiRec's routing run by autograd.

Writes the routing the way ComiRec's public code lays it out (one weight `w` of shape
(1, L, K D, D), prediction vectors `u[b, i, j D + d] = sum_c w[0, i, j D + d, c] e[b, i, c]`, padded
embeddings multiplied by the mask, logits starting at a constant zero, the softmax over interests
zeroed at padded positions, the logits accumulating u . v) in torch, and lets autograd differentiate
it in ComiRec's two gradient modes: `stop_grad = True` (the first t-1 iterations route on a
detached u) and `stop_grad = False`. The reference's W is mapped from w by
W[i, j, c, d] = w[0, i, j D + d, c]. Prints the greatest absolute difference of the interests and
of the gradients of the items and the weights for each mode and shape.

Run: `python tools/check_comirec_torch.py`. torch is not a dependency of refimpl: without it the
script says so and exits 0. Exits 1 when a float64 difference exceeds 1e-10.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from refimpl.nn.dynamic_routing import (
    DynamicRoutingConfig,
    DynamicRoutingParams,
    dynamic_routing_backward,
    dynamic_routing_forward,
)

TOLERANCE = 1e-10
SHAPES = ((2, 5, 3, 4), (4, 8, 4, 6), (3, 20, 2, 8))  # (B, L, K, D)


def torch_routing(torch: Any, w: Any, items: Any, mask: Any, stop_grad: bool, iterations: int) -> Any:
    """ComiRec's routing (bilinear_type = 2) in torch: (B, K, D) interests."""
    b, length, d = items.shape
    k = w.shape[2] // d
    masked_items = items * mask[:, :, None]
    u = (w[:, :length] * masked_items[:, :, None, :]).sum(dim=3)  # (B, L, K D)
    u = u.reshape(b, length, k, d).permute(0, 2, 1, 3)  # (B, K, L, D)
    u_iter = u.detach() if stop_grad else u
    logits = torch.zeros(b, k, length, dtype=items.dtype)
    for r in range(iterations):
        c = torch.softmax(logits, dim=1) * mask[:, None, :]
        source = u if r == iterations - 1 else u_iter
        z = (c[:, :, :, None] * source).sum(dim=2)  # (B, K, D)
        n = (z * z).sum(dim=-1, keepdim=True)
        v = n / (1 + n) / torch.sqrt(n + 1e-9) * z
        if r < iterations - 1:
            logits = logits + (u_iter * v[:, :, None, :]).sum(dim=-1)
    return v


def compare(
    torch: Any, rng: np.random.Generator, shape: tuple[int, int, int, int], stop_grad: bool
) -> dict[str, float]:
    b, length, k, d = shape
    items = rng.standard_normal((b, length, d))
    mask = rng.random((b, length)) < 0.7
    mask[:, 0] = True
    w = rng.standard_normal((1, length, k * d, d)) / np.sqrt(d)
    upstream = rng.standard_normal((b, k, d))
    W = w[0].reshape(length, k, d, d).transpose(0, 1, 3, 2)  # W[i, j, c, d] = w[0, i, j D + d, c]
    cfg = DynamicRoutingConfig(iterations=3, detach_routing=stop_grad)
    interests, cache = dynamic_routing_forward(DynamicRoutingParams(np.ascontiguousarray(W)), items, mask, cfg)
    grads = dynamic_routing_backward(cache, upstream)

    w_t = torch.tensor(w, requires_grad=True)
    items_t = torch.tensor(items, requires_grad=True)
    out = torch_routing(torch, w_t, items_t, torch.tensor(mask, dtype=torch.float64), stop_grad, 3)
    (out * torch.tensor(upstream)).sum().backward()
    d_w = w_t.grad.numpy()[0].reshape(length, k, d, d).transpose(0, 1, 3, 2)
    return {
        "interests": float(np.abs(out.detach().numpy() - interests).max()),
        "d_items": float(np.abs(items_t.grad.numpy() - grads.items).max()),
        "d_W": float(np.abs(d_w - grads.W).max()),
    }


def main() -> int:
    try:
        import torch
    except ImportError:
        print("torch is not installed: nothing to check (pip install torch to run this check)")
        return 0
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(0)
    worst = 0.0
    print(f"{'B, L, K, D':<16}{'mode':<24}{'interests':>12}{'d_items':>12}{'d_W':>12}")
    for shape in SHAPES:
        for stop_grad in (True, False):
            diffs = compare(torch, rng, shape, stop_grad)
            worst = max(worst, *diffs.values())
            mode = "stop_grad (detached)" if stop_grad else "exact"
            row = "".join(f"{diffs[name]:>12.1e}" for name in ("interests", "d_items", "d_W"))
            print(f"{str(shape):<16}{mode:<24}{row}")
    print(f"worst difference {worst:.1e} (tolerance {TOLERANCE:.0e})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
