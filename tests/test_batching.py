"""Category-homogeneous batching, the refusal of mixed batches, no category leakage, ULIM's loss.

Every property has a negative control: a deliberately broken variant the same check catches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl.cases import ulim_loss as ulim_cases
from refimpl.data import batching
from refimpl.data.batching import (
    BatchingConfig,
    CategoryBatch,
    category_batches,
)
from refimpl.gradcheck import assert_gradients_match, check_component
from refimpl.nn.attention import AttentionConfig, AttentionParams, target_attention_forward
from refimpl.nn.sampled_softmax import SampledSoftmaxConfig, sampled_softmax_forward
from refimpl.nn.ulim_loss import (
    UlimLossConfig,
    composite_loss,
    require_category_pure,
    ulim_loss_backward,
    ulim_loss_forward,
)

Arr = np.ndarray[Any, Any]


@dataclass(frozen=True)
class World:
    """A catalogue and training samples (user, positive, category)."""

    item_categories: Arr  # (I,)
    users: Arr  # (S,)
    positives: Arr  # (S,)

    @property
    def categories(self) -> Arr:
        result: Arr = self.item_categories[self.positives]
        return result


@st.composite
def worlds(draw: Any, max_categories: int = 4) -> World:
    num_categories = draw(st.integers(1, max_categories))
    item_categories = np.array(
        draw(st.lists(st.integers(0, num_categories - 1), min_size=1, max_size=30)), dtype=np.int64
    )
    positives = np.array(
        draw(st.lists(st.integers(0, item_categories.size - 1), min_size=1, max_size=25)),
        dtype=np.int64,
    )
    users = np.arange(positives.size, dtype=np.int64)
    return World(item_categories, users, positives)


batching_configs = st.builds(
    BatchingConfig,
    batch_size=st.integers(1, 6),
    num_negatives=st.integers(1, 6),
    sampler=st.sampled_from(["uniform", "popularity"]),
    small_category=st.sampled_from(["with_replacement", "all_items"]),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
)


def _popularity(num_items: int) -> Arr:
    result: Arr = 1.0 + np.arange(num_items, dtype=np.float64) % 5
    return result


def _batches(world: World, cfg: BatchingConfig, seed: int = 0) -> list[CategoryBatch]:
    return category_batches(
        world.users, world.positives, world.categories, world.item_categories, cfg,
        np.random.Generator(np.random.PCG64(seed)), _popularity(world.item_categories.size),
    )


def _is_pure(batch: CategoryBatch, item_categories: Arr) -> bool:
    ids = np.concatenate([batch.positive_ids, batch.negative_ids])
    return bool(np.all(item_categories[ids] == batch.category))


@given(world=worlds(), cfg=batching_configs, seed=st.integers(0, 2**32 - 1))
def test_every_batch_is_category_pure_and_complete(
    world: World, cfg: BatchingConfig, seed: int
) -> None:
    batches = _batches(world, cfg, seed)
    assert all(_is_pure(b, world.item_categories) for b in batches)
    rows = np.concatenate([b.sample_index for b in batches]) if batches else np.zeros(0, int)
    assert len(set(rows.tolist())) == rows.size
    if not cfg.drop_last:
        assert sorted(rows.tolist()) == list(range(world.positives.size))
    for b in batches:
        pool = np.flatnonzero(world.item_categories == b.category)
        assert 1 <= b.positive_ids.size <= cfg.batch_size
        assert np.array_equal(b.positive_ids, world.positives[b.sample_index])
        small = pool.size < cfg.num_negatives and cfg.small_category == "all_items"
        assert b.negative_ids.size == (pool.size if small else cfg.num_negatives)
        if pool.size >= cfg.num_negatives or small:
            assert np.unique(b.negative_ids).size == b.negative_ids.size


@given(world=worlds(), cfg=batching_configs)
def test_q_is_the_per_draw_probability_within_the_category(world: World, cfg: BatchingConfig) -> None:
    popularity = _popularity(world.item_categories.size)
    for b in _batches(world, cfg):
        pool = world.item_categories == b.category
        for ids, q in ((b.positive_ids, b.positive_q), (b.negative_ids, b.negative_q)):
            if cfg.sampler == "uniform":
                expected = np.full(ids.size, 1.0 / pool.sum())
            else:
                expected = popularity[ids] / popularity[pool].sum()
            np.testing.assert_allclose(q, expected, rtol=1e-14)


def test_purity_property_catches_a_builder_drawing_from_the_whole_catalogue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Negative control: with the builder's own refusal disabled, the property test catches the
    leaky builder; with it enabled, the builder refuses to build."""
    world = World(np.array([0, 1, 0, 1, 2, 2], dtype=np.int64), np.arange(4), np.array([0, 1, 2, 4]))
    cfg = BatchingConfig(batch_size=2, num_negatives=4)
    with _whole_catalogue_builder(monkeypatch):
        with pytest.raises(ValueError, match="not category-pure: negative_ids"):
            _batches(world, cfg)
        monkeypatch.setattr(batching, "require_category_pure", lambda *args: None)
        assert not all(_is_pure(b, world.item_categories) for b in _batches(world, cfg))


@contextmanager
def _whole_catalogue_builder(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Broken: negatives drawn from every item, whatever the batch's category."""
    def whole(category: int, item_categories: Arr, sampler: str, popularity: Any = None) -> Any:
        pool = np.arange(item_categories.size, dtype=np.int64)
        return pool, np.full(pool.size, 1.0 / pool.size)

    with monkeypatch.context() as patch:
        patch.setattr(batching, "sampling_distribution", whole)
        yield


def test_mixed_batch_is_refused_naming_the_offending_ids() -> None:
    item_categories = np.array([0, 0, 1, 0, 2], dtype=np.int64)
    with pytest.raises(ValueError, match=r"positive_ids \[2\] are of categories \[1\]"):
        require_category_pure(0, item_categories, np.array([0, 2]), np.array([1, 3]))
    with pytest.raises(ValueError, match=r"negative_ids \[4\] are of categories \[2\]"):
        require_category_pure(0, item_categories, np.array([0, 1]), np.array([3, 4, 4]))
    with pytest.raises(ValueError, match=r"outside the catalogue"):
        require_category_pure(0, item_categories, np.array([0, 9]), np.array([3]))
    require_category_pure(0, item_categories, np.array([0, 1]), np.array([3, 1]))


def test_non_integer_ids_or_categories_are_a_type_error_not_an_index_error() -> None:
    item_categories = np.array([0, 0, 1, 0, 2], dtype=np.int64)
    with pytest.raises(TypeError, match="negative_ids: expected integer item ids"):
        require_category_pure(0, item_categories, np.array([0, 1]), np.array([3.0]))
    with pytest.raises(TypeError, match="item_categories"):
        require_category_pure(0, item_categories.astype(float), np.array([0, 1]), np.array([3]))


def _ulim_inputs(positive_ids: Arr, negative_ids: Arr, d: int = 4) -> dict[str, Any]:
    rng = np.random.Generator(np.random.PCG64(0))
    b, n = positive_ids.size, negative_ids.size
    return {
        "long_user": rng.standard_normal((b, d)), "short_user": rng.standard_normal((b, d)),
        "positive": rng.standard_normal((b, d)), "negatives": rng.standard_normal((n, d)),
        "positive_ids": positive_ids, "negative_ids": negative_ids,
    }


def test_ulim_loss_refuses_a_mixed_batch() -> None:
    item_categories = np.array([0, 0, 1, 0, 2], dtype=np.int64)
    x = _ulim_inputs(np.array([0, 1]), np.array([3, 4]))
    with pytest.raises(ValueError, match=r"negative_ids \[4\]"):
        ulim_loss_forward(**x, batch_category=0, item_categories=item_categories,
                          cfg=UlimLossConfig())
    x = _ulim_inputs(np.array([0, 1]), np.array([3, 0]))
    loss, _ = ulim_loss_forward(**x, batch_category=0, item_categories=item_categories,
                                cfg=UlimLossConfig())
    assert np.isfinite(loss)


def test_builder_refuses_a_sample_whose_category_is_not_its_items() -> None:
    with pytest.raises(ValueError, match=r"samples \[1\] state categories \[0\]"):
        category_batches(np.arange(2), np.array([0, 1]), np.array([0, 0]),
                         np.array([0, 1], dtype=np.int64), BatchingConfig(),
                         np.random.Generator(np.random.PCG64(0)))


@pytest.mark.parametrize("cfg, words", [
    (BatchingConfig(batch_size=0), "batch_size"),
    (BatchingConfig(num_negatives=0), "num_negatives"),
    (BatchingConfig(sampler="zipf"), "sampler"),
    (BatchingConfig(small_category="skip"), "small_category"),
    (BatchingConfig(sampler="popularity"), "item_popularity"),
])
def test_bad_batching_config_is_refused_by_name(cfg: BatchingConfig, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        category_batches(np.arange(2), np.array([0, 1]), np.array([0, 1]),
                         np.array([0, 1], dtype=np.int64), cfg,
                         np.random.Generator(np.random.PCG64(0)))


@pytest.mark.parametrize("policy", ["with_replacement", "all_items"])
def test_category_with_fewer_items_than_n(policy: str) -> None:
    """Category 1 has 2 items, N = 5: either 5 draws with repeats, or both items once."""
    item_categories = np.array([0, 1, 0, 0, 1, 0, 0, 0], dtype=np.int64)
    world = World(item_categories, np.arange(3), np.array([1, 4, 0]))
    cfg = BatchingConfig(batch_size=4, num_negatives=5, small_category=policy)
    small = next(b for b in _batches(world, cfg) if b.category == 1)
    large = next(b for b in _batches(world, cfg) if b.category == 0)
    assert set(small.negative_ids.tolist()) <= {1, 4}
    assert small.negative_ids.size == (5 if policy == "with_replacement" else 2)
    assert large.negative_ids.size == 5 and np.unique(large.negative_ids).size == 5
    np.testing.assert_allclose(small.negative_q, 0.5)


def test_same_generator_state_gives_the_same_batches() -> None:
    world = World(np.arange(40, dtype=np.int64) % 3, np.arange(20), np.arange(20) * 2 % 40)
    first, second = _batches(world, BatchingConfig(4, 3)), _batches(world, BatchingConfig(4, 3))
    assert all(np.array_equal(a.negative_ids, b.negative_ids)
               and np.array_equal(a.sample_index, b.sample_index) for a, b in zip(first, second, strict=True))


def _category_one_negatives(num_category_zero_items: int) -> list[Arr]:
    """Category 1's negatives when category 0 (drawn first: no shuffle) has a given size."""
    item_categories = np.array([1] * 6 + [0] * num_category_zero_items, dtype=np.int64)
    world = World(item_categories, np.arange(4), np.array([6, 7, 0, 1]))
    cfg = BatchingConfig(batch_size=2, num_negatives=3, shuffle=False)
    return [b.negative_ids for b in _batches(world, cfg) if b.category == 1]


def _same_draws(a: list[Arr], b: list[Arr]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_other_categories_pool_size_does_not_shift_the_draws() -> None:
    assert _same_draws(_category_one_negatives(2), _category_one_negatives(9))


def test_draw_check_catches_a_builder_drawing_every_batch_from_one_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Negative control: negatives drawn in turn from one shared stream leak a category's size."""
    original = batching.draw_negatives

    def one_stream(sizes: int) -> list[Arr]:
        stream = np.random.Generator(np.random.PCG64(0))
        with monkeypatch.context() as patch:
            patch.setattr(batching, "draw_negatives",
                          lambda rng, pool, probs, cfg: original(stream, pool, probs, cfg))
            return _category_one_negatives(sizes)

    assert not _same_draws(one_stream(2), one_stream(9))


# No category leakage: the long-term loss of a row depends only on its category.

D, L, NUM_USERS = 4, 8, 6
Encoder = Callable[[Arr, Arr, int], Arr]


def _attention_params(rng: np.random.Generator) -> AttentionParams:
    weights = {n: rng.standard_normal((D, D)) / np.sqrt(D) for n in ("Wq", "Wk", "Wv", "Wo")}
    biases = {n: 0.1 * rng.standard_normal(D) for n in ("bq", "bk", "bv", "bo")}
    return AttentionParams(**weights, **biases)


PARAMS = _attention_params(np.random.Generator(np.random.PCG64(42)))


def category_mask(history_categories: Arr, category: int) -> Arr:
    """ULIM's long-term encoder reads the category subsequence only."""
    result: Arr = history_categories == category
    return result


def whole_history_mask(history_categories: Arr, category: int) -> Arr:
    """Broken: the long-term encoder attends over every behaviour."""
    return np.ones(history_categories.shape, dtype=bool)


@dataclass(frozen=True)
class LongTermSetup:
    world: World
    table: Arr  # (I, D) item vectors
    history: Arr  # (U, L) item ids
    query: Arr  # (U, D) short-term vectors v_s (the long-term query; a per-row input here)


def _long_term_row_losses(
    setup: LongTermSetup, mask_fn: Callable[[Arr, int], Arr] = category_mask
) -> dict[int, float]:
    """The long-term loss of every sample row: target attention over the category subsequence,
    sampled softmax against the batch's shared in-category negatives."""
    w = setup.world
    losses: dict[int, float] = {}
    for batch in _batches(w, BatchingConfig(batch_size=3, num_negatives=3), seed=5):
        history = setup.history[batch.users]
        mask = mask_fn(w.item_categories[history], batch.category)
        long_user, _ = target_attention_forward(
            PARAMS, setup.query[batch.users], setup.table[history], mask, AttentionConfig(2)
        )
        _, cache = sampled_softmax_forward(
            long_user, setup.table[batch.positive_ids], setup.table[batch.negative_ids],
            batch.positive_ids, batch.negative_ids, SampledSoftmaxConfig(),
        )
        losses.update(zip(batch.sample_index.tolist(), cache.logit_loss.row_losses.tolist(), strict=True))
    return losses


@st.composite
def long_term_setups(draw: Any) -> LongTermSetup:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.Generator(np.random.PCG64(seed))
    num_items = draw(st.integers(6, 20))
    item_categories = rng.integers(0, 3, size=num_items).astype(np.int64)
    samples = rng.integers(0, num_items, size=draw(st.integers(1, 8))).astype(np.int64)
    world = World(item_categories, rng.integers(0, NUM_USERS, size=samples.size), samples)
    return LongTermSetup(
        world, rng.standard_normal((num_items, D)),
        rng.integers(0, num_items, size=(NUM_USERS, L)), rng.standard_normal((NUM_USERS, D)),
    )


def _change_other_categories(setup: LongTermSetup, category: int, seed: int) -> LongTermSetup:
    """New vectors for every item not of `category`, other-category history entries replaced by
    other items not of `category`, and three new items of other categories appended."""
    rng = np.random.Generator(np.random.PCG64(seed))
    w = setup.world
    others = np.flatnonzero(w.item_categories != category)
    new_categories = rng.choice(np.setdiff1d(np.arange(4), [category]), size=3)
    item_categories = np.concatenate([w.item_categories, new_categories]).astype(np.int64)
    table = np.concatenate([setup.table, rng.standard_normal((3, D))])
    table[others] = rng.standard_normal((others.size, D))
    history = setup.history.copy()
    foreign = w.item_categories[history] != category
    pool = np.concatenate([others, np.arange(w.item_categories.size, item_categories.size)])
    history[foreign] = rng.choice(pool, size=int(foreign.sum()))
    return LongTermSetup(replace(w, item_categories=item_categories), table, history, setup.query)


def _rows_of(setup: LongTermSetup, category: int) -> list[int]:
    return np.flatnonzero(setup.world.categories == category).tolist()


@given(setup=long_term_setups(), seed=st.integers(0, 2**32 - 1))
def test_long_term_loss_of_a_row_ignores_other_categories(setup: LongTermSetup, seed: int) -> None:
    category = int(setup.world.categories[0])
    before = _long_term_row_losses(setup)
    after = _long_term_row_losses(_change_other_categories(setup, category, seed))
    for row in _rows_of(setup, category):
        np.testing.assert_allclose(after[row], before[row], rtol=1e-12)


def _fixed_setup() -> LongTermSetup:
    rng = np.random.Generator(np.random.PCG64(3))
    item_categories = np.arange(12, dtype=np.int64) % 3
    world = World(item_categories, np.arange(4), np.array([0, 3, 6, 1]))
    return LongTermSetup(world, rng.standard_normal((12, D)),
                         rng.integers(0, 12, size=(NUM_USERS, L)), rng.standard_normal((NUM_USERS, D)))


def _leakage_detected(setup: LongTermSetup, mask_fn: Callable[[Arr, int], Arr]) -> bool:
    before = _long_term_row_losses(setup, mask_fn)
    after = _long_term_row_losses(_change_other_categories(setup, 0, 1), mask_fn)
    return any(abs(after[r] - before[r]) > 1e-9 for r in _rows_of(setup, 0))


def test_leakage_check_catches_an_encoder_reading_the_whole_history() -> None:
    """Negative control: the invariance fails for a long-term encoder over every behaviour."""
    assert not _leakage_detected(_fixed_setup(), category_mask)
    assert _leakage_detected(_fixed_setup(), whole_history_mask)


def test_leakage_check_catches_negatives_from_the_whole_catalogue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Negative control: a builder drawing negatives from every item (its refusal disabled)."""
    with _whole_catalogue_builder(monkeypatch):
        monkeypatch.setattr(batching, "require_category_pure", lambda *args: None)
        assert _leakage_detected(_fixed_setup(), category_mask)


# ULIM's composite loss (eq. 1)


@pytest.mark.parametrize("case", ulim_cases.CASES, ids=lambda c: c.name)
def test_ulim_loss_gradients_match_finite_differences(case: Any) -> None:
    assert_gradients_match(check_component(ulim_cases.ulim_loss_reference, case.draw(), case.config))



def test_negative_control_ulim_loss_gradient_check_catches_a_dropped_short_term_gradient() -> None:
    """A backward that forgets the short-term loss's gradient is caught by the same check."""
    case = ulim_cases.CASES[0]

    def drops_short_term(inputs: Any, params: Any, config: Any, upstream: Any) -> Any:
        result = ulim_cases.ulim_loss_reference(inputs, params, config, upstream)
        d_short = np.zeros_like(result.grads["d_short_user"])
        return replace(result, grads={**result.grads, "d_short_user": d_short})

    problems = check_component(drops_short_term, case.draw(), case.config)
    assert any("short_user" in p for p in problems)
    with pytest.raises(AssertionError):
        assert_gradients_match(problems)

def test_ulim_loss_is_alpha_long_plus_beta_short() -> None:
    x = _ulim_inputs(np.array([0, 1, 3]), np.array([3, 1, 0, 5]))
    item_categories = np.zeros(6, dtype=np.int64)
    cfg = UlimLossConfig(alpha=0.7, beta=0.2)
    loss, cache = ulim_loss_forward(**x, batch_category=0, item_categories=item_categories, cfg=cfg)
    parts = [sampled_softmax_forward(x[user], x["positive"], x["negatives"], x["positive_ids"],
                                     x["negative_ids"], cfg.loss)[0]
             for user in ("long_user", "short_user")]
    np.testing.assert_allclose(loss, 0.7 * parts[0] + 0.2 * parts[1], rtol=1e-14)
    np.testing.assert_allclose(loss, composite_loss(cache.long_loss, cache.short_loss, 0.7, 0.2))
    grads = ulim_loss_backward(cache, np.asarray(1.0))
    zero_beta, zb_cache = ulim_loss_forward(**x, batch_category=0, item_categories=item_categories,
                                            cfg=replace(cfg, beta=0.0))
    assert np.all(ulim_loss_backward(zb_cache, np.asarray(1.0)).short_user == 0)
    assert np.any(grads.short_user != 0) and zero_beta < loss


@pytest.mark.parametrize("cfg, words", [
    (UlimLossConfig(alpha=-1.0), "alpha"), (UlimLossConfig(beta=float("inf")), "beta"),
])
def test_ulim_loss_refuses_bad_weights(cfg: UlimLossConfig, words: str) -> None:
    x = _ulim_inputs(np.array([0]), np.array([1]))
    with pytest.raises(ValueError, match=words):
        ulim_loss_forward(**x, batch_category=0, item_categories=np.zeros(2, dtype=np.int64),
                          cfg=cfg)
