"""The planted-interest generator (spec/data.md): seeded, well-formed, and informative."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl.data.synthetic import QUICK_CONFIG, SyntheticConfig, SyntheticData, generate

TINY = SyntheticConfig(
    num_categories=5, num_items=60, num_users=12, latent_dim=4, min_length=30, max_length=60,
    min_interests=2, max_interests=3, mean_visit_length=5.0,
)


def structure_problems(data: SyntheticData) -> list[str]:
    """Every structural invariant of spec/data.md that `data` breaks."""
    cfg = data.config
    problems = []
    if data.offsets[0] != 0 or data.offsets[-1] != data.events.shape[0]:
        problems.append("offsets do not span the events")
    if np.any(data.item_category < 0) or np.any(data.item_category >= cfg.num_categories):
        problems.append("item category out of range")
    if np.bincount(data.item_category, minlength=cfg.num_categories).min() == 0:
        problems.append("an empty category")
    if np.any(data.events < 0) or np.any(data.events >= cfg.num_items):
        problems.append("event id out of range")
    if np.any(data.heldout < 0) or np.any(data.heldout >= cfg.num_items):
        problems.append("held-out id out of range")
    for u in range(data.num_users):
        seq = data.sequence(u)
        starts = data.visit_start[data.offsets[u] : data.offsets[u + 1]]
        if seq.shape[0] == 0 or not starts[0]:
            problems.append(f"user {u}: no first visit")
            continue
        visit = np.cumsum(starts) - 1
        categories = data.item_category[seq]
        first_category = categories[np.flatnonzero(starts)][visit]
        if np.any(categories != first_category):
            problems.append(f"user {u}: a visit spans two categories")
    return problems


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def taste_signal(data: SyntheticData) -> float:
    """How much better a user's own history in the held-out category predicts the held-out item
    than another user's history in that category: mean over users of
    cos(own mean latent, held-out latent) - cos(other's mean latent, held-out latent)."""
    x = data.item_latent
    gaps = []
    for u in range(data.num_users):
        c = data.heldout_category[u]
        own = data.sequence(u)[data.item_category[data.sequence(u)] == c]
        other_user = (u + 1) % data.num_users
        other = data.sequence(other_user)[data.item_category[data.sequence(other_user)] == c]
        if own.size == 0 or other.size == 0:
            continue
        target = x[data.heldout[u]]
        gaps.append(_cosine(x[own].mean(axis=0), target) - _cosine(x[other].mean(axis=0), target))
    return float(np.mean(gaps))


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b = generate(TINY), generate(TINY)
    for name in ("events", "offsets", "visit_start", "heldout", "item_category", "item_latent"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = generate(replace(TINY, seed=1))
    assert not np.array_equal(a.item_latent, c.item_latent)


@given(
    seed=st.integers(0, 2**16),
    categories=st.integers(1, 6),
    users=st.integers(1, 6),
    visit=st.floats(1.0, 8.0),
    rho=st.floats(0.0, 1.0),
    jump=st.floats(0.0, 1.0),
)
def test_structure_holds_for_any_config(
    seed: int, categories: int, users: int, visit: float, rho: float, jump: float
) -> None:
    cfg = replace(
        TINY, seed=seed, num_categories=categories, num_users=users, mean_visit_length=visit,
        long_term_rate=rho, short_term_jump=jump, min_interests=1,
        max_interests=min(3, categories),
    )
    data = generate(cfg)
    assert structure_problems(data) == []
    for u in range(data.num_users):
        visits = int(data.visit_start[data.offsets[u] : data.offsets[u + 1]].sum())
        assert data.lengths()[u] <= cfg.max_length or visits == 1


def test_structure_check_catches_a_visit_spanning_two_categories() -> None:
    data = generate(TINY)
    events = data.events.copy()
    seq_start = int(data.offsets[0])
    visit_end = seq_start + int(np.flatnonzero(data.visit_start[seq_start + 1 :])[0]) + 1
    wrong = np.flatnonzero(data.item_category != data.item_category[events[visit_end - 1]])[0]
    events[visit_end - 1] = wrong
    broken = replace(data, events=events)
    assert any("spans two categories" in p for p in structure_problems(broken))


def test_long_term_interests_persist_and_the_held_out_item_follows_the_users_taste() -> None:
    data = generate(QUICK_CONFIG)
    for u in range(data.num_users):
        assert set(data.interests[u].tolist()) <= set(range(data.num_categories))
        assert np.isclose(data.interest_weights[u].sum(), 1.0)
    assert taste_signal(data) > 0.1


def test_taste_signal_is_absent_when_taste_does_not_choose_items() -> None:
    """Negative control: with kappa ~ 0 items are drawn by popularity only; the own-history
    advantage vanishes, so the informativeness check above could fail."""
    flat = generate(replace(QUICK_CONFIG, taste_sharpness=1e-6, popularity_scale=0.0))
    assert abs(taste_signal(flat)) < 0.05


def test_the_whole_sequence_holds_the_target_category_more_often_than_its_recent_half() -> None:
    data = generate(QUICK_CONFIG)
    full = half = 0
    for u in range(data.num_users):
        seq = data.sequence(u)
        c = data.heldout_category[u]
        full += bool(np.any(data.item_category[seq] == c))
        half += bool(np.any(data.item_category[seq[seq.shape[0] // 2 :]] == c))
    assert full - half >= 0.04 * data.num_users


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_items", 3, "num_items"),
        ("max_length", 10, "max_length"),
        ("max_interests", 9, "max_interests"),
        ("long_term_rate", 1.5, "long_term_rate"),
        ("mean_visit_length", 0.5, "mean_visit_length"),
        ("taste_sharpness", 0.0, "taste_sharpness"),
        ("num_users", 0, "num_users"),
        ("transition_rank", 0, "transition_rank"),
        ("transition_strength", -1.0, "transition_strength"),
        ("transition_strength", float("inf"), "transition_strength"),
    ],
)
def test_bad_config_is_refused_by_name(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate(replace(TINY, **{field: value}))


FLOAT_FIELDS = ("interest_concentration", "long_term_rate", "mean_visit_length", "taste_sharpness",
                "popularity_scale", "category_skew", "short_term_jump", "transition_strength")


@pytest.mark.parametrize("field", FLOAT_FIELDS)
def test_nan_in_any_float_field_is_refused_by_name(field: str) -> None:
    """Issue 15 item 9: NaN passes comparisons such as `x <= 0`; every float field is checked finite."""
    with pytest.raises(ValueError, match=f"SyntheticConfig.{field}: expected a finite number"):
        generate(replace(TINY, **{field: float("nan")}))


@pytest.mark.parametrize("field", [*FLOAT_FIELDS, "seed"])
def test_a_string_in_a_numeric_field_is_a_type_error_naming_it(field: str) -> None:
    with pytest.raises(TypeError, match=f"SyntheticConfig.{field}"):
        generate(replace(TINY, **{field: "2"}))


def transition_affinity_correlation(data: SyntheticData) -> float:
    """Correlation, over the pairs of distinct categories (c, c'), between the planted affinity
    A[c, c'] and log(P(next visit in c' | visit in c) + 1e-3), the frequencies counted over every
    pair of consecutive visits of every user."""
    c = data.num_categories
    counts = np.zeros((c, c))
    for u in range(data.num_users):
        categories = data.item_category[data.sequence(u)]
        starts = np.flatnonzero(data.visit_start[data.offsets[u] : data.offsets[u + 1]])[1:]
        np.add.at(counts, (categories[starts - 1], categories[starts]), 1.0)
    conditional = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    distinct = ~np.eye(c, dtype=bool)
    return float(np.corrcoef(np.log(conditional[distinct] + 1e-3), data.category_affinity[distinct])[0, 1])


def test_visits_follow_the_planted_category_affinity() -> None:
    """eqs. D3a/D3b: after a visit in c, categories c' with a high A[c, c'] come more often."""
    assert transition_affinity_correlation(generate(QUICK_CONFIG)) > 0.5


def test_negative_control_without_transition_strength_the_affinity_says_nothing() -> None:
    data = generate(replace(QUICK_CONFIG, transition_strength=0.0))
    assert abs(transition_affinity_correlation(data)) < 0.2


def test_heldout_distribution_is_a_distribution_that_the_heldout_category_follows() -> None:
    """The process's own distribution of the held-out category: it sums to 1, puts mass only on
    categories it can reach, and its top-4 holds the held-out category far more often than the
    top-4 of a wrong user's distribution (a distribution that ignored the user would not)."""
    data = generate(QUICK_CONFIG)
    dist = data.heldout_distribution
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)
    assert np.all(dist >= 0.0)
    top4 = np.argsort(-dist, axis=1, kind="stable")[:, :4]
    own = np.mean(np.any(top4 == data.heldout_category[:, None], axis=1))
    wrong = np.mean(np.any(np.roll(top4, 1, axis=0) == data.heldout_category[:, None], axis=1))
    assert own > 0.7
    assert own - wrong > 0.3


def test_a_config_is_checked_when_it_is_made_and_generate_takes_only_a_config() -> None:
    """spec/data.md: the check runs at construction (dataclasses.replace included), so a bad
    SyntheticConfig cannot exist; generate refuses anything else by its argument's name."""
    with pytest.raises(ValueError, match="SyntheticConfig.num_users"):
        SyntheticConfig(num_users=0)
    with pytest.raises(TypeError, match="SyntheticConfig.latent_dim"):
        replace(TINY, latent_dim=2.0)
    with pytest.raises(TypeError, match="SyntheticConfig.transition_rank"):
        replace(TINY, transition_rank=True)
    with pytest.raises(TypeError, match="^cfg: expected a SyntheticConfig, got dict"):
        generate({"num_users": 3})  # type: ignore[arg-type]


def test_sequence_refuses_a_user_outside_the_data() -> None:
    data = generate(TINY)
    assert np.array_equal(data.sequence(np.int64(data.num_users - 1)), data.sequence(data.num_users - 1))
    with pytest.raises(ValueError, match=rf"^user: expected a user id in \[0, {data.num_users}\)"):
        data.sequence(data.num_users)
    with pytest.raises(ValueError, match="^user: expected an integer >= 0"):
        data.sequence(-1)
    with pytest.raises(TypeError, match="^user: expected an integer"):
        data.sequence(1.0)  # type: ignore[arg-type]
