"""UMI's learning check (spec/umi.md, "Learning check"): on profile-planted data, seeded, three seeds.

Measured (spec/umi.md): harder negatives lift MIND beyond the seed spread at both cut-offs
(HitRate@3/@10 5.69 +- 0.88 / 17.44 +- 2.62 -> 7.83 +- 0.73 / 24.72 +- 2.30). UMI's advantage over
MIND does NOT reproduce at this budget (7.22 +- 1.35 / 18.64 +- 4.71, within the spread): the check
asserts what holds, and spec/umi.md says why the other does not.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import numpy as np

from refimpl.data.interactions import Interactions
from refimpl.data.synthetic_profiles import ProfileDataConfig, generate_profile_data
from refimpl.pipelines.umi import POPULARITY, UMIPipelineConfig, evaluate, non_learned_scores, prepare, train_model
from refimpl.spread import beyond_spread

SEEDS = (0, 1, 2)
DATA = ProfileDataConfig(num_users=1_000, num_items=120, num_categories=6, num_styles=2, num_households=3,
                         distractors_per_household=2, min_interests=1, max_interests=2, distractor_rate=0.5,
                         min_length=20, max_length=40)
"""A small catalogue (10 items per category and style), so 300 steps train the item table."""
PIPELINE = UMIPipelineConfig(steps=300, eval_every=50, max_length=10, num_negatives=20, lr=0.02, batch_size=64,
                             dim=16, profile_dim=4, validation_rows=128, cutoffs=(3, 10), seen="kept")
"""Seen items kept: with 10 items a cell, a user's history holds most of its cells' items."""


@cache
def _log(seed: int) -> Interactions:
    return generate_profile_data(replace(DATA, seed=seed)).interactions


@cache
def hit_rates(name: str, num_interests: int = 3) -> dict[int, list[float]]:
    """HitRate@N per cut-off over the seeds of model `name` (or the popularity row)."""
    out: dict[int, list[float]] = {n: [] for n in PIPELINE.cutoffs}
    for seed in SEEDS:
        cfg = replace(PIPELINE, seed=seed, num_interests=num_interests)
        prepared = prepare(_log(seed), cfg)
        if name == POPULARITY:
            scores = non_learned_scores(POPULARITY, prepared, cfg)
        else:
            scores = evaluate(train_model(name, prepared, cfg, stream=None), prepared, cfg)
        for n in PIPELINE.cutoffs:
            out[n].append(scores.hit_rate[n])
    return out


def above_everywhere(upper: dict[int, list[float]], lower: dict[int, list[float]]) -> bool:
    """The demo's rule: beyond the spread (difference of means > sum of stds) at every cut-off."""
    return all(beyond_spread(upper[n], lower[n]) for n in PIPELINE.cutoffs)


def test_harder_negatives_help_mind_beyond_the_spread() -> None:
    assert above_everywhere(hit_rates("MIND+HN"), hit_rates("MIND"))


def test_negative_control_with_one_interest_harder_negatives_change_nothing() -> None:
    # K = 1: every item scores against the one interest, so the two readouts are the same loss and
    # the same model; the check must then fail (it is not satisfied by noise)
    plain, harder = hit_rates("MIND", 1), hit_rates("MIND+HN", 1)
    assert plain == harder
    assert not above_everywhere(harder, plain)


def test_mind_learns_beyond_global_popularity() -> None:
    assert above_everywhere(hit_rates("MIND+HN"), hit_rates(POPULARITY))
    # negative control: the popularity row against itself is never "above"
    assert not above_everywhere(hit_rates(POPULARITY), hit_rates(POPULARITY))


def test_the_learning_data_plants_what_it_says() -> None:
    data = generate_profile_data(DATA)
    assert abs(float(np.mean(data.distractor_event)) - DATA.distractor_rate) < 0.02
