"""Trace UMI's user-guided attention over training (spec/umi.md, "Attention collapse"): on
profile-planted data, train UMI by the pipeline's rule and, every `--every` steps, on a fixed probe
batch of validation rows, print the mean a_i (UMI eq. 2) on the user's own events and on the
co-user's, the mean capsule norm |v_j| (squash output), and the gradient the gate receives: the mean
d loss / d a_i on own and co-user events, and d loss / d b2 (UGANet's output bias).

    PYTHONPATH=. OPENBLAS_NUM_THREADS=1 python tools/umi_attention_trace.py [--users U] [--seed S]
        [--steps N] [--every K] [--bias B] [--hold H] [--hidden W] [--lr LR] [--shared-count]

The training is the pipeline's (same init, batches and Adam, the held gate's own Adam state from its
release), at a constant learning rate without the stopping rule; about 25 s of CPU at 700 steps.
"""

from __future__ import annotations

import argparse
import resource
from dataclasses import replace

import numpy as np

from refimpl.data.synthetic_profiles import generate_profile_data
from refimpl.demos.umi import DEFAULT
from refimpl.models import umi as umi_model
from refimpl.nn.capsule_routing import capsule_routing_backward
from refimpl.nn.interest_refinement import InterestRefinementCache, interest_refinement_backward
from refimpl.nn.multi_interest_readout import ReadoutConfig
from refimpl.optim import AdamConfig, adam_init, adam_step
from refimpl.pipelines.umi import _umi_config as umi_config
from refimpl.pipelines.umi import _user_batch as user_batch
from refimpl.pipelines.umi import prepare


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=DEFAULT.data.num_users)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=DEFAULT.pipeline.steps)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--bias", type=float, default=DEFAULT.pipeline.attention_bias)
    parser.add_argument("--lr", type=float, default=DEFAULT.pipeline.lr)
    parser.add_argument("--hidden", type=int, default=None, help="UGANet's hidden width (the model's default: 16)")
    parser.add_argument("--hold", type=int, default=DEFAULT.pipeline.attention_hold,
                        help="steps the gate's params are held at their init")
    parser.add_argument("--shared-count", action="store_true",
                        help="the old hold: zeroed gradients under one Adam step count (no fresh state at release)")
    args = parser.parse_args()
    data = generate_profile_data(replace(DEFAULT.data, num_users=args.users, seed=args.seed))
    cfg = replace(DEFAULT.pipeline, seed=args.seed, attention_bias=args.bias, lr=args.lr)
    prepared = prepare(data.interactions, cfg)
    log = prepared.interactions
    model_cfg = umi_config("UMI", prepared, cfg)
    if args.hidden is not None:
        model_cfg = replace(model_cfg, attention_hidden=args.hidden)
    readout = ReadoutConfig(mode="harder_negatives")
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    params = umi_model.umi_init(rng, model_cfg)
    state = adam_init(params)
    groups = [[n for n in params if not n.startswith("uga_")], [n for n in params if n.startswith("uga_")]]
    states = [adam_init({n: params[n] for n in names}) for names in groups]
    adam = AdamConfig(lr=cfg.lr)
    owner = log.event_users()
    probe_rng = np.random.Generator(np.random.PCG64(7))
    rows = slice(0, cfg.batch_size)
    probe = user_batch(prepared, prepared.valid_users[rows], prepared.valid_starts[rows], prepared.valid_ends[rows],
                       cfg, probe_rng)
    probe_pos = log.items[prepared.valid_ends[rows]]
    probe_neg = probe_rng.choice(log.num_items, size=cfg.num_negatives, replace=False).astype(np.int64)
    first = np.maximum(prepared.valid_starts[rows], prepared.valid_ends[rows] - cfg.max_length)
    events = first[:, None] + np.arange(cfg.max_length)[None, :]
    co_user = probe.mask & data.distractor_event[np.where(probe.mask, events, 0)]
    own = probe.mask & ~co_user
    audience = log.profile["audience"][prepared.valid_users[rows]][:, None]
    print(f"{'step':>5} {'loss':>7} {'a own':>7} {'a co':>7} {'|v|':>6} {'dL/da own':>10} {'dL/da co':>10} "
          f"{'dL/db2':>9} {'a co | audience 0, 1':>21}")
    for step in range(args.steps + 1):
        if step % args.every == 0:
            interests, cache = umi_model.umi_forward(params, probe, model_cfg)
            loss_cache = umi_model.readout_loss_forward(interests, params["item_table"], probe_pos, probe_neg,
                                                        readout)
            d_interests, _ = umi_model.readout_loss_backward(loss_cache[1], np.ones(()))
            assert isinstance(cache.refinement, InterestRefinementCache)
            d_caps = interest_refinement_backward(cache.refinement, d_interests).interests
            d_a = capsule_routing_backward(cache.routing, d_caps).item_weights
            grads = umi_model.umi_backward(cache, d_interests)
            a = cache.routing.item_weights
            norm = float(np.linalg.norm(cache.routing.interests[-1], axis=-1).mean())
            print(f"{step:>5} {float(loss_cache[0]):>7.3f} {a[own].mean():>7.3f} {a[co_user].mean():>7.3f} "
                  f"{norm:>6.3f} {d_a[own].mean():>10.2e} {d_a[co_user].mean():>10.2e} "
                  f"{float(grads['uga_b2'][0]):>9.2e} {a[co_user & (audience == 0)].mean():>10.3f} "
                  f"{a[co_user & (audience == 1)].mean():>10.3f}", flush=True)
        if step == args.steps:
            break
        picked = rng.choice(prepared.train_ends.shape[0], size=cfg.batch_size, replace=False)
        ends = prepared.train_ends[picked]
        users = owner[ends]
        batch = user_batch(prepared, users, log.user_offsets[users], ends, cfg, rng)
        negatives = rng.choice(log.num_items, size=cfg.num_negatives, replace=False).astype(np.int64)
        _, grads = umi_model.umi_loss(params, batch, log.items[ends], negatives, model_cfg, readout)
        if args.shared_count:
            # the hold as a zeroed gradient under one Adam step count (before the fresh state at release)
            if step < args.hold:
                grads = {name: np.zeros_like(g) if name.startswith("uga_") else g for name, g in grads.items()}
            params, state = adam_step(params, grads, state, adam)
            continue
        # as refimpl.train.fit: the held gate gets an Adam state of its own at the release
        for index, names in enumerate(groups):
            if index == 1 and step < args.hold:
                continue
            part, states[index] = adam_step({n: params[n] for n in names}, {n: grads[n] for n in names},
                                            states[index], adam)
            params = {**params, **part}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"CPU {usage.ru_utime + usage.ru_stime:.0f} s")


if __name__ == "__main__":
    main()
