"""The pipelines on the data model (refimpl.pipelines): seen-item exclusion in evaluation, user
profiles reaching MIND and PGIN, and every random draw of a trainer coming from the Generator
`fit` hands its step (issue 14 item 11)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

import refimpl.pipelines.ulim as ulim_pipeline
from refimpl import baselines
from refimpl.data.interactions import Interactions, build_interactions
from refimpl.data.protocols import leave_last_out
from refimpl.models import mind as mind_model
from refimpl.models.umi import UserBatch, draw_initial_logits
from refimpl.nn.multi_interest_readout import ReadoutConfig
from refimpl.pipelines.evaluation import EvalConfig, Routes
from refimpl.pipelines.inputs import (
    profile_features,
    profile_ids,
    profile_sizes,
    request_samples,
    samples_seen,
)
from refimpl.pipelines.pgin import PGINTrainConfig, pgin_inputs, train_pgin
from refimpl.pipelines.ulim import SequenceConfig, Trained, train_mind, train_youtube_dnn
from refimpl.train import TrainConfig, fit, seeded_rng

# 4 users, items 0-5 in categories [0, 0, 0, 1, 1, 1]; item 0 is the most popular. Every user
# has seen item 0 before its test target, which is never item 0.
EVENTS = {
    1: [0, 3, 0, 1, 4, 2],
    2: [0, 1, 0, 4, 5, 1],
    3: [0, 4, 0, 2, 3, 2],
    4: [0, 0, 5, 3, 1, 4],
}


def tiny_log(with_profile: bool = True) -> Interactions:
    users = np.repeat(np.array(list(EVENTS)), 6)
    items = np.concatenate([np.array(v) for v in EVENTS.values()])
    profile: dict[str, Any] = {}
    if with_profile:
        profile = dict(profile_users=np.array([1, 2, 3, 4]), profile_fields={
            "gender": np.array(["F", "M", "F", "M"]), "age": np.array([18, 25, 35, 18]),
            "occupation": np.array([1, 2, 3, 4])})
    return build_interactions(users, items, np.tile(np.arange(6), 4), catalogue_items=np.arange(6),
                              catalogue_categories=np.array([0, 0, 0, 1, 1, 1]), **profile)


def test_excluding_seen_items_turns_a_seen_top_item_into_the_next_one() -> None:
    """Global popularity at N = 1 ranks item 0 first; every user has seen it. Kept (the default),
    it takes the only slot; excluded, the next item takes it."""
    log = tiny_log()
    split = leave_last_out(log)
    held = request_samples(log, split.test)
    seen = samples_seen(log, held)
    kept = baselines.popularity_hit_rates(log, split, held, EvalConfig(cutoffs=(1, 2)))
    excluded = baselines.popularity_hit_rates(log, split, held, EvalConfig(cutoffs=(1, 2), seen="excluded"),
                                              seen=seen)
    assert EvalConfig().seen == "kept"
    assert kept[1] == 0.0  # item 0 is never a target
    # after item 0, the most popular items are 1 and 4 (4 each): the targets 2, 1, 2, 4 hit twice at N = 2
    assert excluded[2] > kept[2]
    routes = baselines.frequency_routes(log, held, 1)
    cascade_kept = baselines.frequency_serving(log, split, routes).hit_rates(held.targets, EvalConfig(cutoffs=(1,)))
    cascade_excluded = baselines.frequency_serving(log, split, routes).hit_rates(
        held.targets, EvalConfig(cutoffs=(1,), seen="excluded"), seen=seen)
    assert cascade_kept[1] <= cascade_excluded[1]
    with pytest.raises(ValueError, match="seen: required"):
        baselines.popularity_hit_rates(log, split, held, EvalConfig(cutoffs=(1,), seen="excluded"))


def test_seen_items_are_each_samples_history_before_its_cut_off() -> None:
    log = tiny_log()
    held = request_samples(log, leave_last_out(log).test)
    seen = samples_seen(log, held)
    for row, user in enumerate(held.users):
        history = log.sequence(int(user))[: held.positions[row]]
        assert seen.items[seen.offsets[row]:seen.offsets[row + 1]].tolist() == sorted(set(history.tolist()))


def test_profile_fields_share_one_table_and_reach_pgin_as_one_hot() -> None:
    log = tiny_log()
    assert profile_sizes(log) == (2, 3, 4)  # gender, age, occupation: the log's field order
    ids = profile_ids(log, np.array([0, 3]))
    assert ids.shape == (2, 3) and ids.max() < sum(profile_sizes(log))
    assert np.all(ids[:, 0] < 2) and np.all((ids[:, 1] >= 2) & (ids[:, 1] < 5)) and np.all(ids[:, 2] >= 5)
    features = profile_features(log, np.arange(4))
    assert features.shape == (4, 9) and np.all(features.sum(axis=1) == 3)
    assert profile_sizes(tiny_log(with_profile=False)) == (1,)
    np.testing.assert_array_equal(profile_features(tiny_log(with_profile=False), np.arange(2)), np.ones((2, 1)))
    seq = SequenceConfig(long_length=10, pgin_long_length=4, pgin_short_length=2, pgin_history=3, min_position=1)
    held = request_samples(log, leave_last_out(log).test)
    np.testing.assert_array_equal(pgin_inputs(log, held, seq).user_features, profile_features(log, held.users))


SEQ = SequenceConfig(short_length=3, long_length=5, max_subsequence=4, mind_length=4, pgin_long_length=3,
                     pgin_short_length=2, pgin_history=2, min_position=1, targets="all_events")
CFG = TrainConfig(steps=2, eval_every=1, validation_rows=4, batch_size=4, num_negatives=3, dim=4,
                  num_heads=2, num_interests=2)


def test_mind_and_pgin_train_with_the_profile_and_a_wrong_width_is_refused_by_name() -> None:
    log = tiny_log()
    split = leave_last_out(log)
    mind = train_mind(log, split, SEQ, CFG, stream=None)
    assert (mind.config.num_fields, mind.config.num_profile_values) == (3, 9)
    harder = train_mind(log, split, SEQ, CFG, stream=None, readout=ReadoutConfig(mode="harder_negatives"))
    assert harder.curve.train != mind.curve.train  # MIND+HN: the same trainer, UMI's readout (eq. 12-13)
    pgin = train_pgin(log, split, SEQ, PGINTrainConfig(dim=4, max_steps=2, eval_every=1, batch_size=4,
                                                       validation_rows=2), stream=None)
    assert pgin.config.user_feature_dim == 9
    rng = np.random.default_rng(0)
    two_fields = UserBatch(np.zeros((2, 4), dtype=np.int64), np.ones((2, 4), dtype=bool),
                           np.zeros((2, 2), dtype=np.int64), draw_initial_logits(rng, 2, 4, 2))
    with pytest.raises(ValueError, match=r"profile_ids.*num_fields"):
        mind_model.mind_forward(mind.params, two_fields, mind.config)


Trainer = Callable[..., Trained]


def draws_from_fits_rng(trainer: Trainer, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether the trainer's steps draw from the Generator fit hands them: the training losses
    change when fit is handed another Generator (the init and validation unchanged)."""
    log = tiny_log()
    split = leave_last_out(log)
    plain = trainer(log, split, SEQ, CFG, stream=None)

    def other_rng(*args: Any, **kwargs: Any) -> Any:
        return fit(*args[:7], seeded_rng(99), *args[8:], **kwargs)

    monkeypatch.setattr(ulim_pipeline, "fit", other_rng)
    swapped = trainer(log, split, SEQ, CFG, stream=None)
    monkeypatch.undo()
    return bool(plain.curve.train != swapped.curve.train)


@pytest.mark.parametrize("trainer", [train_youtube_dnn, train_mind, ulim_pipeline.train_ulim],
                         ids=["youtube_dnn", "mind", "ulim"])
def test_every_trainer_draws_its_batches_from_fits_rng(trainer: Trainer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert draws_from_fits_rng(trainer, monkeypatch)


def own_generator_youtube_dnn(*args: Any, **kwargs: Any) -> Trained:
    """Broken: a trainer whose steps draw from a generator of their own, ignoring fit's."""
    own = seeded_rng(5)
    real_fit = ulim_pipeline.fit

    def ignoring(name: str, params: Any, step_fn: Any, *rest: Any, **kw: Any) -> Any:
        return real_fit(name, params, lambda p, _rng: step_fn(p, own), *rest, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ulim_pipeline, "fit", ignoring)
        return train_youtube_dnn(*args, **kwargs)


def test_negative_control_a_trainer_with_its_own_generator_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not draws_from_fits_rng(own_generator_youtube_dnn, monkeypatch)


def test_routes_and_configs_refuse_bad_values_by_name() -> None:
    with pytest.raises(ValueError, match="cfg.steps"):
        replace(CFG, steps=0)
    with pytest.raises(ValueError, match="seq.targets"):
        replace(SEQ, targets="visit_starts")
    with pytest.raises(ValueError, match="cfg.seen"):
        EvalConfig(seen="dropped")
    with pytest.raises(ValueError, match="weights"):
        Routes(np.zeros((1, 2), dtype=np.int64), np.array([[1.0, -1.0]]), np.ones((1, 2), dtype=bool))


def test_pgin_trains_in_float32_and_is_served_in_float64() -> None:
    """PGINTrainConfig.dtype: the same training in float32 (its losses equal float64's to float32
    precision) and the params handed back in float64, so serving reads float64 profile features."""
    log = tiny_log()
    split = leave_last_out(log)
    base = PGINTrainConfig(dim=4, max_steps=3, eval_every=1, batch_size=4, validation_rows=2)
    wide = train_pgin(log, split, SEQ, base, stream=None)
    narrow = train_pgin(log, split, SEQ, replace(base, dtype="float32"), stream=None)
    assert {v.dtype for v in narrow.params.values()} == {np.dtype(np.float64)}
    np.testing.assert_allclose(narrow.curve.valid, wide.curve.valid, rtol=1e-4)
    assert narrow.curve.train != wide.curve.train  # it did run in float32
    with pytest.raises(ValueError, match="cfg.dtype"):
        PGINTrainConfig(dtype="float16")
