"""Check the weight mapping of spec/attention.md against torch.nn.MultiheadAttention.

Builds `torch.nn.MultiheadAttention(D, H, batch_first=True, dropout=0)` from the reference's
weights (in_proj_weight = concat(Wq.T, Wk.T, Wv.T), in_proj_bias = concat(bq, bk, bv),
out_proj.weight = Wo.T, out_proj.bias = bo, key_padding_mask = ~key_mask), runs both on random
float64 inputs with random key masks (every row keeps at least one valid key: torch returns NaN for
a row without one, the reference zeros), and prints the greatest absolute difference of the outputs
and of the gradients of the inputs and weights.

Run: `python tools/check_torch_mapping.py`. torch is not a dependency of refimpl: without it the
script says so and exits 0. Exits 1 when a difference exceeds 1e-10.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from refimpl.nn.attention import (
    AttentionConfig,
    AttentionParams,
    attention_backward,
    attention_forward,
)

TOLERANCE = 1e-10
SHAPES = ((2, 3, 5, 4, 1), (3, 4, 6, 8, 2), (8, 50, 50, 32, 4), (4, 1, 7, 8, 4))  # (B, Q, L, D, H)


def random_case(rng: np.random.Generator, b: int, q: int, length: int, d: int) -> dict[str, Any]:
    weights = {name: rng.standard_normal((d, d)) / np.sqrt(d) for name in ("Wq", "Wk", "Wv", "Wo")}
    biases = {name: 0.1 * rng.standard_normal(d) for name in ("bq", "bk", "bv", "bo")}
    key_mask = rng.random((b, length)) < 0.7
    key_mask[np.arange(b), rng.integers(0, length, size=b)] = True
    return {
        "params": AttentionParams(**weights, **biases),
        "q_in": rng.standard_normal((b, q, d)),
        "kv_in": rng.standard_normal((b, length, d)),
        "key_mask": key_mask,
        "d_out": rng.standard_normal((b, q, d)),
    }


def compare(torch: Any, case: dict[str, Any], heads: int) -> dict[str, float]:
    """Max |torch - reference| of the output and of every gradient, by name."""
    p: AttentionParams = case["params"]
    d = p.Wq.shape[0]
    out, cache = attention_forward(p, case["q_in"], case["kv_in"], case["key_mask"], AttentionConfig(num_heads=heads))
    grads, d_q_in, d_kv_in = attention_backward(cache, case["d_out"])

    mha = torch.nn.MultiheadAttention(d, heads, dropout=0.0, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.from_numpy(np.concatenate([p.Wq.T, p.Wk.T, p.Wv.T])))
        mha.in_proj_bias.copy_(torch.from_numpy(np.concatenate([p.bq, p.bk, p.bv])))
        mha.out_proj.weight.copy_(torch.from_numpy(p.Wo.T.copy()))
        mha.out_proj.bias.copy_(torch.from_numpy(p.bo))
    query = torch.tensor(case["q_in"], requires_grad=True)
    kv = torch.tensor(case["kv_in"], requires_grad=True)
    padding = torch.from_numpy(~case["key_mask"])
    # The same tensor as key and value, as the reference's kv_in feeds both projections.
    torch_out, _ = mha(query, kv, kv, key_padding_mask=padding, need_weights=False)
    (torch_out * torch.from_numpy(case["d_out"])).sum().backward()

    in_grad = mha.in_proj_weight.grad.numpy()
    in_bias_grad = mha.in_proj_bias.grad.numpy()
    pairs = {
        "out": (torch_out.detach().numpy(), out),
        "d_q_in": (query.grad.numpy(), d_q_in),
        "d_kv_in": (kv.grad.numpy(), d_kv_in),
        "d_Wq": (in_grad[:d].T, grads.Wq),
        "d_Wk": (in_grad[d : 2 * d].T, grads.Wk),
        "d_Wv": (in_grad[2 * d :].T, grads.Wv),
        "d_bq": (in_bias_grad[:d], grads.bq),
        "d_bk": (in_bias_grad[d : 2 * d], grads.bk),
        "d_bv": (in_bias_grad[2 * d :], grads.bv),
        "d_Wo": (mha.out_proj.weight.grad.numpy().T, grads.Wo),
        "d_bo": (mha.out_proj.bias.grad.numpy(), grads.bo),
    }
    return {name: float(np.max(np.abs(a - b))) for name, (a, b) in pairs.items()}


def main() -> int:
    try:
        import torch
    except ImportError:
        print("torch is not installed: nothing to check (pip install torch to run this check)")
        return 0
    rng = np.random.Generator(np.random.PCG64(20250101))
    worst = 0.0
    print(f"torch {torch.__version__}, float64; max |torch - refimpl| per tensor")
    for b, q, length, d, heads in SHAPES:
        differences = compare(torch, random_case(rng, b, q, length, d), heads)
        worst = max(worst, *differences.values())
        shown = ", ".join(f"{k} {v:.2e}" for k, v in differences.items())
        print(f"B={b} Q={q} L={length} D={d} H={heads}: {shown}")
    print(f"worst difference {worst:.3e} (tolerance {TOLERANCE:g})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
