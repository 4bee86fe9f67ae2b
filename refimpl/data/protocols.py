"""The papers' train/validation/test protocols over the data model (spec/data_model.md, "Protocols").

- `leave_last_out` (ULIM): every user's last event is the test target, the one before it the validation
  target; training uses the events before the validation target.
- `strong_generalization` (UMI): users are split 80/10/10 into training, validation and test users by a
  seeded rule; training users' events are all training events; a held-out user's first 90% of events are
  the history and the last 10% the targets; histories are truncated to the last T events.

A split is columns too: `train_end` (U,) cuts every user's events into a training part, and each
evaluation set is a `Requests`: one row per (user, cut-off), its history as a range of event indices and
its targets as a CSR list of items. `seen_items` and `drop_seen` implement the seen-item exclusion of the
evaluation; `SEEN_POLICIES` names the two choices so a report can say which one it used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import IntArray, require_choice, require_int, require_positive_int
from refimpl.data.interactions import Interactions

__all__ = [
    "DEFAULT_SEEN_POLICY",
    "LEAVE_LAST_OUT",
    "PROTOCOLS",
    "SEEN_POLICIES",
    "STRONG_GENERALIZATION",
    "Requests",
    "SeenItems",
    "Split",
    "drop_seen",
    "leave_last_out",
    "seen_items",
    "split_users",
    "strong_generalization",
    "training_events",
]

LEAVE_LAST_OUT = "leave-last-out"
STRONG_GENERALIZATION = "strong-generalization"
PROTOCOLS = (LEAVE_LAST_OUT, STRONG_GENERALIZATION)

SEEN_POLICIES = ("kept", "excluded")
DEFAULT_SEEN_POLICY = "kept"
"""Seen items stay in the ranked lists by default, as in the papers' evaluations (ULIM's and UMI's logs
have repeat interactions, and a repeat is a legitimate hit); "excluded" drops them (spec/data_model.md)."""


@dataclass(frozen=True)
class Requests:
    """R evaluation rows: a user, a history (a range of the log's event indices) and the targets.

    Row r's history is `interactions.items[history_start[r]:history_end[r]]` (oldest first, already
    truncated to the protocol's T) and its targets `targets[target_offsets[r]:target_offsets[r + 1]]`.
    """

    users: IntArray  # (R,) dense user ids, ascending
    history_start: IntArray  # (R,) absolute event index of the first history event
    history_end: IntArray  # (R,) absolute event index after the last history event
    target_offsets: IntArray  # (R + 1,)
    targets: IntArray  # (sum of targets,) dense item ids, in time order per row

    def __post_init__(self) -> None:
        rows = _int_column("users", self.users).shape[0]
        start = _int_column("history_start", self.history_start, rows)
        end = _int_column("history_end", self.history_end, rows)
        if np.any(start > end):
            raise ValueError("history_end: expected history_end >= history_start in every row")
        _offsets("target_offsets", self.target_offsets, rows, _int_column("targets", self.targets).shape[0])

    def _check_against(self, interactions: Interactions) -> None:
        """ValueError naming the field that does not fit the log (a user, an event range, an item)."""
        users = self.users
        if users.size and (users.min() < 0 or users.max() >= interactions.num_users):
            raise ValueError(f"users: expected dense user ids in [0, {interactions.num_users}), "
                             f"got [{users.min()}, {users.max()}]")
        first, after = interactions.user_offsets[users], interactions.user_offsets[users + 1]
        if np.any(self.history_start < first):
            raise ValueError("history_start: expected each row's history inside its user's events")
        if np.any(self.history_end > after):
            raise ValueError("history_end: expected each row's history inside its user's events")
        if self.targets.size and (self.targets.min() < 0 or self.targets.max() >= interactions.num_items):
            raise ValueError(f"targets: expected dense item ids in [0, {interactions.num_items})")

    @property
    def num_rows(self) -> int:
        return int(self.users.shape[0])

    def history(self, interactions: Interactions, row: int) -> IntArray:
        self._check_against(interactions)
        index = self._row(row)
        result: IntArray = interactions.items[self.history_start[index] : self.history_end[index]]
        return result

    def target_items(self, row: int) -> IntArray:
        index = self._row(row)
        result: IntArray = self.targets[self.target_offsets[index] : self.target_offsets[index + 1]]
        return result

    def _row(self, row: int) -> int:
        index = require_int("row", row, low=0)
        if index >= self.num_rows:
            raise ValueError(f"row: expected a row in [0, {self.num_rows}), got {row}")
        return index


def _int_column(name: str, value: object, length: int | None = None) -> IntArray:
    """A (n,) integer array; `length` when given."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(value).__name__}")
    if not np.issubdtype(value.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer array, got {value.dtype}")
    if value.ndim != 1 or (length is not None and value.shape[0] != length):
        expected = "(n,)" if length is None else f"({length},)"
        raise ValueError(f"{name}: expected shape {expected}, got {value.shape}")
    return value


def _offsets(name: str, value: object, rows: int, total: int) -> None:
    """CSR offsets (rows + 1,): from 0, never decreasing, ending at `total`."""
    offsets = _int_column(name, value, rows + 1)
    if offsets[0] != 0 or offsets[-1] != total or np.any(offsets[1:] < offsets[:-1]):
        raise ValueError(f"{name}: expected non-decreasing offsets from 0 to {total}, got "
                         f"{offsets[0]}..{offsets[-1]}")


@dataclass(frozen=True)
class Split:
    """Training events and the validation and test requests of one protocol.

    User u's training events are `interactions.items[user_offsets[u]:train_end[u]]` (empty for the
    held-out users of strong generalization). `max_length` is the protocol's T (None: no truncation).
    """

    protocol: str
    train_end: IntArray  # (U,) absolute event index
    validation: Requests
    test: Requests
    max_length: int | None

    def __post_init__(self) -> None:
        require_choice("protocol", self.protocol, PROTOCOLS)
        _int_column("train_end", self.train_end)
        _check_max_length(self.max_length)

    def describe(self, seen_policy: str = DEFAULT_SEEN_POLICY) -> str:
        """One line for a report: the protocol, T, the request counts and the seen-item policy."""
        require_choice("seen_policy", seen_policy, SEEN_POLICIES)
        length = "untruncated" if self.max_length is None else f"T={self.max_length}"
        return (f"{self.protocol} ({length}): {self.validation.num_rows} validation and {self.test.num_rows} "
                f"test requests; seen items {seen_policy}")


def _requests(
    users: IntArray, start: IntArray, end: IntArray, target_counts: IntArray, interactions: Interactions,
    max_length: int | None,
) -> Requests:
    """Rows whose history is [start, end) (then truncated to the last `max_length`) and whose targets are
    the `target_counts` events from `end` on."""
    history_start = start if max_length is None else np.maximum(start, end - max_length)
    offsets = np.concatenate([[0], np.cumsum(target_counts)]).astype(np.int64)
    target_events = np.repeat(end - offsets[:-1], target_counts) + np.arange(int(offsets[-1]))
    return Requests(
        users=users.astype(np.int64),
        history_start=history_start.astype(np.int64),
        history_end=end.astype(np.int64),
        target_offsets=offsets,
        targets=interactions.items[target_events].astype(np.int64),
    )


def _check_max_length(max_length: int | None) -> int | None:
    return None if max_length is None else require_positive_int("max_length", max_length)


def leave_last_out(interactions: Interactions, max_length: int | None = None) -> Split:
    """ULIM's time-ordered leave-last-out with a validation target.

    A user with at least 3 events gets one test row (history: every event but the last; target: the last)
    and one validation row (history: every event but the last two; target: the second to last); their
    training events are those before the validation target. A user with 1 or 2 events has no target that
    leaves a history for both sets: all their events are training events and they get no rows.
    """
    length = _check_max_length(max_length)
    start, end = interactions.user_offsets[:-1], interactions.user_offsets[1:]
    evaluated = np.flatnonzero(end - start >= 3)
    one = np.ones(evaluated.shape[0], dtype=np.int64)
    train_end = end.copy()
    train_end[evaluated] = end[evaluated] - 2
    return Split(
        protocol=LEAVE_LAST_OUT,
        train_end=train_end.astype(np.int64),
        validation=_requests(evaluated, start[evaluated], end[evaluated] - 2, one, interactions, length),
        test=_requests(evaluated, start[evaluated], end[evaluated] - 1, one, interactions, length),
        max_length=length,
    )


def split_users(num_users: int, seed: int) -> tuple[IntArray, IntArray, IntArray]:
    """UMI's 80/10/10 user split: (training, validation, test) dense user ids, each ascending.

    The rule: keys = `numpy.random.Generator(PCG64(seed)).random(num_users)`; users ordered by key (a
    stable sort); the first `num_users // 10` are the test users, the next `num_users // 10` the
    validation users, the rest the training users.
    """
    count = require_positive_int("num_users", num_users)
    require_int("seed", seed, low=0)
    keys = np.random.Generator(np.random.PCG64(seed)).random(count)
    order = np.argsort(keys, kind="stable").astype(np.int64)
    held = count // 10
    return np.sort(order[2 * held :]), np.sort(order[held : 2 * held]), np.sort(order[:held])


def strong_generalization(interactions: Interactions, seed: int, max_length: int | None = None) -> Split:
    """UMI's strong generalization (users split by `split_users`).

    Training users: every event is a training event. Held-out (validation and test) users train on
    nothing; a held-out user with n events has `max(1, n // 10)` targets, its last events, and the
    events before them as history (truncated to the last `max_length`). A held-out user with a single
    event has no history and gets no row.
    """
    length = _check_max_length(max_length)
    train_users, validation_users, test_users = split_users(interactions.num_users, seed)
    start, end = interactions.user_offsets[:-1], interactions.user_offsets[1:]
    train_end = start.copy()
    train_end[train_users] = end[train_users]

    def held_out(users: IntArray) -> Requests:
        users = users[end[users] - start[users] >= 2]
        counts = np.maximum(1, (end[users] - start[users]) // 10)
        return _requests(users, start[users], end[users] - counts, counts, interactions, length)

    return Split(
        protocol=STRONG_GENERALIZATION,
        train_end=train_end.astype(np.int64),
        validation=held_out(validation_users),
        test=held_out(test_users),
        max_length=length,
    )


def training_events(interactions: Interactions, split: Split, min_history: int = 1) -> tuple[IntArray, IntArray]:
    """Every training event with at least `min_history` earlier training events of its user.

    Returns (users, positions) (S,): the event is `items[user_offsets[users] + positions]`, its history
    the `positions` events before it. This is what a trainer turns into (history window, target) rows.
    """
    if isinstance(min_history, bool) or not isinstance(min_history, int) or min_history < 0:
        raise ValueError(f"min_history: expected a non-negative integer, got {min_history!r}")
    train_end = _int_column("train_end", split.train_end, interactions.num_users)
    if np.any(train_end < interactions.user_offsets[:-1]) or np.any(train_end > interactions.user_offsets[1:]):
        raise ValueError("train_end: expected every user's training end inside its events")
    owner = interactions.event_users()
    position = np.arange(interactions.num_events, dtype=np.int64) - interactions.user_offsets[owner]
    absolute = np.arange(interactions.num_events, dtype=np.int64)
    keep = (absolute < train_end[owner]) & (position >= min_history)
    return owner[keep], position[keep]


@dataclass(frozen=True)
class SeenItems:
    """The distinct items of each request's whole history before its cut-off (CSR, ascending per row).

    The whole history, not only the last T events: an item seen before the truncation is still seen.
    """

    offsets: IntArray  # (R + 1,)
    items: IntArray  # (sum,) dense item ids

    def __post_init__(self) -> None:
        items = _int_column("items", self.items)
        if items.size and items.min() < 0:
            raise ValueError(f"items: expected dense item ids >= 0, got {items.min()}")
        offsets = _int_column("offsets", self.offsets)
        _offsets("offsets", offsets, max(offsets.shape[0] - 1, 0), items.shape[0])


def seen_items(interactions: Interactions, requests: Requests) -> SeenItems:
    """Items each request's user interacted with before the request's cut-off (`history_end`)."""
    requests._check_against(interactions)
    first = interactions.user_offsets[requests.users]
    counts = requests.history_end - first
    rows = np.repeat(np.arange(requests.num_rows, dtype=np.int64), counts)
    events = np.repeat(first - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(
        int(counts.sum()), dtype=np.int64
    )
    pairs = np.unique(rows * interactions.num_items + interactions.items[events])
    pair_rows = pairs // interactions.num_items
    offsets = np.concatenate([[0], np.cumsum(np.bincount(pair_rows, minlength=requests.num_rows))])
    return SeenItems(offsets.astype(np.int64), (pairs % interactions.num_items).astype(np.int64))


def drop_seen(ranked: IntArray, seen: SeenItems, top_n: int) -> IntArray:
    """The first `top_n` items of each ranked row that the row's user has not seen.

    ranked: (R, M) dense item ids, best first, -1 for an empty slot; rank M >= top_n plus the number of
    seen items to be sure of `top_n` unseen ones. Returns (R, top_n), padded with -1 where a row has
    fewer unseen items.
    """
    count = require_positive_int("top_n", top_n)
    if not isinstance(ranked, np.ndarray) or ranked.ndim != 2 or not np.issubdtype(ranked.dtype, np.integer):
        raise ValueError(f"ranked: expected an (R, M) integer array, got {getattr(ranked, 'shape', ranked)}")
    rows = seen.offsets.shape[0] - 1
    if ranked.shape[0] != rows:
        raise ValueError(f"ranked: expected shape (R, M) = ({rows}, M), got {ranked.shape}")
    width = int(max(int(ranked.max(initial=0)), int(seen.items.max(initial=0)))) + 1
    seen_keys = np.repeat(np.arange(rows, dtype=np.int64), np.diff(seen.offsets)) * width + seen.items
    keys = np.arange(rows, dtype=np.int64)[:, None] * width + ranked
    keep = (ranked >= 0) & ~np.isin(keys, seen_keys)
    # Stable sort of "not kept" puts each row's kept items first, in rank order.
    order = np.argsort(~keep, axis=1, kind="stable")[:, :count]
    chosen = np.take_along_axis(ranked, order, axis=1)
    chosen_kept = np.take_along_axis(keep, order, axis=1)
    result: IntArray = np.where(chosen_kept, chosen, -1).astype(np.int64)
    if result.shape[1] < count:
        result = np.concatenate([result, np.full((rows, count - result.shape[1]), -1, dtype=np.int64)], axis=1)
    return result
