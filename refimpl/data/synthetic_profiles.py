"""Planted data whose user profiles matter, for UMI (spec/data.md, "Profile-planted data").

A catalogue of items, each with a category, a style and a popularity, and users with categorical
profile fields of three kinds:
- `household` decides which of a user's behaviours reveal nothing: every household shares a few
  distractor categories (a shared account's other members), whose events are uniform noise for the
  households that have them and real interests for users of other households. Telling a
  behaviour's worth needs the behaviour AND the profile: UMI's user-guided attention (eq. 2).
- `style_a`, `style_b` decide which items of an interest the user picks: an even category's
  events follow the user's `style_a`, an odd one's `style_b`, so each interest needs a different
  profile field: UMI's interest refinement (eq. 7-9).
- `noise_j` fields are independent of everything.
Every event carries its behaviour type (`BEHAVIOURS`): "household" for a distractor, "interest"
otherwise; UMI's pipeline with `target_behaviour="interest"` keeps household events out of the
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
    "INTEREST_BEHAVIOUR",
    "PROFILE_QUICK_CONFIG",
    "ProfileData",
    "ProfileDataConfig",
    "corrupt_profiles",
    "generate_profile_data",
    "validate_profile_config",
]

HOUSEHOLD = "household"
STYLE_FIELDS = ("style_a", "style_b")
INTEREST_BEHAVIOUR = "interest"
BEHAVIOURS = (INTEREST_BEHAVIOUR, HOUSEHOLD)
"""The log's behaviour types: an interest event (code 0) or a household member's (code 1). Only
interest events are targets (`UMIPipelineConfig.target_behaviour`): household events are history."""


@dataclass(frozen=True)
class ProfileDataConfig:
    """Sizes and knobs of the process (symbols of spec/data.md, "Profile-planted data")."""

    num_users: int = 1_500  # [U]
    num_items: int = 3_706  # [I] ml-1m's catalogue size, so UMI's cut-offs keep their share
    num_categories: int = 18  # [C] ml-1m's genres
    num_styles: int = 4  # [S] values of each style field and of an item's style
    num_households: int = 6  # [H] values of the household field
    distractors_per_household: int = 3  # [m] |D_h|
    min_interests: int = 2  # [k_min]
    max_interests: int = 3  # [k_max]
    interest_concentration: float = 2.0  # [a]
    distractor_rate: float = 0.4  # [rho] share of a user's events from its household's distractors
    style_fidelity: float = 0.8  # [phi] chance an interest event follows the profile's style
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
    distractors: IntArray  # (H, m) D_h, the distractor categories of each household
    interests: tuple[IntArray, ...]  # per user: its interest categories (k_u,)
    distractor_event: np.ndarray  # (E,) bool, in the log's event order: the event is a distractor


def validate_profile_config(cfg: ProfileDataConfig) -> None:
    """Refuse a config the generator cannot honour, naming the field."""
    for name in ("num_users", "num_items", "num_categories", "num_styles", "num_households",
                 "distractors_per_household", "min_interests", "max_interests", "min_length",
                 "max_length", "noise_values"):
        require_positive_int(f"config.{name}", getattr(cfg, name))
    require_int("config.num_noise_fields", cfg.num_noise_fields, low=0)
    require_int("config.seed", cfg.seed, low=0)
    if cfg.num_items < cfg.num_categories * cfg.num_styles:
        raise ValueError(f"config.num_items: need an item for every (category, style) pair, "
                         f"{cfg.num_categories * cfg.num_styles}, got {cfg.num_items}")
    if cfg.max_length < cfg.min_length:
        raise ValueError(f"config.max_length: {cfg.max_length} < min_length {cfg.min_length}")
    if cfg.min_length < 2:
        raise ValueError(f"config.min_length: a user needs a history and a target, got {cfg.min_length}")
    if cfg.max_interests < cfg.min_interests:
        raise ValueError(f"config.max_interests: {cfg.max_interests} < min_interests {cfg.min_interests}")
    if cfg.distractors_per_household + cfg.max_interests > cfg.num_categories:
        raise ValueError(
            f"config.distractors_per_household: m + k_max must leave room in the {cfg.num_categories} "
            f"categories, got {cfg.distractors_per_household} + {cfg.max_interests}")
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


def generate_profile_data(config: ProfileDataConfig) -> ProfileData:
    """Draw the catalogue, the households' distractors, the users' profiles and their logs."""
    validate_profile_config(config)
    cfg = config
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    c_count, s_count = cfg.num_categories, cfg.num_styles
    # (P1) every (category, style) pair gets an item, the rest spread uniformly, ids shuffled
    pairs = np.arange(c_count * s_count)
    cell = np.concatenate([pairs, rng.integers(0, pairs.shape[0], size=cfg.num_items - pairs.shape[0])])
    rng.shuffle(cell)
    category, style = (cell // s_count).astype(np.int64), (cell % s_count).astype(np.int64)
    popularity = cfg.popularity_scale * rng.standard_normal(cfg.num_items)
    by_category, category_size = _padded([np.flatnonzero(category == c) for c in range(c_count)])
    by_cell, cell_size = _padded([np.flatnonzero(cell == p) for p in pairs])
    # (P2) each household's distractor categories
    distractors = np.stack([rng.choice(c_count, size=cfg.distractors_per_household, replace=False)
                            for _ in range(cfg.num_households)]).astype(np.int64)
    # (P3) profiles, uniform and independent
    household = rng.integers(0, cfg.num_households, size=cfg.num_users)
    styles = rng.integers(0, s_count, size=(cfg.num_users, len(STYLE_FIELDS)))
    noise = rng.integers(0, cfg.noise_values, size=(cfg.num_users, cfg.num_noise_fields))
    users, items, distractor_flags, interests = [], [], [], []
    for u in range(cfg.num_users):
        # (P4) interests outside the household's distractors, weights, length
        allowed = np.setdiff1d(np.arange(c_count), distractors[household[u]])
        k = int(rng.integers(cfg.min_interests, cfg.max_interests + 1))
        chosen = rng.choice(allowed, size=k, replace=False).astype(np.int64)
        weights = rng.dirichlet(np.full(k, cfg.interest_concentration))
        length = int(rng.integers(cfg.min_length, cfg.max_length + 1))
        # (P5) each event: a distractor (uniform item of a distractor category) or an interest
        # event (category by the weights, style by the category's style field, item by popularity)
        is_distractor = rng.random(length) < cfg.distractor_rate
        distractor_category = distractors[household[u]][rng.integers(0, cfg.distractors_per_household, length)]
        interest_category = chosen[rng.choice(k, size=length, p=weights)]
        follows = rng.random(length) < cfg.style_fidelity
        event_style = np.where(follows, styles[u, interest_category % len(STYLE_FIELDS)],
                               rng.integers(0, s_count, size=length))
        # without replacement, as a rating log: a cell's items in the order of popularity + Gumbel
        # noise (sampling proportional to exp(b_i) without replacement), a distractor category's in
        # uniformly random order; the j-th event of a cell takes its j-th item (wrapping around only
        # when a user has more events in a cell than it has items)
        cell_row = interest_category * s_count + event_style
        taste = popularity + rng.gumbel(size=cfg.num_items)
        shuffle = rng.random(cfg.num_items)
        interest_item = _without_replacement(by_cell, cell_size, cell_row, taste)
        distractor_item = _without_replacement(by_category, category_size, distractor_category, shuffle)
        users.append(np.full(length, u, dtype=np.int64))
        items.append(np.where(is_distractor, distractor_item, interest_item))
        distractor_flags.append(is_distractor)
        interests.append(np.sort(chosen))
    event_users = np.concatenate(users)
    fields = {HOUSEHOLD: household, STYLE_FIELDS[0]: styles[:, 0], STYLE_FIELDS[1]: styles[:, 1]}
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
    return ProfileData(cfg, log, style, distractors, tuple(interests), np.concatenate(distractor_flags))


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
