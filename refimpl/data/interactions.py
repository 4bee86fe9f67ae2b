"""One data model for interaction logs (spec/data_model.md), whatever file or generator they came from.

`Interactions` holds a log as columns, never as a Python object per event: users, items and categories
re-indexed to dense ids 0..n-1 (the raw ids kept for the round trip), every user's events contiguous and
in time order (CSR-like `user_offsets`), timestamps, an optional behaviour type per event, optional
categorical user-profile fields, and the category of every item. The invariants are checked when an
`Interactions` is made, so every consumer may rely on them:

- user u's events are `items[user_offsets[u]:user_offsets[u + 1]]`, and every user has at least one;
- timestamps never decrease inside a user's events; `build_interactions` sorts stably, so events with
  equal timestamps keep the order in which they were given (file order);
- repeats (the same item twice for a user) are kept;
- dense ids follow the ascending order of the raw ids, so `item_ids[items]` gives the raw ids back;
- every item has exactly one category; an item without one gets the explicit unknown category (always the
  last category, raw id `UNKNOWN_STR` or `UNKNOWN_INT`), or `build_interactions` raises with
  `missing_category="error"`. A user without a value for a profile field gets that field's unknown value
  by the same rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from refimpl._check import BoolArray, IntArray, require_array, require_choice, require_int
from refimpl.data.synthetic import SyntheticData

UNKNOWN_STR = "<unknown>"
"""Raw id of the unknown category (or profile value) when the raw ids are strings."""
UNKNOWN_INT = -1
"""Raw id of the unknown category (or profile value) when the raw ids are integers."""
MISSING_CATEGORY = ("unknown", "error")

RawIds = NDArray[Any]  # (n,) int64 or str_ raw ids

__all__ = [
    "MISSING_CATEGORY",
    "UNKNOWN_INT",
    "UNKNOWN_STR",
    "Interactions",
    "SyntheticInteractions",
    "build_interactions",
    "dense_ids",
    "from_synthetic",
]


@dataclass(frozen=True)
class Interactions:
    """An interaction log as columns (E events, U users, I items, C categories).

    Made by `build_interactions` (from raw ids in any order) or by the loaders in
    `refimpl.data.loaders`; the constructor validates every invariant of spec/data_model.md.
    """

    user_offsets: IntArray  # (U + 1,) int64; user u's events are [user_offsets[u], user_offsets[u + 1])
    items: IntArray  # (E,) int64 dense item ids, each user's events in time order
    timestamps: NDArray[Any]  # (E,) int64 or float64; only their order within a user matters
    item_category: IntArray  # (I,) int64 dense category of every item
    user_ids: RawIds  # (U,) raw user ids, ascending
    item_ids: RawIds  # (I,) raw item ids, ascending
    category_ids: RawIds  # (C,) raw category ids, ascending, then the unknown category if there is one
    unknown_category: int | None = None  # dense id of the unknown category, None when every item has one
    behaviours: IntArray | None = None  # (E,) int8 codes into behaviour_names
    behaviour_names: tuple[str, ...] = ()
    profile: Mapping[str, IntArray] = field(default_factory=dict)  # field -> (U,) int64 codes
    profile_values: Mapping[str, RawIds] = field(default_factory=dict)  # field -> (V,) raw value of each code
    source: str = ""  # where the log came from, for reports

    def __post_init__(self) -> None:
        validate(self)

    @property
    def num_users(self) -> int:
        return int(self.user_offsets.shape[0] - 1)

    @property
    def num_items(self) -> int:
        return int(self.item_category.shape[0])

    @property
    def num_categories(self) -> int:
        return int(self.category_ids.shape[0])

    @property
    def num_events(self) -> int:
        return int(self.items.shape[0])

    def lengths(self) -> IntArray:
        """Events per user (U,)."""
        result: IntArray = np.diff(self.user_offsets)
        return result

    def sequence(self, user: int) -> IntArray:
        """User `user`'s dense item ids (T_u,), oldest first."""
        user = require_int("user", user, low=0)
        if user >= self.num_users:
            raise ValueError(f"user: expected a dense user id in [0, {self.num_users}), got {user}")
        result: IntArray = self.items[self.user_offsets[user] : self.user_offsets[user + 1]]
        return result

    def event_users(self) -> IntArray:
        """The dense user of every event (E,)."""
        result: IntArray = np.repeat(np.arange(self.num_users, dtype=np.int64), self.lengths())
        return result

    def event_categories(self) -> IntArray:
        """The dense category of every event (E,)."""
        result: IntArray = self.item_category[self.items]
        return result

    def raw_events(self) -> tuple[RawIds, RawIds]:
        """(raw user, raw item) of every event, in the model's event order: the round trip of the ids."""
        return self.user_ids[self.event_users()], self.item_ids[self.items]

    def dense_items(self, raw: RawIds) -> IntArray:
        """Dense ids of raw item ids; ValueError naming the first raw id the log does not know."""
        return _lookup("raw", self.item_ids, _raw("raw", raw))

    def dense_users(self, raw: RawIds) -> IntArray:
        """Dense ids of raw user ids; ValueError naming the first raw id the log does not know."""
        return _lookup("raw", self.user_ids, _raw("raw", raw))


def _lookup(name: str, sorted_ids: RawIds, raw: RawIds) -> IntArray:
    if sorted_ids.shape[0] == 0:
        raise ValueError(f"{name}: the log has no ids to look up")
    position = np.minimum(np.searchsorted(sorted_ids, raw), sorted_ids.shape[0] - 1)
    missing = sorted_ids[position] != raw
    if np.any(missing):
        raise ValueError(f"{name}: {raw[np.flatnonzero(missing)[0]].item()!r} is not in the log")
    result: IntArray = position.astype(np.int64)
    return result


def _require_int_array(name: str, value: Any, length: int | None = None) -> IntArray:
    if not isinstance(value, np.ndarray) or value.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D numpy array, got {type(value).__name__} "
                         f"{getattr(value, 'shape', '')}")
    if not np.issubdtype(value.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer array, got {value.dtype}")
    if length is not None and value.shape[0] != length:
        raise ValueError(f"{name}: expected shape ({length},), got {value.shape}")
    result: IntArray = value
    return result


def _require_codes(name: str, value: Any, length: int, bound: int) -> None:
    codes = _require_int_array(name, value, length)
    if codes.shape[0] and (codes.min() < 0 or codes.max() >= bound):
        raise ValueError(f"{name}: expected values in [0, {bound}), got [{codes.min()}, {codes.max()}]")


def _require_raw_ids(name: str, value: Any, length: int, *, last_may_break_order: bool = False) -> None:
    if not isinstance(value, np.ndarray) or value.ndim != 1 or value.shape[0] != length:
        raise ValueError(f"{name}: expected a 1-D array of {length} raw ids, got {getattr(value, 'shape', value)}")
    if value.dtype.kind not in "iuU":
        raise TypeError(f"{name}: raw ids are integers or str, got {value.dtype}")
    ordered = value[:-1] if last_may_break_order and length > 0 else value
    if ordered.shape[0] > 1 and not np.all(ordered[1:] > ordered[:-1]):
        raise ValueError(f"{name}: raw ids must be unique and ascending (dense id = rank of the raw id)")


def unknown_raw_id(dtype: np.dtype[Any]) -> Any:
    """The raw id of the unknown category (or profile value) for raw ids of `dtype`."""
    return UNKNOWN_STR if dtype.kind == "U" else UNKNOWN_INT


def validate(log: Interactions) -> None:
    """Check every invariant of spec/data_model.md; ValueError/TypeError naming the field."""
    for name in ("user_ids", "item_ids", "category_ids"):
        if not isinstance(getattr(log, name), np.ndarray):
            raise TypeError(f"{name}: expected a numpy array of raw ids, got {type(getattr(log, name)).__name__}")
    offsets = _require_int_array("user_offsets", log.user_offsets)
    if offsets.shape[0] < 1 or offsets[0] != 0:
        raise ValueError("user_offsets: expected (U + 1,) offsets starting at 0")
    num_events = int(offsets[-1])
    if offsets.shape[0] > 1 and not np.all(offsets[1:] > offsets[:-1]):
        first = int(np.flatnonzero(offsets[1:] <= offsets[:-1])[0])
        raise ValueError(f"user_offsets: every user has at least one event; user {first} has none")
    num_users = offsets.shape[0] - 1
    num_items = _require_int_array("item_category", log.item_category).shape[0]
    num_categories = len(log.category_ids)
    _require_codes("items", log.items, num_events, num_items)
    _require_codes("item_category", log.item_category, num_items, num_categories)
    _require_raw_ids("user_ids", log.user_ids, num_users)
    _require_raw_ids("item_ids", log.item_ids, num_items)
    _require_raw_ids("category_ids", log.category_ids, num_categories,
                     last_may_break_order=log.unknown_category is not None)
    if log.unknown_category is not None and (
        log.unknown_category != num_categories - 1
        or log.category_ids[-1] != unknown_raw_id(log.category_ids.dtype)
    ):
        raise ValueError(f"unknown_category: the unknown category is the last one ({num_categories - 1}) with raw "
                         f"id {unknown_raw_id(log.category_ids.dtype)!r}, got {log.unknown_category}")
    _validate_timestamps(log.timestamps, offsets)
    if log.behaviours is not None:
        _require_codes("behaviours", log.behaviours, num_events, len(log.behaviour_names))
    elif log.behaviour_names:
        raise ValueError("behaviour_names: given without behaviours")
    if set(log.profile) != set(log.profile_values):
        raise ValueError(f"profile: fields {sorted(log.profile)} differ from profile_values "
                         f"{sorted(log.profile_values)}")
    for name, codes in log.profile.items():
        _require_codes(f"profile[{name!r}]", codes, num_users, len(log.profile_values[name]))


def _validate_timestamps(timestamps: Any, offsets: IntArray) -> None:
    num_events = int(offsets[-1])
    if not isinstance(timestamps, np.ndarray) or timestamps.shape != (num_events,):
        raise ValueError(f"timestamps: expected shape ({num_events},), got {getattr(timestamps, 'shape', None)}")
    if timestamps.dtype not in (np.int64, np.float64):
        raise TypeError(f"timestamps: expected int64 or float64, got {timestamps.dtype}")
    if timestamps.dtype == np.float64 and not np.all(np.isfinite(timestamps)):
        raise ValueError("timestamps: expected finite values")
    decreasing = timestamps[1:] < timestamps[:-1]
    decreasing[offsets[1:-1] - 1] = False  # a new user may start earlier than the last one ended
    if np.any(decreasing):
        event = int(np.flatnonzero(decreasing)[0]) + 1
        user = int(np.searchsorted(offsets, event, side="right") - 1)
        raise ValueError(f"timestamps: user {user}'s events are not in time order at event {event}")


def _raw(name: str, raw: Any) -> RawIds:
    """Raw ids as a 1-D int64 or str array (bytes are decoded as UTF-8)."""
    values = require_array(name, raw)
    if values.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {values.shape}")
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8")
    if values.dtype.kind not in "iuU":
        raise TypeError(f"{name}: raw ids are integers or str, got {values.dtype}")
    if values.dtype.kind in "iu":
        values = values.astype(np.int64)
    return values


def dense_ids(name: str, raw: Any) -> tuple[RawIds, IntArray]:
    """Ascending unique raw ids and the dense id (rank) of every entry of `raw`."""
    values = _raw(name, raw)
    if values.dtype.kind == "i" and values.shape[0] and values.min() >= 0 and (
        values.max() < 4 * values.shape[0] + (1 << 16)
    ):
        # Small non-negative integer ids (MovieLens, Taobao): rank by counting, no sort.
        present = np.zeros(int(values.max()) + 1, dtype=bool)
        present[values] = True
        rank = np.cumsum(present, dtype=np.int64) - 1
        return np.flatnonzero(present).astype(np.int64), rank[values]
    unique, inverse = np.unique(values, return_inverse=True)
    return unique, inverse.astype(np.int64).ravel()


def _time_order(event_user: IntArray, time: NDArray[Any], num_users: int) -> IntArray:
    """Event order by (user, time), ties in the given order (stable sorts)."""
    if time.dtype == np.int64 and time.shape[0]:
        low = int(time.min())
        span = int(time.max()) - low + 1
        if span * max(num_users, 1) < (1 << 62):  # one sort of a combined key when it fits in int64
            result: IntArray = np.argsort(event_user * span + (time - low), kind="stable")
            return result
    order = np.argsort(time, kind="stable")
    result = order[np.argsort(event_user[order], kind="stable")]
    return result


def _with_unknown(name: str, known: RawIds, missing: BoolArray, rule: str) -> tuple[RawIds, int | None]:
    """Append the unknown raw id to `known` when some entry is `missing` (rule "unknown"), or raise."""
    if not np.any(missing):
        return known, None
    if rule == "error":
        raise ValueError(f"{name}: {int(missing.sum())} entries have none (missing_category='error')")
    if known.shape[0] == 0:
        return np.asarray([UNKNOWN_STR]), 0
    sentinel = unknown_raw_id(known.dtype)
    if np.any(known == sentinel):
        raise ValueError(f"{name}: the raw value {sentinel!r} is reserved for the unknown value")
    tail = np.asarray([sentinel], dtype=np.int64 if known.dtype.kind in "iu" else None)
    return np.concatenate([known, tail]), known.shape[0]


def _attach(
    name: str, keys: RawIds, key_values: Any, wanted: RawIds, values_name: str
) -> tuple[RawIds, BoolArray]:
    """The value of every `wanted` key from the (key, value) table, and which wanted keys have none."""
    keys = _raw(name, keys)
    values = _raw(values_name, key_values)
    if keys.shape != values.shape or keys.ndim != 1:
        raise ValueError(f"{name}: keys {keys.shape} and values {values.shape} differ in shape")
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    if sorted_keys.shape[0] > 1 and np.any(sorted_keys[1:] == sorted_keys[:-1]):
        duplicate = sorted_keys[1:][sorted_keys[1:] == sorted_keys[:-1]][0]
        raise ValueError(f"{name}: raw id {duplicate.item()!r} is listed twice")
    if sorted_keys.shape[0] == 0:
        return np.zeros(wanted.shape[0], dtype=values.dtype), np.ones(wanted.shape[0], dtype=bool)
    if (sorted_keys.dtype.kind == "U") != (wanted.dtype.kind == "U"):
        raise TypeError(f"{name}: raw ids are {sorted_keys.dtype} here but {wanted.dtype} in the events")
    position = np.minimum(np.searchsorted(sorted_keys, wanted), sorted_keys.shape[0] - 1)
    found = sorted_keys[position] == wanted
    return values[order[position]], ~found


def build_interactions(
    users: Any,
    items: Any,
    timestamps: Any,
    *,
    behaviours: Any = None,
    behaviour_names: tuple[str, ...] = (),
    catalogue_items: Any = None,
    catalogue_categories: Any = None,
    missing_category: str = "unknown",
    profile_users: Any = None,
    profile_fields: Mapping[str, Any] | None = None,
    source: str = "",
) -> Interactions:
    """Make an `Interactions` from raw ids in any order (spec/data_model.md).

    users, items, timestamps: (E,) the events, raw ids (integers or str) and int64/float64 times.
    behaviours: optional (E,) integer codes into `behaviour_names`.
    catalogue_items, catalogue_categories: (I_c,) the item -> category table (raw ids). Items of the
        catalogue without events are kept (they are part of the retrieval pool); an item of the events
        that the catalogue lacks has no category: `missing_category="unknown"` gives it the explicit
        unknown category, `"error"` raises.
    profile_users, profile_fields: (P,) raw user ids and, per field, (P,) raw categorical values. Users
        of the profile without events are dropped; a user with events but no profile row gets the
        field's unknown value.
    Events are sorted by (user, timestamp) with a stable sort: ties in time keep the given order.
    """
    require_choice("missing_category", missing_category, MISSING_CATEGORY)
    user_ids, event_user = dense_ids("users", users)
    time = require_array("timestamps", timestamps)
    if time.dtype.kind in "iu":
        time = time.astype(np.int64)
    elif time.dtype.kind == "f":
        time = time.astype(np.float64)
    else:
        raise TypeError(f"timestamps: expected integers or floats, got {time.dtype}")
    raw_items = require_array("items", items)
    if not (event_user.shape == time.shape == raw_items.shape):
        raise ValueError(f"users, items, timestamps: expected one entry per event each, got shapes "
                         f"{event_user.shape}, {raw_items.shape}, {time.shape}")
    if (catalogue_items is None) != (catalogue_categories is None):
        raise ValueError("catalogue_items, catalogue_categories: give both or neither")
    raw_items = _raw("items", raw_items)
    catalogue = _raw("catalogue_items", catalogue_items) if catalogue_items is not None else raw_items[:0]
    if (catalogue.dtype.kind == "U") != (raw_items.dtype.kind == "U"):
        raise TypeError(f"catalogue_items: raw ids are {catalogue.dtype} here but {raw_items.dtype} in the events")
    item_ids, dense_all = dense_ids("items", np.concatenate([raw_items, catalogue]))
    event_item = dense_all[: raw_items.shape[0]]
    if catalogue_items is None:
        raw_category, no_category = np.zeros(item_ids.shape[0], dtype=np.int64), np.ones(item_ids.shape[0], bool)
        known_categories: RawIds = np.zeros(0, dtype=np.int64)
    else:
        raw_category, no_category = _attach(
            "catalogue_items", catalogue, catalogue_categories, item_ids, "catalogue_categories"
        )
        known_categories = _raw("catalogue_categories", catalogue_categories)
    category_ids, _ = dense_ids("catalogue_categories", known_categories)
    lookup = np.zeros(0, dtype=np.int64)
    if category_ids.shape[0]:
        lookup = np.searchsorted(category_ids, raw_category[~no_category]).astype(np.int64)
    category_ids, unknown = _with_unknown("item categories", category_ids, no_category, missing_category)
    item_category = np.full(item_ids.shape[0], -1 if unknown is None else unknown, dtype=np.int64)
    item_category[~no_category] = lookup

    # Large logs (10^8 events): each per-event temporary is dropped as soon as it is used.
    del raw_items, catalogue, raw_category
    order = _time_order(event_user, time, user_ids.shape[0])
    counts = np.bincount(event_user, minlength=user_ids.shape[0])
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    del event_user
    sorted_items = event_item[order]
    del event_item, dense_all
    sorted_time = time[order]
    del time

    codes = None
    if behaviours is not None:
        codes = require_array("behaviours", behaviours)
        if not np.issubdtype(codes.dtype, np.integer):
            raise TypeError(f"behaviours: expected integer codes, got {codes.dtype}")
        if codes.shape != sorted_time.shape:
            raise ValueError(f"behaviours: expected shape {sorted_time.shape}, got {codes.shape}")
        codes = codes.astype(np.int8)[order]
    del order
    profile, profile_values = _profile(profile_users, profile_fields, user_ids)
    return Interactions(
        user_offsets=offsets,
        items=sorted_items,
        timestamps=sorted_time,
        item_category=item_category,
        user_ids=user_ids,
        item_ids=item_ids,
        category_ids=category_ids,
        unknown_category=unknown,
        behaviours=codes,
        behaviour_names=tuple(behaviour_names),
        profile=profile,
        profile_values=profile_values,
        source=source,
    )


def _profile(
    profile_users: Any, profile_fields: Mapping[str, Any] | None, user_ids: RawIds
) -> tuple[dict[str, IntArray], dict[str, RawIds]]:
    if profile_fields is None or not profile_fields:
        return {}, {}
    if profile_users is None:
        raise ValueError("profile_users: required with profile_fields")
    profile: dict[str, IntArray] = {}
    values: dict[str, RawIds] = {}
    for name, column in profile_fields.items():
        raw, missing = _attach("profile_users", profile_users, column, user_ids, f"profile_fields[{name!r}]")
        known, codes = dense_ids(f"profile_fields[{name!r}]", raw[~missing])
        known, unknown = _with_unknown(f"profile field {name!r}", known, missing, "unknown")
        field_codes = np.full(user_ids.shape[0], -1 if unknown is None else unknown, dtype=np.int64)
        field_codes[~missing] = codes
        profile[name], values[name] = field_codes, known
    return profile, values


@dataclass(frozen=True)
class SyntheticInteractions:
    """The synthetic generator's data in the data model, plus what the model has no field for.

    `interactions`: every user's sequence followed by its held-out event (so the held-out event is each
    user's last event, the test target of leave-last-out); ids are the generator's own (dense = raw), the
    timestamp of an event is its position in the user's sequence. `visit_start` (E,) marks the first event
    of every visit in the same event order (True at each held-out event, which opens a visit).
    """

    interactions: Interactions
    visit_start: BoolArray


def from_synthetic(data: SyntheticData) -> SyntheticInteractions:
    """Convert `SyntheticData` into the data model without changing any id (spec/data_model.md)."""
    _check_synthetic(data)
    lengths = data.lengths()
    num_users = data.num_users
    offsets = np.concatenate([[0], np.cumsum(lengths + 1)]).astype(np.int64)
    last = offsets[1:] - 1
    sequence_slots = np.ones(int(offsets[-1]), dtype=bool)
    sequence_slots[last] = False
    items = np.empty(int(offsets[-1]), dtype=np.int64)
    items[sequence_slots] = data.events
    items[last] = data.heldout
    visit_start = np.empty(int(offsets[-1]), dtype=bool)
    visit_start[sequence_slots] = data.visit_start
    visit_start[last] = True
    position = np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1], lengths + 1)
    log = Interactions(
        user_offsets=offsets,
        items=items,
        timestamps=position,
        item_category=data.item_category.astype(np.int64),
        user_ids=np.arange(num_users, dtype=np.int64),
        item_ids=np.arange(data.num_items, dtype=np.int64),
        category_ids=np.arange(data.num_categories, dtype=np.int64),
        source=f"synthetic (seed {data.config.seed})",
    )
    return SyntheticInteractions(log, visit_start)


def _check_synthetic(data: SyntheticData) -> None:
    """Every array of `data` has the generator's dtype and shape, ids in range (a hand-edited or
    corrupted `SyntheticData` is refused by field name, not met deep inside the conversion)."""
    num_items = _require_int_array("item_category", data.item_category).shape[0]
    _require_codes("item_category", data.item_category, num_items, data.num_categories)
    num_users = _require_int_array("offsets", data.offsets).shape[0] - 1
    num_events = data.events.shape[0] if isinstance(data.events, np.ndarray) else 0
    if num_users < 0 or data.offsets[0] != 0 or data.offsets[-1] != num_events or np.any(
        data.offsets[1:] < data.offsets[:-1]
    ):
        raise ValueError(f"offsets: expected non-decreasing offsets from 0 to the {num_events} events")
    _require_codes("events", data.events, num_events, num_items)
    _require_codes("heldout", data.heldout, num_users, num_items)
    visit_start = require_array("visit_start", data.visit_start)
    if visit_start.dtype != np.bool_:
        raise TypeError(f"visit_start: expected a bool array, got {visit_start.dtype}")
    if visit_start.shape != (num_events,):
        raise ValueError(f"visit_start: expected shape ({num_events},), got {visit_start.shape}")
    floats = {
        "item_latent": (num_items, data.config.latent_dim),
        "item_popularity": (num_items,),
        "category_affinity": (data.num_categories, data.num_categories),
        "heldout_distribution": (num_users, data.num_categories),
    }
    for name, shape in floats.items():
        value = require_array(name, getattr(data, name))
        if value.dtype != np.float64:
            raise TypeError(f"{name}: expected float64, got {value.dtype}")
        if value.shape != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name}: expected finite values")
