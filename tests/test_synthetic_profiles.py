"""The profile-planted generator (spec/data.md, "Profile-planted data"): validated, seeded, and the
planted mechanism is what the equations say; corrupt_profiles changes exactly its share."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from refimpl.data.synthetic_profiles import (
    PROFILE_QUICK_CONFIG,
    ProfileDataConfig,
    corrupt_profiles,
    generate_profile_data,
    validate_profile_config,
)

SMALL = replace(PROFILE_QUICK_CONFIG, num_users=120)


def test_same_seed_same_log_other_seed_other_log() -> None:
    a, b = generate_profile_data(SMALL), generate_profile_data(SMALL)
    assert np.array_equal(a.interactions.items, b.interactions.items)
    assert all(np.array_equal(a.interactions.profile[f], b.interactions.profile[f]) for f in a.interactions.profile)
    c = generate_profile_data(replace(SMALL, seed=1))
    assert not np.array_equal(a.interactions.items[:200], c.interactions.items[:200])


def test_planted_mechanism() -> None:
    data = generate_profile_data(SMALL)
    log = data.interactions
    owner = log.event_users()
    audience = log.profile["audience"]
    item_audience = data.item_audience[log.items]
    category = log.item_category[log.items]
    # an event is the user's own exactly when its item's audience is the user's audience field
    assert np.array_equal(item_audience != audience[owner], data.distractor_event)
    assert np.array_equal(item_audience[data.distractor_event], data.co_audience[owner[data.distractor_event]])
    assert abs(data.distractor_event.mean() - SMALL.distractor_rate) < 0.03
    # own events in the user's interests, co-user events in the co-user's, and the two are disjoint
    for u, (own, co) in enumerate(zip(data.interests, data.co_interests, strict=True)):
        mine = owner == u
        assert np.isin(category[mine & ~data.distractor_event], own).all()
        assert np.isin(category[mine & data.distractor_event], co).all()
        assert not np.isin(own, co).any()
    # the co-user's categories are not a function of the profile: every audience meets every category
    co_categories = np.zeros((SMALL.num_audiences, SMALL.num_categories), dtype=bool)
    for u, co in enumerate(data.co_interests):
        co_categories[audience[u], co] = True
    assert co_categories.all()
    # an own event's style is the user's style field of the category's parity, w.p. ~ phi + (1-phi)/S
    interest = ~data.distractor_event
    fields = np.stack([log.profile["style_a"], log.profile["style_b"]], axis=1)
    wanted = fields[owner[interest], category[interest] % 2]
    match = (data.item_style[log.items[interest]] == wanted).mean()
    expected = SMALL.style_fidelity + (1 - SMALL.style_fidelity) / SMALL.num_styles
    assert abs(match - expected) < 0.03
    # negative control: the co-user's events do not follow the user's style fields beyond chance
    co_match = (data.item_style[log.items[~interest]] == fields[owner[~interest], category[~interest] % 2]).mean()
    assert abs(co_match - 1 / SMALL.num_styles) < 0.05
    # noise fields and the log's own invariants
    assert {"noise_0", "noise_1"} <= set(log.profile)
    assert log.num_items == SMALL.num_items and log.num_users == SMALL.num_users


def test_no_repeats_while_a_cell_has_items() -> None:
    # the default catalogue has ~50 items per (category, style, audience) cell: more than a user's events in one
    log = generate_profile_data(replace(ProfileDataConfig(), num_users=120)).interactions
    pairs = log.event_users() * log.num_items + log.items
    assert 1 - np.unique(pairs).size / pairs.size < 0.02


@pytest.mark.parametrize(("field", "value", "error"), [
    ("num_users", 0, ValueError), ("num_items", 10, ValueError), ("max_length", 5, ValueError),
    ("min_length", 1, ValueError), ("max_interests", 1, ValueError), ("max_interests", 10, ValueError),
    ("num_audiences", 1, ValueError),
    ("distractor_rate", 1.0, ValueError), ("distractor_rate", float("nan"), ValueError),
    ("style_fidelity", 1.5, ValueError), ("interest_concentration", 0.0, ValueError),
    ("num_noise_fields", -1, ValueError), ("seed", "0", TypeError), ("num_styles", True, TypeError),
])
def test_config_validation_names_the_field(field: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=f"config.{field}"):
        validate_profile_config(replace(ProfileDataConfig(), **{field: value}))


def test_corrupt_profiles_changes_exactly_its_share() -> None:
    log = generate_profile_data(SMALL).interactions
    noisy = corrupt_profiles(log, 0.1, np.random.default_rng(0))
    for name in log.profile:
        changed = (noisy.profile[name] != log.profile[name]).mean()
        assert changed == pytest.approx(round(0.1 * log.num_users) / log.num_users)
    assert np.array_equal(noisy.items, log.items)
    # negative control: share 0 changes nothing
    same = corrupt_profiles(log, 0.0, np.random.default_rng(0))
    assert all(np.array_equal(same.profile[f], log.profile[f]) for f in log.profile)
    with pytest.raises(ValueError, match="share"):
        corrupt_profiles(log, 1.5, np.random.default_rng(0))
    with pytest.raises(TypeError, match="rng"):
        corrupt_profiles(log, 0.1, 0)  # type: ignore[arg-type]
