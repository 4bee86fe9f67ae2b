"""Benchmark refimpl's hand-written kernels against torch autograd, side by side in one run.

For each kernel of the table below, in float64 and float32, it times forward + backward of the
reference (the kernel's `*_forward` then `*_backward`) and of the same computation written the plain
way in torch (`torch.autograd.grad` of the outputs against the same upstream gradients), both on one
thread (BLAS through refimpl.threads, torch through `torch.set_num_threads(1)`). The repeats are
interleaved (refimpl, torch, refimpl, torch, ...) so that both see the same load on a shared
machine; the table gives the median and the minimum of each and their ratio (refimpl / torch:
lower is better), plus the spread (max - min) / median of each side as a measure of the noise.
Each repeat is timed twice: wall clock, and the CPU time of the calling thread (`time.thread_time`;
both sides compute on this one thread). On a loaded machine the wall time includes waiting for a
core, so the ratio of CPU medians is the steadier comparison; the table gives both.

    kernel                    shapes
    mhsa                      B=64 L=100 D=64 H=4, random lengths
    target_attention          B=256, one query, L=2,000 D=64 H=4, random lengths
    capsule_detached          B=64 L=100 K=4 D=64, 3 iterations, final coefficients detached
    capsule_exact             the same, exact gradient through every iteration
    linear_attention          B=1 M=L=2,048 D=64 H=1, softplus
    sampled_softmax           B=1,024 N=1,000 shared negatives D=64
    embedding                 100,000 ids into a 1,000,000 x 64 table (backward: the dense d_table)

    python tools/bench_kernels.py [--repeats 9] [--dtypes float64 float32] [--kernels mhsa ...]

torch is not a dependency of refimpl (`pip install torch` to run this); without it the script says
so and exits 0. The torch side is what a user would write: nn.MultiheadAttention for the attention
kernels, the routing loop with `detach()` as in the MIND/ComiRec code, F.embedding.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refimpl.nn.attention import (  # noqa: E402
    PARAM_NAMES,
    AttentionConfig,
    AttentionParams,
    mhsa_backward,
    mhsa_forward,
    target_attention_backward,
    target_attention_forward,
)
from refimpl.nn.capsule_routing import (  # noqa: E402
    CapsuleRoutingConfig,
    CapsuleRoutingParams,
    capsule_routing_backward,
    capsule_routing_forward,
)
from refimpl.nn.embedding import embedding_backward, embedding_forward  # noqa: E402
from refimpl.nn.linear_attention import (  # noqa: E402
    LinearAttentionConfig,
    linear_attention_backward,
    linear_attention_forward,
)
from refimpl.nn.sampled_softmax import (  # noqa: E402
    SampledSoftmaxConfig,
    sampled_softmax_backward,
    sampled_softmax_forward,
)
from refimpl.threads import blas_threads  # noqa: E402

Run = Callable[[], object]


@dataclass(frozen=True)
class Pair:
    """One kernel in one dtype: the refimpl run and the torch run, each forward + backward."""

    refimpl: Run
    torch: Run


def _attention_params(rng: np.random.Generator, d: int, dtype: type) -> AttentionParams:
    return AttentionParams(**{
        name: (rng.standard_normal((d, d)) / np.sqrt(d) if name.startswith("W") else 0.1 * rng.standard_normal(d))
        .astype(dtype)
        for name in PARAM_NAMES
    })


def _lengths_mask(rng: np.random.Generator, b: int, length: int) -> np.ndarray:
    """Each row valid up to a random length in [L/2, L] (padding at the end, as in the models)."""
    lengths = rng.integers(length // 2, length + 1, size=b)
    mask: np.ndarray = np.arange(length)[None, :] < lengths[:, None]
    return mask


def _torch_mha(torch: Any, p: AttentionParams, heads: int) -> Any:
    """nn.MultiheadAttention holding the reference's weights (the mapping of spec/attention.md)."""
    d = p.Wq.shape[0]
    mha = torch.nn.MultiheadAttention(d, heads, dropout=0.0, batch_first=True, dtype=_torch_dtype(torch, p.Wq))
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.from_numpy(np.concatenate([p.Wq.T, p.Wk.T, p.Wv.T])))
        mha.in_proj_bias.copy_(torch.from_numpy(np.concatenate([p.bq, p.bk, p.bv])))
        mha.out_proj.weight.copy_(torch.from_numpy(p.Wo.T.copy()))
        mha.out_proj.bias.copy_(torch.from_numpy(p.bo))
    return mha


def _torch_dtype(torch: Any, array: np.ndarray) -> Any:
    return torch.float64 if array.dtype == np.float64 else torch.float32


def _grad(torch: Any, output: Any, upstream: Any, wrt: list[Any]) -> object:
    return torch.autograd.grad(output, wrt, upstream)


def mhsa(torch: Any, rng: np.random.Generator, dtype: type) -> Pair:
    b, length, d, heads = 64, 100, 64, 4
    p = _attention_params(rng, d, dtype)
    x = rng.standard_normal((b, length, d)).astype(dtype)
    mask = _lengths_mask(rng, b, length)
    d_out = rng.standard_normal((b, length, d)).astype(dtype)
    cfg = AttentionConfig(num_heads=heads)

    def reference() -> object:
        _, cache = mhsa_forward(p, x, mask, cfg)
        return mhsa_backward(cache, d_out)

    mha = _torch_mha(torch, p, heads)
    tx = torch.tensor(x, requires_grad=True)
    padding, valid, t_d_out = torch.from_numpy(~mask), torch.from_numpy(mask)[..., None], torch.from_numpy(d_out)

    def torch_run() -> object:
        out = mha(tx, tx, tx, key_padding_mask=padding, need_weights=False)[0] * valid
        return _grad(torch, out, t_d_out, [tx, *mha.parameters()])

    return Pair(reference, torch_run)


def target_attention(torch: Any, rng: np.random.Generator, dtype: type) -> Pair:
    b, length, d, heads = 256, 2000, 64, 4
    p = _attention_params(rng, d, dtype)
    query = rng.standard_normal((b, d)).astype(dtype)
    seq = rng.standard_normal((b, length, d)).astype(dtype)
    mask = _lengths_mask(rng, b, length)
    d_out = rng.standard_normal((b, d)).astype(dtype)
    cfg = AttentionConfig(num_heads=heads)

    def reference() -> object:
        _, cache = target_attention_forward(p, query, seq, mask, cfg)
        return target_attention_backward(cache, d_out)

    mha = _torch_mha(torch, p, heads)
    tq, ts = torch.tensor(query[:, None, :], requires_grad=True), torch.tensor(seq, requires_grad=True)
    padding, t_d_out = torch.from_numpy(~mask), torch.from_numpy(d_out[:, None, :])

    def torch_run() -> object:
        out = mha(tq, ts, ts, key_padding_mask=padding, need_weights=False)[0]
        return _grad(torch, out, t_d_out, [tq, ts, *mha.parameters()])

    return Pair(reference, torch_run)


def _capsule(torch: Any, rng: np.random.Generator, dtype: type, detach: bool) -> Pair:
    b, length, k, d, iterations = 64, 100, 4, 64, 3
    W = (rng.standard_normal((k, d, d)) / np.sqrt(d)).astype(dtype)
    items = rng.standard_normal((b, length, d)).astype(dtype)
    item_weights = rng.random((b, length)).astype(dtype)
    mask = _lengths_mask(rng, b, length)
    logits0 = rng.standard_normal((b, length, k)).astype(dtype)
    d_interests = rng.standard_normal((b, k, d)).astype(dtype)
    cfg = CapsuleRoutingConfig(iterations=iterations, detach_routing=detach)
    params = CapsuleRoutingParams(W=W)

    def reference() -> object:
        _, cache = capsule_routing_forward(params, items, item_weights, mask, logits0, cfg)
        return capsule_routing_backward(cache, d_interests)

    tW, t_items, t_a = (torch.tensor(a, requires_grad=True) for a in (W, items, item_weights))
    t_b0 = torch.tensor(logits0, requires_grad=not detach)
    t_mask, t_d = torch.from_numpy(mask).to(t_a.dtype), torch.from_numpy(d_interests)

    def squash(z: Any) -> Any:
        norm2 = (z * z).sum(-1, keepdim=True)
        return z * (norm2 / ((1 + norm2) * torch.sqrt(norm2 + 1e-9)))

    def torch_run() -> object:
        u = torch.einsum("bld,kdo->blko", t_items, tW)  # (B, L, K, D)
        a = t_a * t_mask
        routed = u.detach() if detach else u  # MIND/ComiRec: the routing loop sees constants
        logits = t_b0
        for r in range(iterations):
            c = torch.softmax(logits, dim=-1)
            if r + 1 < iterations:
                v = squash(torch.einsum("bl,blk,blko->bko", a.detach() if detach else a, c, routed))
                logits = torch.einsum("blko,bko->blk", routed, v)
        c = c.detach() if detach else c
        out = squash(torch.einsum("bl,blk,blko->bko", a, c, u))
        return _grad(torch, out, t_d, [tW, t_items, t_a] + ([] if detach else [t_b0]))

    return Pair(reference, torch_run)


def capsule_detached(torch: Any, rng: np.random.Generator, dtype: type) -> Pair:
    return _capsule(torch, rng, dtype, detach=True)


def capsule_exact(torch: Any, rng: np.random.Generator, dtype: type) -> Pair:
    return _capsule(torch, rng, dtype, detach=False)


def linear_attention(torch: Any, rng: np.random.Generator, dtype: type) -> Pair:
    n, d = 2048, 64
    p = _attention_params(rng, d, dtype)
    q_in = rng.standard_normal((1, n, d)).astype(dtype)
    kv_in = rng.standard_normal((1, n, d)).astype(dtype)
    key_mask = np.ones((1, n), dtype=bool)
    d_out = rng.standard_normal((1, n, d)).astype(dtype)
    cfg = LinearAttentionConfig(num_heads=1)

    def reference() -> object:
        _, cache = linear_attention_forward(p, q_in, kv_in, key_mask, cfg)
        return linear_attention_backward(cache, d_out)

    t = {name: torch.tensor(getattr(p, name), requires_grad=True) for name in PARAM_NAMES}
    tq, tkv, t_d_out = torch.tensor(q_in, requires_grad=True), torch.tensor(kv_in, requires_grad=True), \
        torch.from_numpy(d_out)
    softplus = torch.nn.functional.softplus

    def torch_run() -> object:
        phi_q = softplus(tq @ t["Wq"] + t["bq"])
        phi_k = softplus(tkv @ t["Wk"] + t["bk"])
        v = tkv @ t["Wv"] + t["bv"]
        summary = phi_k.transpose(1, 2) @ v  # (B, D, D)
        degree = phi_q @ phi_k.sum(1, keepdim=True).transpose(1, 2)  # (B, M, 1)
        out = (phi_q @ summary / (degree + 1e-6)) @ t["Wo"] + t["bo"]
        return _grad(torch, out, t_d_out, [tq, tkv, *t.values()])

    return Pair(reference, torch_run)


def sampled_softmax(torch: Any, rng: np.random.Generator, dtype: type) -> Pair:
    b, n, d, vocab = 1024, 1000, 64, 100_000
    user, positive = (rng.standard_normal((b, d)).astype(dtype) for _ in range(2))
    negatives = rng.standard_normal((n, d)).astype(dtype)
    positive_ids, negative_ids = rng.integers(0, vocab, size=b), rng.integers(0, vocab, size=n)
    cfg = SampledSoftmaxConfig()

    def reference() -> object:
        _, cache = sampled_softmax_forward(user, positive, negatives, positive_ids, negative_ids, cfg)
        return sampled_softmax_backward(cache, 1.0)

    tu, tp, tn = (torch.tensor(a, requires_grad=True) for a in (user, positive, negatives))
    hits = torch.from_numpy(negative_ids[None, :] == positive_ids[:, None])

    def torch_run() -> object:
        positive_logits = (tu * tp).sum(1, keepdim=True)
        negative_logits = (tu @ tn.T).masked_fill(hits, float("-inf"))  # accidental hits removed
        logits = torch.cat([positive_logits, negative_logits], dim=1)
        loss = (torch.logsumexp(logits, dim=1) - positive_logits[:, 0]).mean()
        return torch.autograd.grad(loss, [tu, tp, tn])

    return Pair(reference, torch_run)


def embedding(torch: Any, rng: np.random.Generator, dtype: type) -> Pair:
    vocab, d, count = 1_000_000, 64, 100_000
    table = rng.standard_normal((vocab, d)).astype(dtype)
    ids = rng.integers(0, vocab, size=count)
    d_out = rng.standard_normal((count, d)).astype(dtype)

    def reference() -> object:
        _, cache = embedding_forward(table, ids)
        return embedding_backward(cache, d_out)

    t_table, t_ids, t_d_out = torch.tensor(table, requires_grad=True), torch.from_numpy(ids), torch.from_numpy(d_out)

    def torch_run() -> object:
        return _grad(torch, torch.nn.functional.embedding(t_ids, t_table), t_d_out, [t_table])

    return Pair(reference, torch_run)


KERNELS: dict[str, tuple[str, Callable[[Any, np.random.Generator, type], Pair]]] = {
    "mhsa": ("MHSA B=64 L=100 D=64 H=4", mhsa),
    "target_attention": ("target attention B=256, 1 query, L=2,000, D=64, H=4", target_attention),
    "capsule_detached": ("capsule routing B=64 L=100 K=4 D=64, 3 iterations, detached", capsule_detached),
    "capsule_exact": ("capsule routing, exact gradient", capsule_exact),
    "linear_attention": ("linear attention M=L=2,048 D=64", linear_attention),
    "sampled_softmax": ("sampled softmax B=1,024 N=1,000 D=64", sampled_softmax),
    "embedding": ("embedding backward, 100k ids into 1M x 64", embedding),
}


def time_once(run: Run) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this thread) of one run."""
    wall, cpu = time.perf_counter(), time.thread_time()
    run()
    return time.perf_counter() - wall, time.thread_time() - cpu


@dataclass
class Times:
    wall: list[float]
    cpu: list[float]


def measure(pair: Pair, repeats: int) -> tuple[Times, Times]:
    """Interleaved repeats after one warm-up of each: (refimpl times, torch times)."""
    pair.refimpl()
    pair.torch()
    ours, theirs = Times([], []), Times([], [])
    for _ in range(repeats):
        for run, times in ((pair.refimpl, ours), (pair.torch, theirs)):
            wall, cpu = time_once(run)
            times.wall.append(wall)
            times.cpu.append(cpu)
    return ours, theirs


def spread(times: list[float]) -> float:
    return (max(times) - min(times)) / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats of each side (default 9)")
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    parser.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=list(KERNELS))
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("bench_kernels: torch is not installed (it is not a dependency of refimpl); "
              "`pip install torch` to compare against it")
        return 0
    torch.set_num_threads(1)
    print(f"numpy {np.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"1 thread each, {args.repeats} interleaved repeats, forward + backward, times in ms")
    print("ratio = refimpl / torch (lower is better); spread = (max - min) / median of each side\n")
    print("| kernel | dtype | refimpl median | torch median | ratio of medians | refimpl min | torch min "
          "| ratio of mins | spread refimpl / torch | CPU ratio of medians | CPU ratio of mins |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with blas_threads(1):
        for key in args.kernels:
            label, build = KERNELS[key]
            for dtype_name in args.dtypes:
                pair = build(torch, np.random.default_rng(0), getattr(np, dtype_name))
                ours, theirs = measure(pair, args.repeats)
                med_o, med_t = statistics.median(ours.wall) * 1e3, statistics.median(theirs.wall) * 1e3
                min_o, min_t = min(ours.wall) * 1e3, min(theirs.wall) * 1e3
                cpu_med = statistics.median(ours.cpu) / statistics.median(theirs.cpu)
                cpu_min = min(ours.cpu) / min(theirs.cpu)
                print(f"| {label} | {dtype_name} | {med_o:.2f} | {med_t:.2f} | {med_o / med_t:.2f} | "
                      f"{min_o:.2f} | {min_t:.2f} | {min_o / min_t:.2f} | "
                      f"{spread(ours.wall):.0%} / {spread(theirs.wall):.0%} | {cpu_med:.2f} | {cpu_min:.2f} |",
                      flush=True)
                del pair
    return 0


if __name__ == "__main__":
    sys.exit(main())
