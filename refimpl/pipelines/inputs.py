"""Prediction targets and model inputs from an `Interactions` log and a `Split` (spec/data_model.md).

Every pipeline turns a log and a protocol's split into `Samples`: target events at a position of a
user's event sequence, whose history is the user's events before that position. Training samples
are the split's training events (`training_samples`); validation and test samples are a protocol's
requests (`request_samples`, one sample per target). Nothing here knows where the log came from.

- windows: `recent_window` (the most recent behaviours before each target), `category_subsequences`
  (ULIM's S_c inside the long window, or the most recent half of it per user: `LONG_INPUTS`);
- user profiles: `profile_ids` (one joint id per categorical field, MIND's and UMI's profile) and
  `profile_features` (their one-hot, PGIN's user features); a log without profile fields has one
  constant field;
- negatives and batches: `uniform_negatives`, `random_rows` (every draw from the Generator given).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, BoolArray, IntArray, require_choice, require_int, require_positive_int
from refimpl.data import category_subsequence
from refimpl.data.interactions import Interactions
from refimpl.data.protocols import Requests, SeenItems, Split, seen_items, training_events

__all__ = [
    "LONG_INPUTS",
    "TARGETS",
    "Samples",
    "category_changes",
    "category_subsequences",
    "profile_features",
    "profile_ids",
    "profile_sizes",
    "random_rows",
    "recent_window",
    "request_samples",
    "samples_seen",
    "training_samples",
    "uniform_negatives",
]

TARGETS = ("all_events", "category_changes", "visit_starts")
"""Which training events are targets: every one, or those whose category differs from the event
before (the start of a stay in a category: what a next-category predictor learns from)."""

LONG_INPUTS = ("whole", "recent_half")
"""What the long-term input S_c holds: the whole subsequence, or its most recent half per user
(ULIM-half-sequence, spec/ulim.md#ulim-half-sequence)."""


def _ids(name: str, value: object) -> IntArray:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(value).__name__}")
    if not np.issubdtype(value.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer array, got {value.dtype}")
    if value.ndim != 1:
        raise ValueError(f"{name}: expected shape (S,), got {value.shape}")
    return value


def _log(interactions: object) -> Interactions:
    if not isinstance(interactions, Interactions):
        raise TypeError(f"interactions: expected an Interactions, got {type(interactions).__name__}")
    return interactions


@dataclass(frozen=True)
class Samples:
    """S prediction targets: user `users[s]`'s event at `positions[s]` of its sequence is (or, for a
    request, is followed by) `targets[s]`; the history is the user's first `positions[s]` events.
    Checked at construction (one shape, non-negative users and positions)."""

    users: IntArray  # (S,)
    positions: IntArray  # (S,)
    targets: IntArray  # (S,) item ids
    categories: IntArray  # (S,) the targets' categories

    def __post_init__(self) -> None:
        size = _ids("users", self.users).shape[0]
        for name in ("positions", "targets", "categories"):
            column = _ids(name, getattr(self, name))
            if column.shape[0] != size:
                raise ValueError(f"{name}: expected shape ({size},) like users, got {column.shape}")
        for name in ("users", "positions", "targets", "categories"):
            column = getattr(self, name)
            if column.size and column.min() < 0:
                raise ValueError(f"{name}: expected values >= 0, got {column.min()}")

    def take(self, rows: IntArray) -> Samples:
        """The samples at `rows` (S',)."""
        index = _ids("rows", rows)
        if index.size and (index.min() < -self.size or index.max() >= self.size):
            raise ValueError(f"rows: expected row indices in [0, {self.size}), got "
                             f"[{index.min()}, {index.max()}]")
        return Samples(self.users[index], self.positions[index], self.targets[index],
                       self.categories[index])

    @property
    def size(self) -> int:
        return int(self.users.shape[0])

    def check_against(self, interactions: Interactions) -> None:
        """ValueError naming the field that does not fit the log (a user, a position, an item)."""
        log = _log(interactions)
        if self.size == 0:
            return
        if self.users.max() >= log.num_users:
            raise ValueError(f"users: expected dense user ids in [0, {log.num_users}), got {self.users.max()}")
        if np.any(self.positions > log.lengths()[self.users]):
            raise ValueError("positions: expected each position inside its user's events")
        if self.targets.max() >= log.num_items:
            raise ValueError(f"targets: expected item ids in [0, {log.num_items}), got {self.targets.max()}")
        if self.categories.max() >= log.num_categories:
            raise ValueError(f"categories: expected category ids in [0, {log.num_categories}), got "
                             f"{self.categories.max()}")


def training_samples(
    interactions: Interactions, split: Split, min_history: int = 1, targets: str = "all_events",
    visit_start: BoolArray | None = None,
) -> Samples:
    """The split's training events with at least `min_history` earlier events of their user, every
    one (targets "all_events"), those whose category differs from the event before
    ("category_changes"), or those that open a visit ("visit_starts": `visit_start` (E,) marks them
    in the log's event order, as `refimpl.data.interactions.from_synthetic` gives them; a log
    without visits has none)."""
    log = _log(interactions)
    if not isinstance(split, Split):
        raise TypeError(f"split: expected a Split, got {type(split).__name__}")
    require_choice("targets", targets, TARGETS)
    users, positions = training_events(log, split, require_int("min_history", min_history, low=0))
    events = log.user_offsets[users] + positions
    items = log.items[events]
    categories = log.item_category[items]
    samples = Samples(users, positions, items, categories)
    if targets == "category_changes":
        samples = samples.take(np.flatnonzero(category_changes(log, samples)))
    if targets == "visit_starts":
        samples = samples.take(np.flatnonzero(_visit_starts(log, visit_start)[events]))
    return samples


def _visit_starts(log: Interactions, visit_start: BoolArray | None) -> BoolArray:
    if visit_start is None:
        raise ValueError("visit_start: targets 'visit_starts' needs the log's visit starts (E,), got None")
    if not isinstance(visit_start, np.ndarray) or visit_start.dtype != np.bool_:
        raise TypeError(f"visit_start: expected a bool array, got {getattr(visit_start, 'dtype', type(visit_start))}")
    if visit_start.shape != (log.num_events,):
        raise ValueError(f"visit_start: expected shape (E,) = ({log.num_events},), got {visit_start.shape}")
    return visit_start


def category_changes(interactions: Interactions, samples: Samples) -> BoolArray:
    """(S,) whether each target's category differs from the category of the event before it (True
    for a target with no event before it)."""
    log = _log(interactions)
    samples.check_against(log)
    before = log.user_offsets[samples.users] + np.maximum(samples.positions - 1, 0)
    result: BoolArray = (samples.positions == 0) | (log.item_category[log.items[before]] != samples.categories)
    return result


def request_samples(interactions: Interactions, requests: Requests) -> Samples:
    """One sample per target of every request: the history is the user's events before the
    request's cut-off (`history_end`), whatever the protocol's truncation (the windows truncate)."""
    log = _log(interactions)
    if not isinstance(requests, Requests):
        raise TypeError(f"requests: expected a Requests, got {type(requests).__name__}")
    requests._check_against(log)
    counts = np.diff(requests.target_offsets)
    users = np.repeat(requests.users, counts)
    positions = np.repeat(requests.history_end - log.user_offsets[requests.users], counts)
    return Samples(users.astype(np.int64), positions.astype(np.int64), requests.targets.astype(np.int64),
                   log.item_category[requests.targets])


def samples_seen(interactions: Interactions, samples: Samples) -> SeenItems:
    """The distinct items each sample's user interacted with before the sample's position: what
    `drop_seen` removes when evaluation excludes seen items."""
    log = _log(interactions)
    samples.check_against(log)
    first = log.user_offsets[samples.users]
    rows = Requests(
        users=samples.users, history_start=first, history_end=first + samples.positions,
        target_offsets=np.arange(samples.size + 1, dtype=np.int64), targets=samples.targets,
    )
    return seen_items(log, rows)


def recent_window(interactions: Interactions, samples: Samples, length: int) -> tuple[IntArray, BoolArray]:
    """The most recent `length` behaviours before each target: items, mask (S, length), oldest
    first, valid positions first, padded with item 0."""
    log = _log(interactions)
    length = require_positive_int("length", length)
    samples.check_against(log)
    count = samples.positions.clip(max=length)  # (S,) behaviours available
    slot = np.arange(length)[None, :]
    mask = slot < count[:, None]
    position = samples.positions[:, None] - count[:, None] + slot
    ids = log.items[np.where(mask, log.user_offsets[samples.users][:, None] + position, 0)]
    items: IntArray = np.where(mask, ids, 0)
    return items, mask


def category_subsequences(
    interactions: Interactions,
    samples: Samples,
    categories: IntArray,
    long_length: int,
    max_subsequence: int,
    long_input: str = "whole",
) -> tuple[IntArray, BoolArray]:
    """S_c: the behaviours of category c in the long window (the recent `long_length`), the most
    recent `max_subsequence` kept (refimpl.data.category_subsequence, the one definition of S_c);
    with long_input "recent_half" only the most recent ceil(n / 2) of those n (ULIM-half-sequence:
    every S_c of two or more behaviours is halved).

    categories (S, K) -> items, mask (S, K, L) left-aligned, L the longest subsequence (at least 1).
    """
    log = _log(interactions)
    require_choice("long_input", long_input, LONG_INPUTS)
    wanted = categories
    if not isinstance(wanted, np.ndarray) or not np.issubdtype(wanted.dtype, np.integer):
        raise TypeError(f"categories: expected an integer numpy array, got {type(categories).__name__}")
    if wanted.ndim != 2 or wanted.shape[0] != samples.size:
        raise ValueError(f"categories: expected shape (S, K) = ({samples.size}, K), got {wanted.shape}")
    if wanted.size and (wanted.min() < 0 or wanted.max() >= log.num_categories):
        raise ValueError(f"categories: expected category ids in [0, {log.num_categories})")
    window = min(require_positive_int("long_length", long_length), max(int(samples.positions.max(initial=1)), 1))
    window_items, window_mask = recent_window(log, samples, window)
    items, mask = category_subsequence.category_subsequences(
        window_items, log.item_category[window_items], window_mask, wanted,
        require_positive_int("max_subsequence", max_subsequence),
    )
    if long_input == "recent_half":
        items, mask = _recent_half(items, mask)
    # subsequences are left-aligned: the columns past the longest one are padding for every row
    width = max(int(mask.sum(axis=-1).max(initial=0)), 1)
    return items[..., :width], mask[..., :width]


def _recent_half(items: IntArray, mask: BoolArray) -> tuple[IntArray, BoolArray]:
    """The most recent ceil(n / 2) of each left-aligned row's n valid entries, left-aligned."""
    count = mask.sum(axis=-1)
    drop = count // 2  # the oldest floor(n / 2)
    slot = np.arange(items.shape[-1])
    source = np.minimum(slot + drop[..., None], items.shape[-1] - 1)
    kept = slot < (count - drop)[..., None]
    return np.where(kept, np.take_along_axis(items, source, axis=-1), 0), kept


def profile_sizes(interactions: Interactions) -> tuple[int, ...]:
    """The number of values of every profile field (field order of the log), or (1,) for a log
    without profile fields (one constant field)."""
    log = _log(interactions)
    if not log.profile:
        return (1,)
    return tuple(int(len(log.profile_values[name])) for name in log.profile)


def profile_ids(interactions: Interactions, users: IntArray) -> IntArray:
    """(S, F) one joint id per profile field of each user: field f's value code plus the number of
    values of the fields before it, so the F fields share one table of sum(profile_sizes) rows."""
    log = _log(interactions)
    rows = _ids("users", users)
    if rows.size and (rows.min() < 0 or rows.max() >= log.num_users):
        raise ValueError(f"users: expected dense user ids in [0, {log.num_users})")
    if not log.profile:
        return np.zeros((rows.shape[0], 1), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(profile_sizes(log))[:-1]])
    codes = np.stack([log.profile[name][rows] for name in log.profile], axis=1)
    result: IntArray = (codes + offsets[None, :]).astype(np.int64)
    return result


def profile_features(interactions: Interactions, users: IntArray) -> Array:
    """(S, sum(profile_sizes)) float64: the one-hot of every profile field (ones (S, 1) without a
    profile): PGIN's user features."""
    ids = profile_ids(interactions, users)
    features = np.zeros((ids.shape[0], sum(profile_sizes(interactions))))
    np.put_along_axis(features, ids, 1.0, axis=1)
    return features


def uniform_negatives(num_items: int, count: int, rng: np.random.Generator) -> IntArray:
    """min(count, num_items) distinct item ids drawn uniformly from the catalogue with `rng`."""
    total = require_positive_int("num_items", num_items)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    negatives: IntArray = rng.choice(
        total, size=min(require_positive_int("count", count), total), replace=False
    ).astype(np.int64)
    return negatives


def random_rows(size: int, count: int, rng: np.random.Generator) -> IntArray:
    """`count` distinct rows of `size` (all of them if fewer), drawn from `rng`, ascending."""
    total = require_int("size", size, low=0)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    rows: IntArray = np.sort(rng.choice(total, size=min(require_positive_int("count", count), total),
                                        replace=False))
    return rows.astype(np.int64)
