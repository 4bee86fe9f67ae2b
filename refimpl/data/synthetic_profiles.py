"""Planted data whose user profiles matter, for UMI (spec/data.md, "Profile-planted data").

A catalogue of items, each with a category, a style, an audience and a popularity, and users with
categorical profile fields of three kinds:
- `audience` decides which of a user's behaviours are its own: every account is shared with a
  co-user of another audience whose events land in the user's history (never its targets). An
  event is the user's own exactly when its item's audience equals the user's `audience` field: a
  profile x item-attribute interaction. The co-user's categories are drawn at random per user, so
  neither the item nor the profile alone says which behaviours count, and once the behaviours are
  summed into interests their categories and audiences can no longer be paired up: only a weight
  per behaviour conditioned on the profile (UMI's user-guided attention, eq. 2) can mute them;
  concatenating the profile after routing (MIND) cannot un-pollute an interest.
- `style_a`, `style_b` decide which items of an interest the user picks: an even category's
  events follow the user's `style_a`, an odd one's `style_b`, so each interest needs a different
  profile field: UMI's interest refinement (eq. 7-9).
- `noise_j` fields are independent of everything.
Every event carries its behaviour type (`BEHAVIOURS`): "co-user" for a co-user's event, "interest"
otherwise; UMI's pipeline with `target_behaviour="interest"` keeps co-user events out of the
targets (spec/data.md (P6)), so they are history only and a model gains by muting them.

`generate_profile_data(config)` returns the log as an `Interactions` (with the profile) and the
planted truth; `corrupt_profiles(interactions, share, rng)` replaces a share of the profile values
(UMI Table 5). Every draw comes from one `numpy.random.Generator(PCG64(config.seed))`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from refimpl._check import IntArray, require_int, require_positive_int, require_real
from refimpl.data.interactions import Interactions, build_interactions

__all__ = [
    "BEHAVIOURS",
    "CO_USER_BEHAVIOUR",
    "INTEREST_BEHAVIOUR",
    "PROFILE_QUICK_CONFIG",
    "ProfileData",
    "ProfileDataConfig",
    "corrupt_profiles",
    "generate_profile_data",
    "validate_profile_config",
]

AUDIENCE = "audience"
STYLE_FIELDS = ("style_a", "style_b")
INTEREST_BEHAVIOUR = "interest"
CO_USER_BEHAVIOUR = "co-user"
BEHAVIOURS = (INTEREST_BEHAVIOUR, CO_USER_BEHAVIOUR)
"""The log's behaviour types: the user's own event (code 0) or its co-user's (code 1). Only the
user's own events are targets (`UMIPipelineConfig.target_behaviour`): co-user events are history."""


@dataclass(frozen=True)
class ProfileDataConfig:
    """Sizes and knobs of the process (symbols of spec/data.md, "Profile-planted data")."""

    num_users: int = 1_500  # [U]
    num_items: int = 3_706  # [I] ml-1m's catalogue size, so UMI's cut-offs keep their share
    num_categories: int = 18  # [C] ml-1m's genres
    num_styles: int = 2  # [S] values of each style field and of an item's style
    num_audiences: int = 2  # [A] values of the audience field and of an item's audience
    min_interests: int = 2  # [k_min] a user's, and its co-user's, number of interest categories
    max_interests: int = 3  # [k_max]
    interest_concentration: float = 2.0  # [a]
    distractor_rate: float = 0.5  # [rho] share of a user's events that are its co-user's
    style_fidelity: float = 0.8  # [phi] chance an event follows its author's style field
    popularity_scale: float = 1.0  # [sigma_b]
    min_length: int = 40  # [T_min]
    max_length: int = 100  # [T_max]
    num_noise_fields: int = 2  # [n_0]
    noise_values: int = 6  # [V_0] values of each noise field
    seed: int = 0


PROFILE_QUICK_CONFIG = ProfileDataConfig(num_users=400, num_items=600, num_categories=12,
                                         min_length=30, max_length=60)
"""Seconds end to end: the tests and `refimpl demo umi --quick`."""


@dataclass(frozen=True)
class ProfileData:
    """The log (with the profile fields) and the planted truth, kept for tests and diagnostics,
    never for training."""

    config: ProfileDataConfig
    interactions: Interactions
    item_style: IntArray  # (I,)
    item_audience: IntArray  # (I,)
    interests: tuple[IntArray, ...]  # per user: its interest categories (k_u,)
    co_interests: tuple[IntArray, ...]  # per user: its co-user's interest categories (k'_u,)
    co_audience: IntArray  # (U,) the co-user's audience
    distractor_event: np.ndarray  # (E,) bool, in the log's event order: the event is the co-user's


def validate_profile_config(cfg: ProfileDataConfig) -> None:
    """Refuse a config the generator cannot honour, naming the field."""
    for name in ("num_users", "num_items", "num_categories", "num_styles", "num_audiences", "min_interests",
                 "max_interests", "min_length", "max_length", "noise_values"):
        require_positive_int(f"config.{name}", getattr(cfg, name))
    require_int("config.num_noise_fields", cfg.num_noise_fields, low=0)
    require_int("config.seed", cfg.seed, low=0)
    cells = cfg.num_categories * cfg.num_styles * cfg.num_audiences
    if cfg.num_items < cells:
        raise ValueError(f"config.num_items: need an item for every (category, style, audience) cell, "
                         f"{cells}, got {cfg.num_items}")
    if cfg.num_audiences < 2:
        raise ValueError(f"config.num_audiences: the co-user needs another audience than the user's, got "
                         f"{cfg.num_audiences}")
    if cfg.max_length < cfg.min_length:
        raise ValueError(f"config.max_length: {cfg.max_length} < min_length {cfg.min_length}")
    if cfg.min_length < 2:
        raise ValueError(f"config.min_length: a user needs a history and a target, got {cfg.min_length}")
    if cfg.max_interests < cfg.min_interests:
        raise ValueError(f"config.max_interests: {cfg.max_interests} < min_interests {cfg.min_interests}")
    if 2 * cfg.max_interests > cfg.num_categories:
        raise ValueError(f"config.max_interests: a user's and its co-user's interests are disjoint, 2 k_max must fit "
                         f"in the {cfg.num_categories} categories, got 2 x {cfg.max_interests}")
    require_real("config.interest_concentration", cfg.interest_concentration, low=0.0, low_open=True)
    require_real("config.distractor_rate", cfg.distractor_rate, low=0.0, high=1.0)
    if cfg.distractor_rate == 1.0:
        raise ValueError("config.distractor_rate: expected < 1 (a user needs interest events), got 1.0")
    require_real("config.style_fidelity", cfg.style_fidelity, low=0.0, high=1.0)
    require_real("config.popularity_scale", cfg.popularity_scale, low=0.0)


def _padded(groups: list[IntArray]) -> tuple[IntArray, IntArray]:
    """Rows of item ids padded with -1, and each row's count."""
    width = max(g.shape[0] for g in groups)
    members = np.full((len(groups), width), -1, dtype=np.int64)
    for row, group in enumerate(groups):
        members[row, : group.shape[0]] = group
    return members, np.array([g.shape[0] for g in groups], dtype=np.int64)


def _without_replacement(members: IntArray, sizes: IntArray, rows: IntArray, keys: np.ndarray) -> IntArray:
    """For events drawing from groups `rows` (T,): the j-th event of a group takes the group's item of
    j-th highest key (j modulo the group's size)."""
    result = np.empty(rows.shape[0], dtype=np.int64)
    for row in np.unique(rows):
        events = np.flatnonzero(rows == row)
        group = members[row, : sizes[row]]
        order = group[np.argsort(-keys[group], kind="stable")]
        result[events] = order[np.arange(events.shape[0]) % group.shape[0]]
    return result


def _interests(rng: np.random.Generator, cfg: ProfileDataConfig, allowed: IntArray) -> tuple[IntArray, np.ndarray]:
    """(P4) k ~ Uniform{k_min..k_max} categories of `allowed` without replacement, and their weights."""
    k = int(rng.integers(cfg.min_interests, cfg.max_interests + 1))
    chosen = rng.choice(allowed, size=k, replace=False).astype(np.int64)
    return chosen, rng.dirichlet(np.full(k, cfg.interest_concentration))


def generate_profile_data(config: ProfileDataConfig) -> ProfileData:
    """Draw the catalogue, the users' profiles and co-users, and their logs."""
    validate_profile_config(config)
    cfg = config
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    c_count, s_count, a_count = cfg.num_categories, cfg.num_styles, cfg.num_audiences
    # (P1) every (category, style, audience) cell gets an item, the rest spread uniformly, ids shuffled
    cells = np.arange(c_count * s_count * a_count)
    cell = np.concatenate([cells, rng.integers(0, cells.shape[0], size=cfg.num_items - cells.shape[0])])
    rng.shuffle(cell)
    category = (cell // (s_count * a_count)).astype(np.int64)
    style = ((cell // a_count) % s_count).astype(np.int64)
    audience = (cell % a_count).astype(np.int64)
    popularity = cfg.popularity_scale * rng.standard_normal(cfg.num_items)
    by_cell, cell_size = _padded([np.flatnonzero(cell == p) for p in cells])
    # (P2) profiles, uniform and independent
    own_audience = rng.integers(0, a_count, size=cfg.num_users)
    styles = rng.integers(0, s_count, size=(cfg.num_users, len(STYLE_FIELDS)))
    noise = rng.integers(0, cfg.noise_values, size=(cfg.num_users, cfg.num_noise_fields))
    # (P3) each user's co-user: another audience, its own style fields
    co_audience = (own_audience + rng.integers(1, a_count, size=cfg.num_users)) % a_count
    co_styles = rng.integers(0, s_count, size=(cfg.num_users, len(STYLE_FIELDS)))
    users, items, distractor_flags, interests, co_interests = [], [], [], [], []
    every = np.arange(c_count, dtype=np.int64)
    for u in range(cfg.num_users):
        # (P4) the user's interests, then the co-user's among the other categories, and the length
        chosen, weights = _interests(rng, cfg, every)
        co_chosen, co_weights = _interests(rng, cfg, np.setdiff1d(every, chosen))
        length = int(rng.integers(cfg.min_length, cfg.max_length + 1))
        # (P5) each event: the co-user's with probability rho, else the user's own; its author's
        # category by the author's weights, style by the author's field of the category's parity
        # (w.p. phi), audience the author's; the item from that cell
        is_distractor = rng.random(length) < cfg.distractor_rate
        own_category = chosen[rng.choice(chosen.shape[0], size=length, p=weights)]
        co_category = co_chosen[rng.choice(co_chosen.shape[0], size=length, p=co_weights)]
        event_category = np.where(is_distractor, co_category, own_category)
        author_styles = np.where(is_distractor, co_styles[u, event_category % 2], styles[u, event_category % 2])
        follows = rng.random(length) < cfg.style_fidelity
        event_style = np.where(follows, author_styles, rng.integers(0, s_count, size=length))
        event_audience = np.where(is_distractor, co_audience[u], own_audience[u])
        # without replacement, as a rating log: a cell's items in the order of popularity + Gumbel
        # noise (sampling proportional to exp(b_i) without replacement); the j-th event of a cell
        # takes its j-th item (wrapping around only when a user has more events in a cell than it
        # has items)
        cell_row = (event_category * s_count + event_style) * a_count + event_audience
        taste = popularity + rng.gumbel(size=cfg.num_items)
        users.append(np.full(length, u, dtype=np.int64))
        items.append(_without_replacement(by_cell, cell_size, cell_row, taste))
        distractor_flags.append(is_distractor)
        interests.append(np.sort(chosen))
        co_interests.append(np.sort(co_chosen))
    event_users = np.concatenate(users)
    fields = {AUDIENCE: own_audience, STYLE_FIELDS[0]: styles[:, 0], STYLE_FIELDS[1]: styles[:, 1]}
    fields.update({f"noise_{j}": noise[:, j] for j in range(cfg.num_noise_fields)})
    # the event's position in its user's log is its timestamp: build_interactions keeps the order
    position = np.arange(event_users.shape[0]) - np.repeat(
        np.concatenate([[0], np.cumsum([a.shape[0] for a in users])[:-1]]), [a.shape[0] for a in users])
    log = build_interactions(
        event_users, np.concatenate(items), position.astype(np.int64),
        behaviours=np.concatenate(distractor_flags).astype(np.int8), behaviour_names=BEHAVIOURS,
        catalogue_items=np.arange(cfg.num_items, dtype=np.int64), catalogue_categories=category,
        profile_users=np.arange(cfg.num_users, dtype=np.int64),
        profile_fields={name: values.astype(np.int64) for name, values in fields.items()},
        source=f"profile-planted synthetic (seed {cfg.seed})",
    )
    return ProfileData(cfg, log, style, audience, tuple(interests), tuple(co_interests),
                       co_audience.astype(np.int64), np.concatenate(distractor_flags))


def corrupt_profiles(interactions: Interactions, share: float, rng: np.random.Generator) -> Interactions:
    """The log with `share` of every profile field's values replaced (UMI Table 5).

    Per field independently: round(share * U) users drawn without replacement get a different value
    of the field, uniform over the others (a field with one value stays as it is). Events, items and
    every other field of the log are unchanged.
    """
    if not isinstance(interactions, Interactions):
        raise TypeError(f"interactions: expected an Interactions, got {type(interactions).__name__}")
    share = require_real("share", share, low=0.0, high=1.0)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    users = interactions.num_users
    profile = {}
    for name in sorted(interactions.profile):
        codes = interactions.profile[name].copy()
        values = interactions.profile_values[name].shape[0]
        chosen = rng.choice(users, size=int(round(share * users)), replace=False)
        if values > 1:
            codes[chosen] = (codes[chosen] + rng.integers(1, values, size=chosen.shape[0])) % values
        profile[name] = codes
    return replace(interactions, profile=profile)
