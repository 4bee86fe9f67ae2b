"""The interaction data model: invariants, re-indexing round trip, categories, the synthetic bridge."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl.data.interactions import (
    UNKNOWN_INT,
    UNKNOWN_STR,
    Interactions,
    build_interactions,
    dense_ids,
    from_synthetic,
)
from refimpl.data.protocols import leave_last_out, training_events
from refimpl.data.synthetic import QUICK_CONFIG, generate


def small_log() -> Interactions:
    # user 7: b@5, a@2, x@5 -> a, b, x (b before x: equal times keep the given order)
    return build_interactions(
        np.array([7, 3, 7, 3, 7, 9]),
        np.array(["b", "a", "a", "c", "x", "a"]),
        np.array([5, 1, 2, 1, 5, 0]),
        catalogue_items=np.array(["a", "b", "c", "z"]),
        catalogue_categories=np.array(["k1", "k2", "k1", "k3"]),
        profile_users=np.array([3, 9, 11]),
        profile_fields={"gender": np.array(["F", "M", "F"])},
    )


def test_small_log_by_hand() -> None:
    log = small_log()
    assert log.user_ids.tolist() == [3, 7, 9]
    assert log.item_ids.tolist() == ["a", "b", "c", "x", "z"]  # z: catalogue only, kept
    assert log.user_offsets.tolist() == [0, 2, 5, 6]
    assert log.items.tolist() == [0, 2, 0, 1, 3, 0]
    assert log.timestamps.tolist() == [1, 1, 2, 5, 5, 0]
    # x has no catalogue row: the explicit unknown category, always the last one
    assert log.category_ids.tolist() == ["k1", "k2", "k3", UNKNOWN_STR]
    assert log.unknown_category == 3
    assert log.item_category.tolist() == [0, 1, 0, 3, 2]
    # user 7 has no profile row: the field's unknown value; user 11 has no events: dropped
    assert log.profile["gender"].tolist() == [0, 2, 1]
    assert log.profile_values["gender"].tolist() == ["F", "M", UNKNOWN_STR]
    users, items = log.raw_events()
    assert list(zip(users.tolist(), items.tolist(), strict=True)) == [
        (3, "a"), (3, "c"), (7, "a"), (7, "b"), (7, "x"), (9, "a")]


def test_missing_category_error_rule() -> None:
    with pytest.raises(ValueError, match="1 entries have none"):
        build_interactions(np.array([1, 1]), np.array([1, 2]), np.array([0, 1]), catalogue_items=np.array([1]),
                           catalogue_categories=np.array([5]), missing_category="error")


def test_every_item_has_a_category_integer_ids() -> None:
    empty = build_interactions(np.array([1]), np.array([10]), np.array([0]), catalogue_items=np.zeros(0, np.int64),
                               catalogue_categories=np.zeros(0, np.int64))
    assert empty.category_ids.tolist() == [UNKNOWN_STR] and empty.item_category.tolist() == [0]
    log = build_interactions(np.array([1, 1, 2]), np.array([10, 20, 30]), np.array([0, 1, 0]),
                             catalogue_items=np.array([20, 10]), catalogue_categories=np.array([4, 4]))
    assert log.category_ids.tolist() == [4, UNKNOWN_INT]
    assert log.item_category.tolist() == [0, 0, 1]
    complete = build_interactions(np.array([1]), np.array([10]), np.array([0]),
                                  catalogue_items=np.array([10]), catalogue_categories=np.array([4]))
    assert complete.unknown_category is None and complete.category_ids.tolist() == [4]


def test_reserved_unknown_id_and_duplicates_are_refused() -> None:
    with pytest.raises(ValueError, match="reserved"):
        build_interactions(np.array([1, 1]), np.array([1, 2]), np.array([0, 1]), catalogue_items=np.array([1]),
                           catalogue_categories=np.array([UNKNOWN_INT]))
    with pytest.raises(ValueError, match="listed twice"):
        build_interactions(np.array([1]), np.array([1]), np.array([0]), catalogue_items=np.array([1, 1]),
                           catalogue_categories=np.array([2, 3]))


@st.composite
def raw_logs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    size = draw(st.integers(1, 40))
    users = np.array(draw(st.lists(st.integers(-5, 5), min_size=size, max_size=size)))
    items = np.array(draw(st.lists(st.sampled_from(["p", "q", "r", "s"]), min_size=size, max_size=size)))
    times = np.array(draw(st.lists(st.integers(0, 3), min_size=size, max_size=size)))  # many ties
    return users, items, times


@given(raw_logs())
def test_invariants_and_round_trip(raw: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    users, items, times = raw
    log = build_interactions(users, items, times, catalogue_items=np.array(["p", "q"]),
                             catalogue_categories=np.array([1, 0]))
    owner = log.event_users()
    same_user = owner[1:] == owner[:-1]
    assert np.all(log.timestamps[1:][same_user] >= log.timestamps[:-1][same_user])
    assert np.all(np.diff(log.user_ids) > 0) and np.all(log.item_ids[1:] > log.item_ids[:-1])
    # Round trip: per user, the raw events in (time, given order) order.
    expected = sorted(zip(users.tolist(), times.tolist(), range(users.shape[0]), items.tolist(), strict=True))
    raw_users, raw_items = log.raw_events()
    assert raw_users.tolist() == [e[0] for e in expected]
    assert raw_items.tolist() == [e[3] for e in expected]
    assert log.timestamps.tolist() == [e[1] for e in expected]
    assert np.array_equal(log.dense_items(raw_items), log.items)
    # Every item has a category: p, q from the catalogue, r, s the unknown one.
    category_of = dict(zip(log.item_ids.tolist(), log.category_ids[log.item_category].tolist(), strict=True))
    assert {k: v for k, v in category_of.items() if k in "pq"} == {"p": 1, "q": 0}
    assert all(category_of[k] == UNKNOWN_INT for k in category_of if k in "rs")


def test_validation_refuses_broken_logs() -> None:
    """Negative controls: each invariant, broken on purpose, is refused."""
    log = small_log()
    swapped = log.items.copy()
    with pytest.raises(ValueError, match="not in time order"):
        dataclasses.replace(log, timestamps=log.timestamps[[0, 1, 3, 2, 4, 5]])
    with pytest.raises(ValueError, match="unique and ascending"):
        dataclasses.replace(log, item_ids=log.item_ids[::-1].copy())
    swapped[0] = log.num_items
    with pytest.raises(ValueError, match="items: expected values in"):
        dataclasses.replace(log, items=swapped)
    with pytest.raises(ValueError, match="at least one event"):
        dataclasses.replace(log, user_offsets=np.array([0, 2, 2, 6]))
    with pytest.raises(ValueError, match="item_category"):
        dataclasses.replace(log, item_category=np.array([0, 1, 0, 4, 2]))
    with pytest.raises(ValueError, match="unknown_category"):
        dataclasses.replace(log, unknown_category=0)
    with pytest.raises(ValueError, match="gender"):
        dataclasses.replace(log, profile={"gender": np.array([0, 3, 1])})
    with pytest.raises(TypeError, match="timestamps"):
        dataclasses.replace(log, timestamps=log.timestamps.astype(np.float32))
    with pytest.raises(ValueError, match="'nope' is not in the log"):
        log.dense_items(np.array(["a", "nope"]))


def test_from_synthetic_keeps_ids_and_appends_the_heldout_event() -> None:
    data = generate(dataclasses.replace(QUICK_CONFIG, num_users=12))
    bridge = from_synthetic(data)
    log = bridge.interactions
    assert log.num_users == data.num_users and log.num_items == data.num_items
    assert log.num_categories == data.num_categories
    assert np.array_equal(log.item_category, data.item_category)
    assert np.array_equal(log.lengths(), data.lengths() + 1)
    for user in (0, 5, 11):
        assert np.array_equal(log.sequence(user), np.append(data.sequence(user), data.heldout[user]))
        first, last = log.user_offsets[user], log.user_offsets[user + 1]
        assert np.array_equal(bridge.visit_start[first : last - 1],
                              data.visit_start[data.offsets[user] : data.offsets[user + 1]])
        assert bridge.visit_start[last - 1]
        assert np.array_equal(log.timestamps[first:last], np.arange(last - first))


@given(st.lists(st.integers(0, 50), min_size=1, max_size=30), st.booleans())
def test_dense_ids_counting_path_equals_sorting_path(values: list[int], sparse: bool) -> None:
    raw = np.array(values + ([10**12] if sparse else []), dtype=np.int64)  # 10**12 forces the sorting path
    unique, dense = dense_ids("raw", raw)
    expected_unique, expected_dense = np.unique(raw, return_inverse=True)
    assert np.array_equal(unique, expected_unique) and np.array_equal(dense, expected_dense.ravel())


def test_from_synthetic_under_leave_last_out_reproduces_the_synthetic_protocol() -> None:
    """The recipe the trainers' rewiring follows: leave-last-out's test rows are the generator's held-out
    events with the whole sequence as history, and training events filtered by `visit_start` are the
    generator's training targets (visit starts at position >= min_position) up to the validation event."""
    data = generate(dataclasses.replace(QUICK_CONFIG, num_users=12))
    bridge = from_synthetic(data)
    log = bridge.interactions
    split = leave_last_out(log)
    assert np.array_equal(split.test.users, np.arange(12))
    assert np.array_equal(split.test.targets, data.heldout)
    assert np.array_equal(split.test.history_end - log.user_offsets[:-1], data.lengths())
    users, positions = training_events(log, split, min_history=10)
    chosen = bridge.visit_start[log.user_offsets[users] + positions]
    owner = np.repeat(np.arange(12), data.lengths())
    position = np.arange(data.events.shape[0]) - data.offsets[owner]
    before_validation = position < data.lengths()[owner] - 1
    expected = data.visit_start & (position >= 10) & before_validation
    assert np.array_equal(users[chosen], owner[expected])
    assert np.array_equal(positions[chosen], position[expected])


def test_ties_keep_the_given_order() -> None:
    """Negative control of the tie rule: the same two equal-time events given in the other order swap."""
    forward = build_interactions(np.array([1, 1]), np.array([5, 6]), np.array([0, 0]))
    backward = build_interactions(np.array([1, 1]), np.array([6, 5]), np.array([0, 0]))
    assert forward.item_ids[forward.items].tolist() == [5, 6]
    assert backward.item_ids[backward.items].tolist() == [6, 5]
