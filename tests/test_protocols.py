"""The papers' protocols on small hand-built logs, with the expected users and targets written out."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl.data.interactions import Interactions, build_interactions
from refimpl.data.protocols import (
    DEFAULT_SEEN_POLICY,
    drop_seen,
    leave_last_out,
    seen_items,
    split_users,
    strong_generalization,
    training_events,
)


def log_from(sequences: dict[int, list[int]]) -> Interactions:
    """Users with their item sequences (raw ids = dense ids here), times 0, 1, 2, ... per user.
    Every item 0..19 is in the catalogue, so dense item ids equal the raw ones."""
    users = np.concatenate([[u] * len(s) for u, s in sequences.items()]).astype(np.int64)
    items = np.concatenate([s for s in sequences.values()]).astype(np.int64)
    times = np.concatenate([np.arange(len(s)) for s in sequences.values()]).astype(np.int64)
    return build_interactions(users, items, times, catalogue_items=np.arange(20),
                              catalogue_categories=np.arange(20) % 3)


def rows(requests: object, log: Interactions) -> list[tuple[int, list[int], list[int]]]:
    from refimpl.data.protocols import Requests

    assert isinstance(requests, Requests)
    return [(int(requests.users[r]), requests.history(log, r).tolist(), requests.target_items(r).tolist())
            for r in range(requests.num_rows)]


def test_leave_last_out_by_hand() -> None:
    log = log_from({0: [5, 6, 7, 8], 1: [1, 2], 2: [9, 9, 3], 3: [4]})
    split = leave_last_out(log)
    assert rows(split.test, log) == [(0, [5, 6, 7], [8]), (2, [9, 9], [3])]
    assert rows(split.validation, log) == [(0, [5, 6], [7]), (2, [9], [9])]
    # training events: user 0 and 2 before the validation target; users 1 and 3 keep everything
    assert [log.items[log.user_offsets[u] : split.train_end[u]].tolist() for u in range(4)] == [
        [5, 6], [1, 2], [9], [4]]
    users, positions = training_events(log, split)
    assert list(zip(users.tolist(), positions.tolist(), strict=True)) == [(0, 1), (1, 1)]
    truncated = leave_last_out(log, max_length=2)
    assert rows(truncated.test, log) == [(0, [6, 7], [8]), (2, [9, 9], [3])]


def test_leave_last_out_uses_time_not_file_order() -> None:
    """Negative control: the same events given out of time order must give the same split."""
    log = build_interactions(np.array([0, 0, 0]), np.array([7, 5, 6]), np.array([30, 10, 20]))
    split = leave_last_out(log)
    assert log.item_ids[split.test.targets].tolist() == [7]
    assert log.item_ids[split.validation.targets].tolist() == [6]


def test_split_users_rule() -> None:
    train, validation, test = split_users(20, seed=0)
    # written from the rule: keys = Generator(PCG64(0)).random(20), ordered ascending
    keys = np.random.Generator(np.random.PCG64(0)).random(20)
    order = np.argsort(keys, kind="stable")
    assert test.tolist() == sorted(order[:2].tolist()) == [3, 11]
    assert validation.tolist() == sorted(order[2:4].tolist()) == [2, 13]
    assert len(train) == 16 and set(train) | set(validation) | set(test) == set(range(20))
    assert split_users(20, seed=1)[2].tolist() != test.tolist()  # control: the seed matters


def test_strong_generalization_by_hand() -> None:
    sequences = {u: [u % 20] for u in range(20)}
    sequences[3] = list(range(12))  # test user: 12 events -> 1 target (12 // 10)
    sequences[11] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 0]  # 21 -> 2 targets
    sequences[2] = [7, 8, 9]  # validation user: 3 events -> 1 target
    # user 13 (validation) has one event: no history, no row
    log = log_from(sequences)
    split = strong_generalization(log, seed=0)
    assert rows(split.test, log) == [(3, list(range(11)), [11]), (11, list(range(19)), [19, 0])]
    assert rows(split.validation, log) == [(2, [7, 8], [9])]
    held_out = [3, 11, 2, 13]
    assert all(split.train_end[u] == log.user_offsets[u] for u in held_out)
    assert all(split.train_end[u] == log.user_offsets[u + 1] for u in range(20) if u not in held_out)
    truncated = strong_generalization(log, seed=0, max_length=4)
    assert rows(truncated.test, log) == [(3, [7, 8, 9, 10], [11]), (11, [15, 16, 17, 18], [19, 0])]
    assert "T=4" in truncated.describe() and "seen items kept" in truncated.describe()


def test_seen_items_and_exclusion() -> None:
    log = log_from({0: [5, 6, 5, 7, 8], 1: [1, 2, 3]})
    split = leave_last_out(log, max_length=1)
    seen = seen_items(log, split.test)
    # the whole history counts as seen, not only the truncated window of 1
    assert seen.offsets.tolist() == [0, 3, 5]
    assert seen.items.tolist() == [5, 6, 7, 1, 2]
    ranked = np.array([[5, 8, 6, 9, 10, 7], [3, 2, 1, 4, -1, 0]])
    assert drop_seen(ranked, seen, top_n=3).tolist() == [[8, 9, 10], [3, 4, 0]]
    assert drop_seen(ranked, seen, top_n=6).tolist() == [[8, 9, 10, -1, -1, -1], [3, 4, 0, -1, -1, -1]]
    # control: with nothing seen, the lists come back unchanged
    nothing = type(seen)(np.zeros(3, dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert drop_seen(ranked, nothing, top_n=3).tolist() == ranked[:, :3].tolist()
    assert DEFAULT_SEEN_POLICY == "kept"


def test_protocol_arguments_are_checked() -> None:
    log = log_from({0: [1, 2, 3]})
    with pytest.raises(ValueError, match="max_length"):
        leave_last_out(log, max_length=0)
    with pytest.raises(ValueError, match="seen_policy"):
        leave_last_out(log).describe("maybe")
    with pytest.raises(ValueError, match=r"ranked: expected shape \(R, M\) = \(1, M\)"):
        drop_seen(np.zeros((2, 3), dtype=np.int64), seen_items(log, leave_last_out(log).test), 2)


@given(st.lists(st.integers(1, 25), min_size=1, max_size=30), st.integers(0, 3), st.sampled_from([None, 1, 3]))
def test_protocol_invariants(lengths: list[int], seed: int, max_length: int | None) -> None:
    log = log_from({u: [(u + k) % 20 for k in range(n)] for u, n in enumerate(lengths)})
    start, end = log.user_offsets[:-1], log.user_offsets[1:]
    last = leave_last_out(log, max_length)
    evaluated = np.flatnonzero(end - start >= 3)
    assert np.array_equal(last.test.users, evaluated) and np.array_equal(last.validation.users, evaluated)
    assert np.array_equal(last.test.targets, log.items[end[evaluated] - 1])
    assert np.array_equal(last.validation.targets, log.items[end[evaluated] - 2])
    assert np.all(last.train_end[evaluated] == last.validation.history_end)
    strong = strong_generalization(log, seed, max_length)
    train, validation, test = split_users(log.num_users, seed)
    assert len(validation) == len(test) == log.num_users // 10
    assert sorted([*train, *validation, *test]) == list(range(log.num_users))
    for requests, users in ((strong.validation, validation), (strong.test, test)):
        assert np.array_equal(requests.users, users[end[users] - start[users] >= 2])
        n = end[requests.users] - start[requests.users]
        assert np.array_equal(np.diff(requests.target_offsets), np.maximum(1, n // 10))
        assert np.all(requests.history_end + np.diff(requests.target_offsets) == end[requests.users])
    held = np.concatenate([validation, test])
    assert np.all(strong.train_end[held] == start[held]) and np.all(strong.train_end[train] == end[train])
    for split in (last, strong):
        for requests in (split.validation, split.test):
            assert np.all(requests.history_start >= start[requests.users])
            assert np.all(requests.history_start < requests.history_end)
            if max_length is not None:
                assert np.all(requests.history_end - requests.history_start <= max_length)
