"""Where UMI's behaviour muting shows (spec/umi.md, "Muting diagnostic"): on profile-planted data,
train MIND, UMI and UMI w/o DAR, then on the test users measure

- the history's composition: the share of the co-user's (distractor) events in the served window;
- UMI's user-guided attention a_i (UMI eq. 2) on the user's own events and on the co-user's, with
  the true profiles and with the profile rows permuted across users;
- capsule pollution: the share of each interest's routed mass sum_i a_i c_ij that is the co-user's;
- HitRate@N as served, with the profile rows permuted, and with the co-user's events removed from the
  history by an oracle (the most muting could buy).

    PYTHONPATH=. OPENBLAS_NUM_THREADS=1 python tools/umi_muting.py [--seed S] [--steps N] [--models ...]

Prints a table; costs about a minute of CPU per seed at the demo's sizes.
"""

from __future__ import annotations

import argparse
import resource
from dataclasses import replace

import numpy as np

from refimpl.data.synthetic_profiles import generate_profile_data
from refimpl.demos.umi import DEFAULT
from refimpl.models import umi as umi_model
from refimpl.models.umi import UserBatch, draw_initial_logits
from refimpl.nn.max_interest_score import max_interest_score_forward
from refimpl.pipelines.umi import Prepared, Trained, UMIPipelineConfig, prepare, train_model
from refimpl.pipelines.umi import _metrics as metrics
from refimpl.pipelines.umi import _umi_config as umi_config


def windows(prepared: Prepared, cfg: UMIPipelineConfig, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The test rows' last T kept events before the cut-off: items, mask and event index (R, T)."""
    test = prepared.split.test
    log = prepared.interactions
    rows = test.num_rows
    items = np.zeros((rows, cfg.max_length), dtype=np.int64)
    events = np.zeros((rows, cfg.max_length), dtype=np.int64)
    mask = np.zeros((rows, cfg.max_length), dtype=bool)
    for r in range(rows):
        idx = np.arange(test.history_start[r], test.history_end[r])
        idx = idx[keep[idx]][-cfg.max_length:]
        items[r, : idx.shape[0]] = log.items[idx]
        events[r, : idx.shape[0]] = idx
        mask[r, : idx.shape[0]] = True
    return items, mask, events


def serve(model: Trained, prepared: Prepared, cfg: UMIPipelineConfig, keep: np.ndarray,
          profile_ids: np.ndarray) -> tuple[np.ndarray, UserBatch]:
    test = prepared.split.test
    items, mask, _ = windows(prepared, cfg, keep)
    rng = np.random.Generator(np.random.PCG64(0))
    batch = UserBatch(items, mask, profile_ids[test.users],
                      draw_initial_logits(rng, test.num_rows, cfg.max_length, cfg.num_interests))
    scores = max_interest_score_forward(model.interests(model.params, batch), model.items(model.params))[0]
    return scores, batch


def umi_internals(model: Trained, prepared: Prepared, cfg: UMIPipelineConfig, batch: UserBatch,
                  distractor: np.ndarray) -> dict[str, float]:
    _, cache = umi_model.umi_forward(model.params, batch, umi_config(model.name, prepared, cfg))
    weights = cache.routing.item_weights  # (R, T)
    coef = cache.routing.coefficients[-1]  # (R, T, K)
    mass = weights[:, :, None] * coef * batch.mask[:, :, None]
    polluted = (mass * distractor[:, :, None]).sum(axis=1) / np.maximum(mass.sum(axis=1), 1e-12)  # (R, K)
    valid = batch.mask
    return {
        "a_own": float(weights[valid & ~distractor].mean()),
        "a_distractor": float(weights[valid & distractor].mean()) if (valid & distractor).any() else float("nan"),
        "capsule_pollution": float(polluted.mean()),
        "distractor_capsules": float((polluted > 0.8).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=DEFAULT.pipeline.steps)
    parser.add_argument("--models", default="MIND,UMI,UMI w/o DAR")
    parser.add_argument("--users", type=int, default=DEFAULT.data.num_users)
    parser.add_argument("--rho", type=float, default=DEFAULT.data.distractor_rate, help="the co-user's share")
    args = parser.parse_args()
    data = generate_profile_data(replace(DEFAULT.data, seed=args.seed, num_users=args.users,
                                         distractor_rate=args.rho))
    cfg = replace(DEFAULT.pipeline, seed=args.seed, steps=args.steps)
    prepared = prepare(data.interactions, cfg)
    distractor_event = data.distractor_event
    every = np.ones(distractor_event.shape[0], dtype=bool)
    _, mask, events = windows(prepared, cfg, every)
    print(f"test rows {prepared.split.test.num_rows}; co-user share of the served window "
          f"{distractor_event[events][mask].mean():.3f}; co-user events per window "
          f"{(distractor_event[events] & mask).sum(axis=1).mean():.1f} of {mask.sum(axis=1).mean():.1f}")
    order = np.random.Generator(np.random.PCG64(100 + args.seed)).permutation(prepared.interactions.num_users)
    permuted = prepared.profile_ids[order]
    header = f"{'model':<14}{'profile':<10}{'history':<10}" + "".join(f"{'HR@' + str(n):>8}" for n in cfg.cutoffs)
    print(header + f"{'a own':>8}{'a dist':>8}{'pollute':>9}{'d-caps':>8}")
    for name in args.models.split(","):
        model = train_model(name, prepared, cfg, stream=None)
        for profile_name, profile in (("true", prepared.profile_ids), ("permuted", permuted)):
            for history, keep in (("all", every), ("own only", ~distractor_event)):
                scores, batch = serve(model, prepared, cfg, keep, profile)
                hr = metrics(prepared, scores, cfg).hit_rate
                line = f"{name:<14}{profile_name:<10}{history:<10}" + "".join(f"{hr[n]:>8.2f}" for n in cfg.cutoffs)
                if name.startswith("UMI") and history == "all":
                    _, _, ev = windows(prepared, cfg, keep)
                    inside = umi_internals(model, prepared, cfg, batch, distractor_event[ev] & batch.mask)
                    line += "".join(f"{inside[k]:>8.3f}" for k in ("a_own", "a_distractor", "capsule_pollution",
                                                                   "distractor_capsules"))
                print(line, flush=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"CPU {usage.ru_utime + usage.ru_stime:.0f} s")


if __name__ == "__main__":
    main()
