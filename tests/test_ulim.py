"""ULIM and the YouTube DNN baseline: gradients, no category leakage, serving, reproducibility,
and the learning check (spec/ulim.md)."""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

import refimpl.models.item_tower as item_tower
import refimpl.models.ulim as ulim
from refimpl.data.interactions import Interactions, build_interactions, from_synthetic
from refimpl.data.protocols import leave_last_out
from refimpl.data.synthetic import QUICK_CONFIG, SyntheticConfig, generate
from refimpl.demos.ulim import QUICK
from refimpl.gradcheck import assert_gradients_match, check_gradients
from refimpl.models import youtube_dnn as ytdnn
from refimpl.nn.embedding import embedding_forward
from refimpl.nn.pooling import masked_mean_pool_forward
from refimpl.pipelines.inputs import (
    Samples,
    category_subsequences,
    recent_window,
    request_samples,
    training_samples,
)
from refimpl.pipelines.ulim import train_ulim
from refimpl.train import TrainConfig, fit, validation_subset

NUM_ITEMS, NUM_CATEGORIES, DIM = 12, 3, 4
ITEM_CATEGORY = (np.arange(NUM_ITEMS) % NUM_CATEGORIES).astype(np.int64)
IN_CATEGORY_1 = np.flatnonzero(ITEM_CATEGORY == 1)


def tiny_instance(
    long_encoder: str, seed: int = 0
) -> tuple[ulim.ULIMConfig, dict[str, np.ndarray], ulim.ULIMBatch, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cfg = ulim.ULIMConfig(num_items=NUM_ITEMS, num_categories=NUM_CATEGORIES, dim=DIM, num_heads=2,
                          long_encoder=long_encoder)
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in ulim.ulim_init(rng, cfg).items()}
    b, s, length = 3, 4, 5
    short_mask = rng.random((b, s)) < 0.8
    long_mask = rng.random((b, length)) < 0.7
    long_mask[2] = False  # an empty category subsequence
    batch = ulim.ULIMBatch(
        rng.integers(0, NUM_ITEMS, (b, s)), short_mask, rng.choice(IN_CATEGORY_1, (b, length)), long_mask
    )
    positives = rng.choice(IN_CATEGORY_1, b)
    negatives = IN_CATEGORY_1[:3]
    return cfg, params, batch, positives, negatives


def ulim_problems(long_encoder: str, short_negatives: np.ndarray | None = None) -> list[str]:
    cfg, params, batch, positives, negatives = tiny_instance(long_encoder)
    cfg = replace(cfg, loss=replace(cfg.loss, alpha=0.7, beta=1.3))

    def loss(p: dict[str, np.ndarray]) -> float:
        return ulim.ulim_loss_and_grads(p, batch, positives, negatives, 1, ITEM_CATEGORY, cfg,
                                        short_negative_ids=short_negatives).loss

    out = ulim.ulim_loss_and_grads(params, batch, positives, negatives, 1, ITEM_CATEGORY, cfg,
                                   short_negative_ids=short_negatives)
    return check_gradients(loss, params, out.grads)


@pytest.mark.parametrize("long_encoder", ["target", "self"])
def test_whole_model_gradients_equal_finite_differences(long_encoder: str) -> None:
    assert_gradients_match(ulim_problems(long_encoder))


CATALOGUE_NEGATIVES = np.array([0, 2, 5, 7, 11])  # of every category, for L_short only


def test_gradients_with_catalogue_wide_short_term_negatives_equal_finite_differences() -> None:
    assert_gradients_match(ulim_problems("target", CATALOGUE_NEGATIVES))


def test_catalogue_wide_short_term_negatives_change_only_the_short_term_loss() -> None:
    """L_long is the same with either set of short-term negatives; L_short is the sampled softmax
    of v_s against the given ones; and a check that forgets their gradient is caught."""
    cfg, params, batch, positives, negatives = tiny_instance("target")
    same = ulim.ulim_loss_and_grads(params, batch, positives, negatives, 1, ITEM_CATEGORY, cfg)
    wide = ulim.ulim_loss_and_grads(params, batch, positives, negatives, 1, ITEM_CATEGORY, cfg,
                                    short_negative_ids=CATALOGUE_NEGATIVES)
    assert wide.long_loss == pytest.approx(same.long_loss, abs=1e-12)
    assert wide.short_loss != pytest.approx(same.short_loss)
    assert wide.loss == pytest.approx(wide.long_loss + wide.short_loss, abs=1e-12)


def test_gradient_check_catches_a_backward_that_drops_the_query_gradient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Negative control: v_s steers the long-term attention; a backward that forgets d_query
    leaves the short-term encoder's gradient short, and the check names its params."""
    real = ulim.target_attention_backward

    def forgetful(cache: Any, d_out: np.ndarray) -> Any:
        grads, d_query, d_seq = real(cache, d_out)
        return grads, np.zeros_like(d_query), d_seq

    monkeypatch.setattr(ulim, "target_attention_backward", forgetful)
    problems = ulim_problems("target")
    assert any(p.startswith("short_W") for p in problems)


def test_youtube_dnn_gradients_equal_finite_differences() -> None:
    rng = np.random.default_rng(1)
    cfg = ytdnn.YouTubeDNNConfig(num_items=NUM_ITEMS, num_categories=NUM_CATEGORIES, dim=DIM, hidden=5)
    params = {k: v + 0.1 * rng.standard_normal(v.shape)
              for k, v in ytdnn.youtube_dnn_init(rng, cfg).items()}
    items = rng.integers(0, NUM_ITEMS, (3, 6))
    mask = rng.random((3, 6)) < 0.7
    mask[1] = False  # an empty history
    positives, negatives = rng.integers(0, NUM_ITEMS, 3), np.array([0, 4, 7])

    def loss(p: dict[str, np.ndarray]) -> float:
        return ytdnn.youtube_dnn_loss_and_grads(
            p, items, mask, positives, negatives, ITEM_CATEGORY, cfg)[0]

    _, grads = ytdnn.youtube_dnn_loss_and_grads(
        params, items, mask, positives, negatives, ITEM_CATEGORY, cfg)
    assert_gradients_match(check_gradients(loss, params, grads))


def component_mean_pool(table: np.ndarray, items: np.ndarray, mask: np.ndarray) -> np.ndarray:
    gathered, _ = embedding_forward(table, np.where(mask, items, 0))
    pooled, _ = masked_mean_pool_forward(gathered, mask)
    return pooled


def test_sparse_bag_pooling_equals_the_components_and_a_sum_is_caught() -> None:
    rng = np.random.default_rng(2)
    table = rng.standard_normal((NUM_ITEMS, 3))
    items = rng.integers(0, NUM_ITEMS, (4, 7))
    items[0, :3] = 5  # repeats count once per occurrence
    mask = rng.random((4, 7)) < 0.6
    mask[0, :3] = True
    mask[3] = False
    expected = component_mean_pool(table, items, mask)
    np.testing.assert_allclose(ytdnn.bag_matrix(items, mask, NUM_ITEMS) @ table, expected, atol=1e-12)
    summed = (ytdnn.bag_matrix(items, mask, NUM_ITEMS) @ table) * mask.sum(axis=1, keepdims=True)
    assert not np.allclose(summed, expected)


def test_catalogue_tower_equals_the_tower_applied_item_by_item() -> None:
    cfg, params, *_ = tiny_instance("target")
    ids = np.arange(NUM_ITEMS)
    one_by_one, _ = item_tower.item_tower_forward(params, ids, ITEM_CATEGORY)
    np.testing.assert_allclose(item_tower.catalogue_vectors(params, ITEM_CATEGORY), one_by_one, atol=1e-12)


def test_a_batch_with_a_foreign_item_is_refused() -> None:
    cfg, params, batch, positives, negatives = tiny_instance("target")
    foreign = negatives.copy()
    foreign[0] = 0  # category 0
    with pytest.raises(ValueError, match="not category-pure"):
        ulim.ulim_loss_and_grads(params, batch, positives, foreign, 1, ITEM_CATEGORY, cfg)


def test_missing_extra_and_mixed_dtype_params_are_refused_by_name() -> None:
    cfg, params, batch, positives, negatives = tiny_instance("target")

    def run(p: dict[str, np.ndarray]) -> None:
        ulim.ulim_loss_and_grads(p, batch, positives, negatives, 1, ITEM_CATEGORY, cfg)

    run(params)
    without = {k: v for k, v in params.items() if k != "long_Wq"}
    with pytest.raises(ValueError, match=r"missing \['long_Wq'\]"):
        run(without)
    with pytest.raises(ValueError, match=r"unexpected \['tower_W2'\]"):
        run({**params, "tower_W2": params["tower_W"]})
    with pytest.raises(TypeError, match="tower_b"):
        run({**params, "tower_b": params["tower_b"].astype(np.float32)})
    yt_cfg = ytdnn.YouTubeDNNConfig(num_items=NUM_ITEMS, num_categories=NUM_CATEGORIES, dim=DIM, hidden=5)
    yt_params = ytdnn.youtube_dnn_init(np.random.default_rng(0), yt_cfg)
    del yt_params["mlp_b1"]
    with pytest.raises(ValueError, match=r"missing \['mlp_b1'\]"):
        ytdnn.youtube_dnn_loss_and_grads(
            yt_params, batch.short_items, batch.short_mask, positives, negatives, ITEM_CATEGORY, yt_cfg
        )


SMALL = replace(QUICK_CONFIG, num_users=20, num_items=200, num_categories=8,
                min_length=80, max_length=120, mean_visit_length=8.0)


def synthetic_log(cfg: SyntheticConfig) -> tuple[Interactions, Samples]:
    """The synthetic data in the data model and its test targets under leave-last-out (each user's
    held-out event, the whole sequence as history)."""
    log = from_synthetic(generate(cfg)).interactions
    return log, request_samples(log, leave_last_out(log).test)


def subsequences(log: Interactions, held: Samples, routes: np.ndarray, max_subsequence: int | None = None,
                 long_input: str = "whole") -> tuple[np.ndarray, np.ndarray]:
    seq = QUICK.seq
    return category_subsequences(log, held, routes, seq.long_length, max_subsequence or seq.max_subsequence,
                                 long_input)


def test_subsequences_hold_only_their_category_and_ignore_other_categories() -> None:
    """No category leakage: S_c holds only category c, and v_l(c) does not change when every
    behaviour of another category is replaced."""
    data, held = synthetic_log(SMALL)
    routes = np.stack([held.categories, (held.categories + 1) % SMALL.num_categories], axis=1)
    items, mask = subsequences(data, held, routes)
    assert np.all(data.item_category[items][mask] == np.repeat(routes[:, :, None], items.shape[2], 2)[mask])

    cfg = ulim.ULIMConfig(num_items=SMALL.num_items, num_categories=SMALL.num_categories, dim=8)
    params = ulim.ulim_init(np.random.default_rng(0), cfg)
    short, short_mask = recent_window(data, held, QUICK.seq.short_length)
    _, v_l = ulim.encode_for_serving(params, short, short_mask, items, mask, data.item_category, cfg)
    # Replace every event outside the first route's category by another item of its category.
    events = data.items.copy()
    for u in range(data.num_users):
        span = slice(data.user_offsets[u], data.user_offsets[u + 1])
        seq = events[span]
        other = data.item_category[seq] != routes[u, 0]
        seq[other] = np.array([np.flatnonzero(data.item_category == data.item_category[e])[0]
                               for e in seq[other]])
        events[span] = seq
    changed = replace(data, items=events)
    items2, mask2 = subsequences(changed, held, routes[:, :1])
    _, v_l2 = ulim.encode_for_serving(params, short, short_mask, items2, mask2,
                                      data.item_category, cfg)
    np.testing.assert_allclose(v_l2[:, 0], v_l[:, 0], atol=1e-12)
    # Negative control: the unfiltered long window (no clustering) does change.
    window, window_mask = recent_window(changed, held, QUICK.seq.long_length)
    original, original_mask = recent_window(data, held, QUICK.seq.long_length)
    _, leaky = ulim.encode_for_serving(params, short, short_mask, window[:, None],
                                       window_mask[:, None], data.item_category, cfg)
    _, leaky_before = ulim.encode_for_serving(params, short, short_mask, original[:, None],
                                              original_mask[:, None], data.item_category, cfg)
    assert not np.allclose(leaky, leaky_before)


def test_category_subsequence_keeps_the_most_recent_behaviours_of_its_category() -> None:
    """spec/ulim.md's worked example: [a1, b1, a2, c1, a3], cap 2 -> S_a = [a2, a3], S_d = []."""
    log = build_interactions(  # items a1 b1 a2 c1 a3, then the test target d1
        np.zeros(6, dtype=np.int64), np.arange(6), np.arange(6),
        catalogue_items=np.arange(6), catalogue_categories=np.array([0, 1, 0, 2, 0, 3]),
    )
    held = request_samples(log, leave_last_out(log).test)
    items, mask = subsequences(log, held, np.array([[0, 3]]), max_subsequence=2)
    assert items[0, 0][mask[0, 0]].tolist() == [2, 4]
    assert not mask[0, 1].any()


def changed_rows(log: Interactions, held: Samples, routes: np.ndarray,
                 half: Any) -> tuple[np.ndarray, np.ndarray]:
    """(rows whose long-term input S_c half(...) changes, rows with at least 2 events in S_c)."""
    whole, whole_mask = subsequences(log, held, routes)
    halved, halved_mask = half(log, held, routes)
    width = max(whole.shape[2], halved.shape[2])

    def padded(a: np.ndarray) -> np.ndarray:
        return np.pad(a, ((0, 0), (0, 0), (0, width - a.shape[2])), constant_values=-1)

    differs = np.any(padded(np.where(whole_mask, whole, -1)) != padded(np.where(halved_mask, halved, -1)), axis=2)
    return differs[:, 0], whole_mask.sum(axis=2)[:, 0] >= 2


def test_ulim_half_sequence_changes_the_input_of_every_user_with_two_long_term_events() -> None:
    """spec/ulim.md#ulim-half-sequence: the most recent ceil(n / 2) of the n behaviours of S_c.
    Every user whose S_c holds 2 or more behaviours reads a shorter one, the others the same."""
    log, held = synthetic_log(replace(SMALL, min_length=10, max_length=120))
    routes = held.categories[:, None]
    changed, long_enough = changed_rows(
        log, held, routes, lambda *a: subsequences(*a, long_input="recent_half"))
    assert long_enough.any() and (~long_enough).any()  # both kinds of user are there
    np.testing.assert_array_equal(changed, long_enough)
    halved, halved_mask = subsequences(log, held, routes, long_input="recent_half")
    whole, whole_mask = subsequences(log, held, routes)
    count = whole_mask.sum(axis=2)[:, 0]
    np.testing.assert_array_equal(halved_mask.sum(axis=2)[:, 0], count - count // 2)
    for row in range(held.size):  # the kept ones are the most recent
        kept = halved[row, 0][halved_mask[row, 0]]
        np.testing.assert_array_equal(kept, whole[row, 0][whole_mask[row, 0]][count[row] // 2:])


def test_negative_control_a_fixed_half_window_leaves_users_with_long_term_events_unchanged() -> None:
    """The old definition (a window of long_length // 2 behaviours) leaves every user with a history
    shorter than it unchanged: the check above fails for it."""
    log, held = synthetic_log(SMALL)
    seq = QUICK.seq

    def fixed_window(log: Interactions, held: Samples, routes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return category_subsequences(log, held, routes, seq.long_length // 2, seq.max_subsequence)

    changed, long_enough = changed_rows(log, held, held.categories[:, None], fixed_window)
    assert np.any(long_enough & ~changed)


def test_serving_vectors_equal_the_training_forward() -> None:
    cfg, params, batch, positives, negatives = tiny_instance("target")
    out = ulim.ulim_loss_and_grads(params, batch, positives, negatives, 1, ITEM_CATEGORY, cfg)
    v_s, v_l = ulim.encode_for_serving(
        params, batch.short_items, batch.short_mask, batch.long_items[:, None],
        batch.long_mask[:, None], ITEM_CATEGORY, cfg,
    )
    np.testing.assert_allclose(v_s, out.short_user, atol=1e-12)
    np.testing.assert_allclose(v_l[:, 0], out.long_user, atol=1e-12)
    assert np.all(v_l[2] == 0)  # the empty subsequence


def test_training_is_reproducible_and_prints_losses_next_to_the_learned_nothing_level() -> None:
    data, _ = synthetic_log(SMALL)
    split = leave_last_out(data)
    cfg = replace(QUICK.train, steps=4, eval_every=2, batch_size=8, num_negatives=4, dim=8,
                  validation_rows=8)
    stream = io.StringIO()
    first = train_ulim(data, split, QUICK.seq, cfg, stream=stream)
    second = train_ulim(data, split, QUICK.seq, cfg, stream=None)
    assert first.curve == second.curve
    for name in first.params:
        np.testing.assert_array_equal(first.params[name], second.params[name])
    other = train_ulim(data, split, QUICK.seq, replace(cfg, seed=1), stream=None)
    assert other.curve.train != first.curve.train
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "step     4/4" in lines[-1] and "learned nothing" in lines[-1]
    assert first.curve.valid_steps == [0, 2, 4]
    # 4 shared negatives: every score equal gives 2 log(1 + 4) less the accidental hits.
    assert 2 * np.log(4) <= first.curve.chance <= 2 * np.log(5)


def test_validation_targets_come_after_every_training_target_and_never_train() -> None:
    data, _ = synthetic_log(SMALL)
    split = leave_last_out(data)
    train = training_samples(data, split, QUICK.seq.min_position, "all_events")
    valid = request_samples(data, split.validation)
    chosen = validation_subset(valid.size, 5, seed=0)
    assert chosen.tolist() == sorted(set(chosen.tolist())) and chosen.size == 5
    assert validation_subset(valid.size, 10**6, seed=0).tolist() == list(range(valid.size))
    for user, position in zip(valid.users, valid.positions, strict=True):
        assert position > train.positions[train.users == user].max()
        assert not np.any((train.users == user) & (train.positions == position))


def _curve_fit(valid_losses: list[float], rule: TrainConfig) -> tuple[int, int, bool]:
    """fit on a fake model whose validation loss follows `valid_losses` (one value per
    measurement, the first for the init): (best step, steps run, stopped early)."""
    values = iter(valid_losses)
    params = {"w": np.zeros(1)}
    _, curve = fit("fake", params, lambda p, _: (0.0, {"w": np.ones(1)}), lambda p: next(values),
                   1.0, rule, rule.steps, np.random.default_rng(0), stream=None)
    return curve.best_step, len(curve.train), curve.stopped_early


def test_early_stopping_keeps_the_best_params_and_waits_patience_measurements() -> None:
    rule = replace(QUICK.train, steps=100, eval_every=10, patience=2, min_improvement=0.01)
    # falls, then two measurements without a fall beyond min_improvement: stops at step 40
    assert _curve_fit([5.0, 4.0, 3.0, 2.995, 3.5], rule) == (30, 40, True)
    # keeps falling: runs to the cap, best at the end
    assert _curve_fit([10.0 - i for i in range(11)], rule) == (100, 100, False)


def test_negative_control_youtube_dnn_gradient_check_catches_a_wrong_gradient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken backward that halves every parameter's gradient but the first: the same check fails."""
    real = ytdnn.youtube_dnn_loss_and_grads

    def halved_gradients(*args: Any) -> Any:
        loss, grads = real(*args)
        first = next(iter(grads))
        return loss, {k: g if k == first else 0.5 * g for k, g in grads.items()}

    monkeypatch.setattr(ytdnn, "youtube_dnn_loss_and_grads", halved_gradients)
    with pytest.raises(AssertionError):
        test_youtube_dnn_gradients_equal_finite_differences()


def test_negative_control_serving_check_catches_an_encoder_ignoring_the_short_mask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken serving encoder that treats padded short-term positions as behaviours."""
    real = ulim.encode_for_serving

    def ignores_short_mask(params: Any, short_items: Any, short_mask: Any, *rest: Any) -> Any:
        return real(params, short_items, np.ones_like(short_mask), *rest)

    monkeypatch.setattr(ulim, "encode_for_serving", ignores_short_mask)
    with pytest.raises(AssertionError):
        test_serving_vectors_equal_the_training_forward()


def test_negative_control_catalogue_check_catches_items_paired_with_the_wrong_category(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken catalogue tower that shifts the item -> category table by one."""
    real = item_tower.catalogue_vectors
    monkeypatch.setattr(item_tower, "catalogue_vectors", lambda params, cats: real(params, np.roll(cats, 1)))
    with pytest.raises(AssertionError):
        test_catalogue_tower_equals_the_tower_applied_item_by_item()
