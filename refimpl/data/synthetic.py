"""Planted-interest synthetic data for ULIM (spec/data.md has the generative process as equations).

A catalogue of items, each with a category and a latent vector, and users whose time-ordered
behaviour sequences are chains of visits. A visit either visits one of the user's few
long-term categories with the user's persistent taste inside that category, or follows the
user's drifting short-term interest; which interest, and where the short-term interest jumps, depends
on the previous visit's category through a planted category affinity (the transitions PGIN learns
beyond the user's category frequencies). The held-out next event of each user is the first event of
the visit after the sequence: the short-term context says little about it, the user's
long-ago history in its category says a lot, which is the regime ULIM is built for.

Everything is drawn from one `numpy.random.Generator(PCG64(seed))`: the same config gives the
same data, bit for bit.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from refimpl._check import Array, BoolArray, IntArray, require_int, require_positive_int, require_real
from refimpl.progress import track

__all__ = ["QUICK_CONFIG", "SyntheticConfig", "SyntheticData", "generate"]


def _validate_config(cfg: SyntheticConfig) -> None:
    """Refuse, at construction, a config the generator cannot honour, naming the field: a
    non-integer size or seed and a non-number float are a TypeError, a value out of range, NaN or
    inf a ValueError."""
    for name in ("num_categories", "num_items", "num_users", "latent_dim", "min_length",
                 "max_length", "min_interests", "max_interests", "transition_rank"):
        require_positive_int(f"SyntheticConfig.{name}", getattr(cfg, name))
    if cfg.num_items < cfg.num_categories:
        raise ValueError(
            f"SyntheticConfig.num_items: need at least one item per category ({cfg.num_categories}), "
            f"got {cfg.num_items}"
        )
    if cfg.max_length < cfg.min_length:
        raise ValueError(f"SyntheticConfig.max_length: {cfg.max_length} < min_length {cfg.min_length}")
    if not cfg.min_interests <= cfg.max_interests <= cfg.num_categories:
        raise ValueError(
            f"SyntheticConfig.max_interests: need min_interests <= max_interests <= num_categories, got "
            f"{cfg.min_interests}, {cfg.max_interests}, {cfg.num_categories}"
        )
    # Every float field is a finite real (a NaN passes `x <= 0` and `x < 1` unnoticed and then
    # collapses the generator, e.g. taste_sharpness = nan puts every event on 3 items).
    for name in ("long_term_rate", "short_term_jump"):
        require_real(f"SyntheticConfig.{name}", getattr(cfg, name), low=0.0, high=1.0)
    require_real("SyntheticConfig.mean_visit_length", cfg.mean_visit_length, low=1.0)
    for name in ("interest_concentration", "taste_sharpness"):
        require_real(f"SyntheticConfig.{name}", getattr(cfg, name), low=0.0, low_open=True)
    for name in ("popularity_scale", "category_skew", "transition_strength"):
        require_real(f"SyntheticConfig.{name}", getattr(cfg, name), low=0.0)
    require_int("SyntheticConfig.seed", cfg.seed, low=0)


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and the knobs of the generative process (symbols of spec/data.md in brackets)."""

    num_categories: int = 50  # [C]
    num_items: int = 20_000  # [I]
    num_users: int = 2_000  # [U]
    latent_dim: int = 32  # [d]
    min_length: int = 1_500  # [T_min] shortest behaviour sequence
    max_length: int = 2_000  # [T_max] longest behaviour sequence
    min_interests: int = 4  # [k_min] long-term categories per user
    max_interests: int = 6  # [k_max]
    interest_concentration: float = 2.0  # [a] Dirichlet parameter of the interest weights
    long_term_rate: float = 0.6  # [rho] share of visits to a long-term interest
    mean_visit_length: float = 80.0  # [lambda] visits are 1 + Poisson(lambda - 1) long
    taste_sharpness: float = 2.0  # [kappa] how strongly taste picks items inside a category
    popularity_scale: float = 0.5  # [sigma_b] std of the item popularity logits
    category_skew: float = 0.5  # [s] category popularity ~ rank^-s
    short_term_jump: float = 0.3  # [j] chance a short-term visit moves to a new category
    transition_strength: float = 2.0  # [beta] how strongly the previous visit's category steers the next
    transition_rank: int = 4  # [r] rank of the planted category affinity A
    seed: int = 0

    def __post_init__(self) -> None:
        _validate_config(self)


QUICK_CONFIG = SyntheticConfig(
    num_categories=20,
    num_items=1_000,
    num_users=400,
    min_length=350,
    max_length=400,
    mean_visit_length=20.0,
)
"""Seconds end to end: `refimpl demo --quick` and the tests. The same process at a fifth of the
sequence length, with visits shortened in proportion, so each interest is visited as often."""


@dataclass(frozen=True)
class SyntheticData:
    """A generated catalogue and its users.

    Sequences are stored flat: user u's events are `events[offsets[u]:offsets[u + 1]]`, oldest
    first. `visit_start` marks the first event of each visit. `heldout` (U,) is each user's
    next event; `heldout_category` its category. The planted truth (`interests`, `tastes`, the
    affinity A, the process's distribution of the held-out category) is kept for diagnostics and
    tests, never for training.
    """

    config: SyntheticConfig
    item_category: IntArray  # (I,)
    item_latent: Array  # (I, d)
    item_popularity: Array  # (I,) popularity logits b_i
    events: IntArray  # (sum_u T_u,)
    offsets: IntArray  # (U + 1,)
    visit_start: BoolArray  # (sum_u T_u,)
    heldout: IntArray  # (U,)
    interests: tuple[IntArray, ...]  # per user: its long-term categories (k_u,)
    interest_weights: tuple[Array, ...]  # per user: pi_u (k_u,)
    tastes: tuple[Array, ...]  # per user: (k_u, d) taste inside each long-term category
    category_affinity: Array  # (C, C) A[c, c'], the planted transition structure (eq. D1b)
    heldout_distribution: Array  # (U, C) the process's P(category of the held-out visit | past)

    @property
    def num_users(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def num_items(self) -> int:
        return int(self.item_category.shape[0])

    @property
    def num_categories(self) -> int:
        return self.config.num_categories

    @property
    def heldout_category(self) -> IntArray:
        result: IntArray = self.item_category[self.heldout]
        return result

    def sequence(self, user: int) -> IntArray:
        """User `user`'s behaviour sequence (T_u,), oldest first."""
        require_int("user", user, low=0)
        if user >= self.num_users:
            raise ValueError(f"user: expected a user id in [0, {self.num_users}), got {user}")
        result: IntArray = self.events[self.offsets[user] : self.offsets[user + 1]]
        return result

    def lengths(self) -> IntArray:
        result: IntArray = np.diff(self.offsets)
        return result

    def category_items(self) -> tuple[IntArray, ...]:
        """The ids of each category's items, ascending."""
        return tuple(np.flatnonzero(self.item_category == c) for c in range(self.num_categories))


@dataclass(frozen=True)
class _Catalogue:
    category: IntArray  # (I,)
    latent: Array  # (I, d)
    popularity: Array  # (I,)
    category_popularity: Array  # (C,)
    members: IntArray  # (C, S) item ids of each category, padded with -1
    padded_latent: Array  # (C, S, d) zero where padded
    padded_popularity: Array  # (C, S) -inf where padded


def _catalogue(cfg: SyntheticConfig, rng: np.random.Generator) -> _Catalogue:
    ranks = np.arange(1, cfg.num_categories + 1, dtype=np.float64)
    category_popularity = ranks ** (-cfg.category_skew)
    category_popularity /= category_popularity.sum()
    # Every category gets at least one item; the rest are spread uniformly.
    category = np.concatenate([
        np.arange(cfg.num_categories),
        rng.integers(0, cfg.num_categories, size=cfg.num_items - cfg.num_categories),
    ]).astype(np.int64)
    rng.shuffle(category)
    latent = rng.standard_normal((cfg.num_items, cfg.latent_dim))
    popularity = cfg.popularity_scale * rng.standard_normal(cfg.num_items)
    groups = [np.flatnonzero(category == c) for c in range(cfg.num_categories)]
    width = max(g.shape[0] for g in groups)
    members = np.full((cfg.num_categories, width), -1, dtype=np.int64)
    for c, group in enumerate(groups):
        members[c, : group.shape[0]] = group
    valid = members >= 0
    padded_latent = np.where(valid[:, :, None], latent[np.maximum(members, 0)], 0.0)
    padded_popularity = np.where(valid, popularity[np.maximum(members, 0)], -np.inf)
    return _Catalogue(
        category, latent, popularity, category_popularity, members, padded_latent, padded_popularity
    )


@dataclass(frozen=True)
class _User:
    events: IntArray  # (T_u,) oldest first
    starts: BoolArray  # (T_u,) True at the first event of each visit
    heldout: int
    interests: IntArray  # (k_u,) the long-term categories c_u
    weights: Array  # (k_u,) pi_u
    tastes: Array  # (k_u, d) tau_u
    next_distribution: Array  # (C,) P(category of the held-out visit | the user's past), eq. D3


def _visit_lengths(rng: np.random.Generator, cfg: SyntheticConfig, total: int) -> IntArray:
    """Visit lengths 1 + Poisson(lambda - 1) (eq. D2), enough of them to exceed `total` events."""
    count = int(total / cfg.mean_visit_length * 1.5) + 8
    while True:
        lengths = 1 + rng.poisson(cfg.mean_visit_length - 1.0, size=count)
        if lengths.sum() > total:
            result: IntArray = lengths.astype(np.int64)
            return result
        count *= 2


@dataclass(frozen=True)
class _Transitions:
    """The planted transition structure (eqs. D1b, D3) in the form the visit loop reads it."""

    affinity: Array  # (C, C) A
    beta_affinity: Array  # (C, C) beta A
    jump_cdf: list[list[float]]  # (C + 1) rows: the CDF of a jump's category after each category c
    #                              (row C: no previous visit), eq. D3b


def _transitions(cfg: SyntheticConfig, cat: _Catalogue, rng: np.random.Generator) -> _Transitions:
    """A = F G^T / sqrt(r), F, G ~ N(0, I_r) (C, r) (eq. D1b), and the jump CDFs (eq. D3b)."""
    rank = cfg.transition_rank
    left = rng.standard_normal((cfg.num_categories, rank))
    right = rng.standard_normal((cfg.num_categories, rank))
    affinity = left @ right.T / np.sqrt(rank)
    beta_affinity = cfg.transition_strength * affinity
    jump = cat.category_popularity[None, :] * np.exp(beta_affinity - beta_affinity.max(axis=1, keepdims=True))
    jump = np.concatenate([jump, cat.category_popularity[None, :]])
    return _Transitions(affinity, beta_affinity, _cdf_rows(jump))


def _cdf_rows(weights: Array) -> list[list[float]]:
    """Row-wise CDFs of non-negative weights (R, n) as lists, the last entry exactly 1.0, so that
    bisect_right(row, u) for u in [0, 1) is an index in [0, n)."""
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    rows: list[list[float]] = cdf.tolist()
    return rows


def _visit_sources(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    transitions: _Transitions,
    interests: IntArray,
    weights: Array,
    count: int,
) -> tuple[IntArray, IntArray, Array]:
    """Which source each of `count` visits draws from (eq. D3), visit after visit: a long-term
    interest j in [0, k), or a short-term episode k + e. Returns (source per visit, each episode's
    category, the process's distribution over C of the category of visit `count`, the one after)."""
    k = interests.shape[0]
    c = transitions.affinity.shape[0]
    is_long = (rng.random(count) < cfg.long_term_rate).tolist()
    jumps = (rng.random(count) < cfg.short_term_jump).tolist()
    draws = rng.random(count).tolist()
    # Long-term choice after each previous category (row C: the first visit), eq. D3a.
    beta_to_interests = transitions.beta_affinity[:, interests]
    choice = weights[None, :] * np.exp(beta_to_interests - beta_to_interests.max(axis=1, keepdims=True))
    choice = np.concatenate([choice, weights[None, :]])
    choice /= choice.sum(axis=1, keepdims=True)
    long_cdf = _cdf_rows(choice)
    interest_list = interests.tolist()
    source = [0] * count
    episode_category: list[int] = []
    previous = c  # no previous visit
    for v in range(count):
        if is_long[v]:
            j = bisect_right(long_cdf[previous], draws[v])
            source[v] = j
            previous = interest_list[j]
        else:
            if not episode_category or jumps[v]:
                episode_category.append(bisect_right(transitions.jump_cdf[previous], draws[v]))
            source[v] = k + len(episode_category) - 1
            previous = episode_category[-1]
    jump_probability = np.diff(transitions.jump_cdf[previous], prepend=0.0)
    next_distribution = np.zeros(c)
    np.add.at(next_distribution, interests, cfg.long_term_rate * choice[previous])
    if episode_category:
        next_distribution += (1.0 - cfg.long_term_rate) * cfg.short_term_jump * jump_probability
        next_distribution[episode_category[-1]] += (1.0 - cfg.long_term_rate) * (1.0 - cfg.short_term_jump)
    else:
        next_distribution += (1.0 - cfg.long_term_rate) * jump_probability
    return (
        np.array(source, dtype=np.int64),
        np.array(episode_category, dtype=np.int64),
        next_distribution,
    )


def _draw_events(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    cat: _Catalogue,
    source_category: IntArray,
    source_taste: Array,
    event_source: IntArray,
) -> IntArray:
    """Every event's item by inverse CDF of P(i | c, tau) of its source (eq. D4).

    The CDF rows of the sources are normalised to end at 1 and shifted by their row index, so one
    binary search over the flattened rows finds every event's item (O(T log S), not O(T S))."""
    logits = cfg.taste_sharpness * np.einsum(
        "sd,smd->sm", source_taste, cat.padded_latent[source_category]
    ) + cat.padded_popularity[source_category]
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]
    width = cdf.shape[1]
    shifted = (cdf + np.arange(cdf.shape[0])[:, None]).reshape(-1)
    draws = rng.random(event_source.shape[0]) + event_source
    index = np.searchsorted(shifted, draws, side="right") - event_source * width
    index = np.minimum(index, width - 1)
    result: IntArray = cat.members[source_category[event_source], index]
    return result


def _long_term_interests(
    rng: np.random.Generator, cfg: SyntheticConfig, cat: _Catalogue
) -> tuple[IntArray, Array, Array]:
    """A user's k_u long-term categories (by popularity, without replacement), their weights
    pi_u ~ Dirichlet(a 1_k) and the persistent tastes tau_uj ~ N(0, I_d / d) (k_u, d)."""
    k = int(rng.integers(cfg.min_interests, cfg.max_interests + 1))
    interests = rng.choice(cfg.num_categories, size=k, replace=False, p=cat.category_popularity)
    weights = rng.dirichlet(np.full(k, cfg.interest_concentration))
    tastes = (1.0 / np.sqrt(cfg.latent_dim)) * rng.standard_normal((k, cfg.latent_dim))
    return interests.astype(np.int64), weights, tastes


def _user(
    rng: np.random.Generator, cfg: SyntheticConfig, cat: _Catalogue, transitions: _Transitions
) -> _User:
    length = int(rng.integers(cfg.min_length, cfg.max_length + 1))
    interests, weights, tastes = _long_term_interests(rng, cfg, cat)
    scale = 1.0 / np.sqrt(cfg.latent_dim)

    lengths = _visit_lengths(rng, cfg, length)
    # Keep whole visits while they fit in `length`; the next visit's first event is held out.
    kept = int(np.searchsorted(np.cumsum(lengths), length, side="right"))
    kept = max(kept, 1)
    source, episode_category, next_distribution = _visit_sources(
        rng, cfg, transitions, interests, weights, kept + 1
    )
    episode_taste = scale * rng.standard_normal((episode_category.shape[0], cfg.latent_dim))
    total = int(lengths[:kept].sum())
    event_visit = np.repeat(np.arange(kept + 1), lengths[: kept + 1])[: total + 1]
    items = _draw_events(
        rng,
        cfg,
        cat,
        np.concatenate([interests, episode_category]),
        np.concatenate([tastes, episode_taste]),
        source[event_visit],
    )
    starts = np.zeros(total, dtype=bool)
    starts[np.concatenate([[0], np.cumsum(lengths[: kept - 1])])] = True
    return _User(items[:total], starts, int(items[total]), interests, weights, tastes, next_distribution)


def generate(cfg: SyntheticConfig = SyntheticConfig()) -> SyntheticData:
    """Draw a catalogue and its users from the process of spec/data.md, seeded by `cfg.seed`."""
    if not isinstance(cfg, SyntheticConfig):
        raise TypeError(f"cfg: expected a SyntheticConfig, got {type(cfg).__name__}")
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    cat = _catalogue(cfg, rng)
    transitions = _transitions(cfg, cat, rng)
    users = [
        _user(rng, cfg, cat, transitions) for _ in track(range(cfg.num_users), "synthetic users", unit="user")
    ]
    offsets = np.concatenate([[0], np.cumsum([u.events.shape[0] for u in users])]).astype(np.int64)
    return SyntheticData(
        config=cfg,
        item_category=cat.category,
        item_latent=cat.latent,
        item_popularity=cat.popularity,
        events=np.concatenate([u.events for u in users]).astype(np.int64),
        offsets=offsets,
        visit_start=np.concatenate([u.starts for u in users]),
        heldout=np.array([u.heldout for u in users], dtype=np.int64),
        interests=tuple(u.interests for u in users),
        interest_weights=tuple(u.weights for u in users),
        tastes=tuple(u.tastes for u in users),
        category_affinity=transitions.affinity,
        heldout_distribution=np.stack([u.next_distribution for u in users]),
    )

