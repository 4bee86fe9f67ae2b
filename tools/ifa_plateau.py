"""Why the IFA demo's sequence models sat on a loss plateau: train one model of the demo on one
seed and print, at every measurement, what its attention and its gradients look like.

The training is the demo's (refimpl.pipelines.ifa: the same data, split, init, batches and Adam
at a constant rate; no stopping rule, so a stuck run is seen to the end). Per measurement:

- the training ESMM loss (mean since the last row), the validation ESMM loss and the validation
  click-among-shown AUC (what leaves the plateau first);
- the attention of the training batch: the entropy of each query's weights over the keys it can
  read, divided by log(number of keys) (1 = uniform: the block is average pooling), and the std of
  the log-weights over those keys (the logits' spread; 0 = uniform);
- the gradient norms of the sequence block's Wq, Wk and Wv (mean over the steps since the last
  row): with a uniform attention Wq and Wk learn only through the logits;
- the std of each feature block the towers read ([e_u; e_m; e_x; f_m (; r_m)]): f_m is the
  sequence block's output.

    python tools/ifa_plateau.py --model TWIN --seed 1 [--steps 480] [--every 80]
                                [--attention-init unit_variance|fan_in] [--users 8000] [--length 500]

spec/ifa.md, "The plateau and the init", quotes its rows. `--users`, `--length` only shrink the
run for a smoke test.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np

from refimpl.demos.ifa import DEFAULT, _seed_data
from refimpl.metrics import auc
from refimpl.nn.top_k_attention import TopKAttentionCache
from refimpl.optim import AdamConfig, adam_init, adam_step
from refimpl.pipelines import ifa as pipeline

PROJECTIONS = ("fsm_Wq", "fsm_Wk", "fsm_Wv")


def attention_spread(cache: pipeline.RankerCache) -> tuple[float, float]:
    """(entropy / log n, std of the log-weights) of the sequence block's attention, averaged over
    the batch's valid queries and heads; (nan, nan) for AvgPooling."""
    if cache.ifa is not None:
        proj = cache.ifa.fsm.proj
        kernel = proj.phi_q @ proj.phi_k.transpose(0, 1, 3, 2)  # (B, H, M, L)
        weights = kernel / kernel.sum(axis=-1, keepdims=True)
        valid = np.broadcast_to(proj.key_mask[:, None, None, :], weights.shape)
    else:
        assert cache.sequence is not None
        attention = cache.sequence.attention
        if attention is None:
            return float("nan"), float("nan")
        if isinstance(attention, TopKAttentionCache):
            weights = attention.attention.weights[:, :, 0, :]  # (B M, H, k)
            valid = np.broadcast_to(attention.selected_mask.reshape(weights.shape[0], 1, -1), weights.shape)
        else:
            weights = attention.weights
            weights = weights[:, :, 0, :] if weights.ndim == 4 and weights.shape[2] == 1 else weights
            valid = weights > 0
    count = valid.sum(axis=-1)
    keep = count > 1
    logs = np.log(np.where(valid, np.maximum(weights, 1e-30), 1.0))
    entropy = -(np.where(valid, weights, 0) * logs).sum(axis=-1)
    mean_log = logs.sum(axis=-1) / np.maximum(count, 1)
    spread = np.sqrt((np.where(valid, logs - mean_log[..., None], 0) ** 2).sum(axis=-1) / np.maximum(count, 1))
    return float((entropy[keep] / np.log(count[keep])).mean()), float(spread[keep].mean())


def block_stds(cache: pipeline.RankerCache, width: int) -> list[float]:
    """The std of each E-wide feature block of the impression tower's input."""
    towers = cache.ifa.towers if cache.ifa is not None else cache.towers
    assert towers is not None
    features = towers[0].linear[0].x
    return [float(features[..., i * width:(i + 1) * width].std()) for i in range(features.shape[-1] // width)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tools/ifa_plateau.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(pipeline.RANKERS), default="TWIN")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=480)
    parser.add_argument("--every", type=int, default=80)
    parser.add_argument("--attention-init", choices=pipeline.ATTENTION_INITS, default="unit_variance")
    parser.add_argument("--users", type=int, default=DEFAULT.data.num_users)
    parser.add_argument("--length", type=int, default=DEFAULT.data.lifelong_length)
    args = parser.parse_args(argv)
    ranker = replace(DEFAULT.ranker, attention_init=args.attention_init)
    demo = replace(DEFAULT, ranker=ranker, data=replace(DEFAULT.data, num_users=args.users,
                                                         lifelong_length=args.length))
    data, inputs, split = _seed_data(demo, args.seed)
    spec = pipeline.RANKERS[args.model]
    train, valid = inputs.take(split.train), inputs.take(split.valid)
    rng = np.random.Generator(np.random.PCG64(args.seed))  # as train_ranker draws the init and batches
    params = pipeline.ranker_init(rng, spec, data, ranker)
    state, adam = adam_init(params), AdamConfig(lr=ranker.lr)
    shown = valid.batch.cand_mask & (valid.batch.impression == 1)
    print(f"{args.model}, seed {args.seed}, attention init {args.attention_init}: "
          "entropy / log n, log-weight std, |grad| of Wq / Wk / Wv, feature block stds "
          "[e_u, e_m, e_x, f_m(, r_m)]")
    print("| step | train | valid | click among shown AUC | entropy / log n | log-weight std | "
          "grad Wq | grad Wk | grad Wv | block stds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    losses: list[float] = []
    norms: dict[str, list[float]] = {name: [] for name in PROJECTIONS}
    start = time.process_time()
    for step in range(1, args.steps + 1):
        rows = np.sort(rng.choice(train.size, size=min(ranker.batch_size, train.size), replace=False))
        out, cache = pipeline.ranker_forward(params, train.take(rows), spec, ranker)
        grads = pipeline.ranker_backward(cache, np.ones((), dtype=out.loss.dtype))
        params, state = adam_step(params, grads, state, adam)
        losses.append(float(out.loss))
        for name in norms:
            norms[name].append(float(np.linalg.norm(grads[name])) if name in grads else float("nan"))
        if step % args.every and step != 1:
            continue
        valid_loss, _, p_clk = pipeline._predict(params, valid, spec, ranker)
        entropy, spread = attention_spread(cache)
        recent = slice(-args.every, None)
        grad_text = " | ".join(f"{np.mean(norms[name][recent]):.2g}" for name in PROJECTIONS)
        stds = ", ".join(f"{s:.2f}" for s in block_stds(cache, ranker.width))
        print(f"| {step} | {np.mean(losses[recent]):.4f} | {valid_loss:.4f} | "
              f"{100 * auc(p_clk, valid.batch.click, shown):.1f} | {entropy:.3f} | {spread:.3f} | "
              f"{grad_text} | {stds} |", flush=True)
    print(f"{time.process_time() - start:.0f} s of CPU", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
