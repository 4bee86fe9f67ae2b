"""Check the weight mapping of spec/attention.md against torch.nn.MultiheadAttention.

Builds `torch.nn.MultiheadAttention(D, H, batch_first=True, dropout=0)` from the reference's
weights (in_proj_weight = concat(Wq.T, Wk.T, Wv.T), in_proj_bias = concat(bq, bk, bv),
out_proj.weight = Wo.T, out_proj.bias = bo, key_padding_mask = ~key_mask), runs both on random
float64 inputs with random key masks (every row keeps at least one valid key: torch returns NaN for
a row without one, the reference zeros), and prints the greatest absolute difference of the outputs
and of the gradients of the inputs and weights.

Then runs `torch.nn.MultiheadAttention` in float32, as a user's port would, through the conformance
runner on every case of the attention family (`attention`, `mhsa`, `target_attention`) at
`--dtype float32`, and prints each case's worst share of the allowed error, next to the share the
pre-issue-12 rule (atol = max(8 x the reference's own float32 error, 1e-6)) would have allowed.

Run: `python tools/check_torch_mapping.py`. torch is not a dependency of refimpl: without it the
script says so and exits 0. Exits 1 when a float64 difference exceeds 1e-10 or a float32 case fails.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from refimpl.conformance.runner import run_conformance
from refimpl.golden import default_golden_root
from refimpl.golden.format import find_cases, read_case
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


def torch_attention(
    torch: Any, params: dict[str, Any], q_in: Any, kv_in: Any, key_mask: Any, query_mask: Any, heads: int,
    d_out: Any, self_attention: bool = False,
) -> dict[str, Any]:
    """out and every gradient of attention(q_in, kv_in) by torch.nn.MultiheadAttention, in the inputs' dtype.

    As a port must: a row without a valid key attends to every key (torch would return NaN) and is
    then zeroed, like the rows of masked queries."""
    dtype = torch.float32 if q_in.dtype == np.float32 else torch.float64
    d = q_in.shape[-1]
    mha = torch.nn.MultiheadAttention(d, heads, dropout=0.0, batch_first=True, dtype=dtype)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.from_numpy(np.concatenate([params[f"W{n}"].T for n in "qkv"])))
        mha.in_proj_bias.copy_(torch.from_numpy(np.concatenate([params[f"b{n}"] for n in "qkv"])))
        mha.out_proj.weight.copy_(torch.from_numpy(params["Wo"].T.copy()))
        mha.out_proj.bias.copy_(torch.from_numpy(params["bo"]))
    any_key = key_mask.any(axis=1)
    padding = torch.from_numpy(~key_mask & any_key[:, None])
    row_valid = torch.from_numpy((query_mask & any_key[:, None])[..., None].astype(q_in.dtype))
    query = torch.tensor(q_in, requires_grad=True)
    kv = query if self_attention else torch.tensor(kv_in, requires_grad=True)
    out, _ = mha(query, kv, kv, key_padding_mask=padding, need_weights=False)
    out = out * row_valid
    (out * torch.from_numpy(d_out)).sum().backward()
    in_grad = mha.in_proj_weight.grad.numpy()
    in_bias_grad = mha.in_proj_bias.grad.numpy()
    result = {"out": out.detach().numpy(), "d_q_in": query.grad.numpy(),
              "d_Wo": mha.out_proj.weight.grad.numpy().T.copy(), "d_bo": mha.out_proj.bias.grad.numpy()}
    if not self_attention:
        result["d_kv_in"] = kv.grad.numpy()
    for i, name in enumerate("qkv"):
        result[f"d_W{name}"] = in_grad[i * d : (i + 1) * d].T.copy()
        result[f"d_b{name}"] = in_bias_grad[i * d : (i + 1) * d]
    return result


def torch_adapter(torch: Any) -> dict[str, Any]:
    """The attention family through torch.nn.MultiheadAttention: the adapter a user would write."""
    def attention(inputs: dict[str, Any], params: dict[str, Any], config: dict[str, Any],
                  upstream: dict[str, Any]) -> dict[str, Any]:
        return torch_attention(torch, params, inputs["q_in"], inputs["kv_in"], inputs["key_mask"],
                               inputs["query_mask"], config["num_heads"], upstream["d_out"])

    def mhsa(inputs: dict[str, Any], params: dict[str, Any], config: dict[str, Any],
             upstream: dict[str, Any]) -> dict[str, Any]:
        x, mask = inputs["x"], inputs["mask"]
        result = torch_attention(torch, params, x, x, mask, mask, config["num_heads"], upstream["d_out"],
                                 self_attention=True)
        result["d_x"] = result.pop("d_q_in")
        return result

    def target_attention(inputs: dict[str, Any], params: dict[str, Any], config: dict[str, Any],
                         upstream: dict[str, Any]) -> dict[str, Any]:
        query = inputs["query"][:, None, :]
        result = torch_attention(torch, params, query, inputs["seq"], inputs["mask"],
                                 np.ones(query.shape[:2], dtype=bool), config["num_heads"],
                                 upstream["d_out"][:, None, :])
        result["out"] = result["out"][:, 0]
        result["d_query"] = result.pop("d_q_in")[:, 0]
        result["d_seq"] = result.pop("d_kv_in")
        return result

    return {"attention": attention, "mhsa": mhsa, "target_attention": target_attention}


def old_rule_shares(report: Any) -> dict[str, float]:
    """Worst share per case under the old rule: atol = max(8 x reference_float32_error, 1e-6)."""
    entries = {}
    for folder in find_cases(default_golden_root()):
        case = read_case(folder)
        for t in case.tensors:
            if t.float32 is not None:
                entries[(case.case_id, t.name)] = t.float32
    shares = {}
    for result in report.results:
        worst = 0.0
        for c in result.comparisons:
            if c.problem or not c.total:
                continue
            f32 = entries[(result.case_id, c.name)]
            old_atol = max(8.0 * f32.reference_float32_error, 1e-6)
            # the element at worst share is not always the one at worst abs, but |diff| <= max_abs bounds it
            worst = max(worst, c.max_abs / (old_atol + f32.rtol * abs(c.expected_at_worst)))
        shares[result.case_id] = worst
    return shares


def check_float32(torch: Any) -> bool:
    """torch.nn.MultiheadAttention in float32 through the runner on every attention-family case."""
    report = run_conformance(torch_adapter(torch), components=("attention", "mhsa", "target_attention"),
                             dtype="float32")
    old = old_rule_shares(report)
    print(f"\ntorch.nn.MultiheadAttention in float32 through the conformance runner ({len(report.results)} cases)")
    print(f"{'case':<44}{'status':<8}{'worst share':>12}{'old rule':>10}")
    for result in report.results:
        print(f"{result.case_id:<44}{result.status:<8}{result.worst_share:>12.3g}{old[result.case_id]:>10.3g}")
    worst = max((r.worst_share for r in report.results), default=0.0)
    print(f"worst share {worst:.3g} (limit 1); under the old rule {max(old.values(), default=0.0):.3g}")
    return report.ok and bool(report.results)


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
    float32_ok = check_float32(torch)
    return 0 if worst <= TOLERANCE and float32_ok else 1


if __name__ == "__main__":
    sys.exit(main())
