"""Planted request data for IFA's claims (spec/data.md#planted-request-data).

Users with lifelong behaviour sequences (items, categories, timestamps) and one request each: a
candidate set of M items, the S of them the system showed (impressions) and the shown ones the
user clicked. Every draw comes from one `numpy.random.Generator(PCG64(seed))`, so a config
determines the data bit for bit. The equations (R1)-(R7) are those of the spec page:

    (R1) z_i = normalize(mu_cat(i) + sigma eps_i),  q_i ~ N(0, 1)        item latent, quality
    (R2) w_u, r_u ~ uniform on the unit sphere,  g_u ~ U{0..G-1}          lifelong taste, recent interest, segment
    (R3) s_u,l ~ p_w (prob rho) or uniform (1 - rho), l < L - R;  p_r for the last R
         p_w(i) ∝ exp(kappa z_i . w_u),  p_r(i) ∝ exp(kappa z_i . r_u)
    (R4) candidates: per request source shares ~ Dirichlet(1, 1, 1) over (uniform, p_w, p_r)
    (R5) shown = top-S of M by  beta_q q_c + beta_u z_c . (w_u + r_u) + Gumbel
    (R6) click | shown ~ Bernoulli(sigmoid(b_0 + b_g + alpha z_c . w_u + gamma z_c . r_u
                                            + beta_c q_c - lambda n_same))
    (R7) cross feature x_m = min(#behaviours of cat(c_m) in the recent window, X - 1)

What carries the click signal (z_c . w_u) lives in the behaviours before the recent window, spread
over every category, and only as a density: it is the case IFA makes against models that read the
recent window (DIN), one category (SIM-hard) or the k behaviours nearest the candidate (SIM-soft,
TWIN). Whether a candidate is shown depends on the other candidates (top-S of M), and a click on
how many other shown candidates share its category: the case for RAM.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from refimpl._check import Array, IntArray, Shapes, require_ids, require_int, require_positive_int, require_real

__all__ = [
    "RequestConfig",
    "RequestData",
    "check_request_data",
    "generate_requests",
]


@dataclass(frozen=True)
class RequestConfig:
    """Every knob of the generator (spec/data.md#planted-request-data has the table)."""

    num_items: int = 1_000  # V
    num_categories: int = 16  # C
    latent_dim: int = 2  # d
    category_spread: float = 0.8  # sigma in (R1): item latents around their category centre
    num_users: int = 4_000  # one request per user
    num_segments: int = 8  # G, the user profile field
    lifelong_length: int = 2_000  # L
    recent_length: int = 50  # R, the recent window (the last R behaviours)
    taste_share: float = 0.5  # rho: share of the older behaviours drawn from the lifelong taste
    sharpness: float = 2.0  # kappa in (R3)
    num_candidates: int = 20  # M
    num_shown: int = 8  # S
    num_cross: int = 4  # X, cross-feature values
    impression_quality: float = 1.0  # beta_q
    impression_interest: float = 1.0  # beta_u
    click_bias: float = -0.5  # b_0
    segment_scale: float = 0.3  # b_g ~ N(0, segment_scale^2)
    click_lifelong: float = 4.0  # alpha
    click_recent: float = 1.0  # gamma
    click_quality: float = 0.5  # beta_c
    click_saturation: float = 0.5  # lambda
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_items", "num_categories", "latent_dim", "num_users", "num_segments",
                     "lifelong_length", "recent_length", "num_candidates", "num_shown", "num_cross"):
            require_positive_int(f"RequestConfig.{name}", getattr(self, name))
        if self.num_categories > self.num_items:
            raise ValueError(f"RequestConfig.num_categories: at most num_items = {self.num_items}, "
                             f"got {self.num_categories}")
        if self.recent_length >= self.lifelong_length:
            raise ValueError(f"RequestConfig.recent_length: expected < lifelong_length = "
                             f"{self.lifelong_length}, got {self.recent_length}")
        if self.num_shown >= self.num_candidates:
            raise ValueError(f"RequestConfig.num_shown: expected < num_candidates = "
                             f"{self.num_candidates}, got {self.num_shown}")
        require_real("RequestConfig.category_spread", self.category_spread, low=0.0)
        require_real("RequestConfig.taste_share", self.taste_share, low=0.0, high=1.0)
        require_real("RequestConfig.segment_scale", self.segment_scale, low=0.0)
        for name in ("sharpness", "impression_quality", "impression_interest", "click_bias",
                     "click_lifelong", "click_recent", "click_quality", "click_saturation"):
            require_real(f"RequestConfig.{name}", getattr(self, name))
        require_int("RequestConfig.seed", self.seed, low=0)


@dataclass(frozen=True)
class RequestData:
    """The generated requests (N = num_users, one per user) and the planted truth.

    Observed: item_category (V,); segment (N,); sequence, timestamps (N, L) oldest first (days
    before the request, decreasing); candidates, cross (N, M); impression, click (N, M) int64
    0/1 with click <= impression. Planted (for diagnostics only): item_latent (V, d),
    item_quality (V,), taste, recent_interest (N, d), click_logit (N, M) of (R6)."""

    config: RequestConfig
    item_category: IntArray
    segment: IntArray
    sequence: IntArray
    timestamps: Array
    candidates: IntArray
    cross: IntArray
    impression: IntArray
    click: IntArray
    item_latent: Array
    item_quality: Array
    taste: Array
    recent_interest: Array
    click_logit: Array

    @property
    def num_requests(self) -> int:
        return int(self.candidates.shape[0])

    def sequence_categories(self) -> IntArray:
        """The category of every behaviour (N, L)."""
        check_request_data(self)
        result: IntArray = self.item_category[self.sequence]
        return result

    def recent(self) -> IntArray:
        """The recent window, the last R behaviours (N, R), oldest first."""
        check_request_data(self)
        result: IntArray = self.sequence[:, -self.config.recent_length:]
        return result

    def take(self, rows: IntArray) -> RequestData:
        """The requests `rows` (an integer array of request indices), catalogue unchanged."""
        check_request_data(self)
        if not isinstance(rows, np.ndarray) or not np.issubdtype(rows.dtype, np.integer):
            raise TypeError(f"rows: expected an integer numpy array, got {type(rows).__name__}")
        if rows.ndim != 1:
            raise ValueError(f"rows: expected one axis, got shape {rows.shape}")
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_requests):
            raise ValueError(f"rows: expected indices in [0, {self.num_requests}), got "
                             f"{rows.min()}..{rows.max()}")
        per_request = {"segment", "sequence", "timestamps", "candidates", "cross", "impression", "click",
                       "taste", "recent_interest", "click_logit"}
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return RequestData(**{name: value[rows] if name in per_request else value
                              for name, value in values.items()})


def check_request_data(data: RequestData, name: str = "data") -> RequestData:
    """Every array of `data` of the shape, dtype and range its config says; errors name the field
    (`data.sequence: ...`). Returns `data`."""
    if not isinstance(data, RequestData):
        raise TypeError(f"{name}: expected RequestData, got {type(data).__name__}")
    cfg = data.config
    if not isinstance(cfg, RequestConfig):
        raise TypeError(f"{name}.config: expected a RequestConfig, got {type(cfg).__name__}")
    shapes = Shapes(V=cfg.num_items, d=cfg.latent_dim, L=cfg.lifelong_length, M=cfg.num_candidates)
    ranges = {"item_category": cfg.num_categories, "segment": cfg.num_segments, "sequence": cfg.num_items,
              "candidates": cfg.num_items, "cross": cfg.num_cross, "impression": 2, "click": 2}
    dims = {"item_category": ("V",), "segment": ("N",), "sequence": ("N", "L"), "candidates": ("N", "M"),
            "cross": ("N", "M"), "impression": ("N", "M"), "click": ("N", "M")}
    for field_name, bound in ranges.items():
        value = getattr(data, field_name)
        shapes.check_int(f"{name}.{field_name}", value, dims[field_name])
        require_ids(f"{name}.{field_name}", value, bound)
    floats = {"timestamps": ("N", "L"), "item_latent": ("V", "d"), "item_quality": ("V",), "taste": ("N", "d"),
              "recent_interest": ("N", "d"), "click_logit": ("N", "M")}
    for field_name, float_dims in floats.items():
        shapes.check_float(f"{name}.{field_name}", getattr(data, field_name), float_dims)
    return data


def _unit_rows(x: Array) -> Array:
    result: Array = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return result


def _sample_rows(logits: Array, count: int, rng: np.random.Generator) -> IntArray:
    """`count` iid draws per row from softmax(logits[row]) (inverse CDF, all rows at once)."""
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(prob, axis=1)
    cdf /= cdf[:, -1:]
    rows, width = logits.shape
    offsets = np.arange(rows)[:, None]
    flat = (cdf + offsets).reshape(-1)
    draws = np.searchsorted(flat, offsets + rng.random((rows, count)), side="right")
    picked: IntArray = np.minimum(draws - offsets * width, width - 1).astype(np.int64)
    return picked


def generate_requests(cfg: RequestConfig) -> RequestData:
    """Draw the catalogue, the users' sequences and their requests (R1)-(R7)."""
    if not isinstance(cfg, RequestConfig):
        raise TypeError(f"cfg: expected a RequestConfig, got {type(cfg).__name__}")
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    v, c, d, n = cfg.num_items, cfg.num_categories, cfg.latent_dim, cfg.num_users
    length, recent, m = cfg.lifelong_length, cfg.recent_length, cfg.num_candidates
    # (R1) catalogue
    centres = _unit_rows(rng.standard_normal((c, d)))
    item_category = rng.permutation(np.arange(v) % c).astype(np.int64)
    latent = _unit_rows(centres[item_category] + cfg.category_spread * rng.standard_normal((v, d)) / np.sqrt(d))
    quality = rng.standard_normal(v)
    # (R2) users
    taste = _unit_rows(rng.standard_normal((n, d)))
    interest = _unit_rows(rng.standard_normal((n, d)))
    segment = rng.integers(0, cfg.num_segments, size=n).astype(np.int64)
    segment_bias = cfg.segment_scale * rng.standard_normal(cfg.num_segments)
    taste_logits = cfg.sharpness * taste @ latent.T  # (N, V)
    recent_logits = cfg.sharpness * interest @ latent.T
    # (R3) lifelong sequences: the older part a mix of taste and noise, the last R the recent interest
    older = length - recent
    from_taste = _sample_rows(taste_logits, older, rng)
    noise = rng.integers(0, v, size=(n, older))
    older_part = np.where(rng.random((n, older)) < cfg.taste_share, from_taste, noise)
    sequence = np.concatenate([older_part, _sample_rows(recent_logits, recent, rng)], axis=1).astype(np.int64)
    gaps = rng.exponential(1.0, size=(n, length))
    gaps[:, older:] *= 0.01  # the recent window is one session
    timestamps = np.cumsum(gaps[:, ::-1], axis=1)[:, ::-1]  # days before the request, oldest first
    # (R4) candidate sets of varying composition
    shares = rng.dirichlet(np.ones(3), size=n)
    source = (rng.random((n, m, 1)) > np.cumsum(shares, axis=1)[:, None, :]).sum(axis=2)
    pools = np.stack([rng.integers(0, v, size=(n, m)), _sample_rows(taste_logits, m, rng),
                      _sample_rows(recent_logits, m, rng)], axis=2)
    candidates = np.take_along_axis(pools, source[..., None], axis=2)[..., 0].astype(np.int64)
    cand_latent = latent[candidates]  # (N, M, d)
    lifelong_match = np.einsum("nmd,nd->nm", cand_latent, taste)
    recent_match = np.einsum("nmd,nd->nm", cand_latent, interest)
    # (R5) impressions: the S best of M by the system's noisy score
    system = (cfg.impression_quality * quality[candidates] + cfg.impression_interest * (lifelong_match + recent_match)
              + rng.gumbel(size=(n, m)))
    shown_rank = np.argsort(np.argsort(-system, axis=1, kind="stable"), axis=1, kind="stable")
    impression = (shown_rank < cfg.num_shown).astype(np.int64)
    # (R6) clicks on the shown candidates; n_same counts the other shown candidates of the category
    cand_category = item_category[candidates]
    same = (cand_category[:, :, None] == cand_category[:, None, :]) & (impression[:, None, :] == 1)
    n_same = same.sum(axis=2) - impression
    click_logit = (cfg.click_bias + segment_bias[segment][:, None] + cfg.click_lifelong * lifelong_match
                   + cfg.click_recent * recent_match + cfg.click_quality * quality[candidates]
                   - cfg.click_saturation * n_same)
    clicked = rng.random((n, m)) < 1.0 / (1.0 + np.exp(-click_logit))
    click = (clicked & (impression == 1)).astype(np.int64)
    # (R7) cross feature: the candidate's category count in the recent window, capped
    recent_categories = item_category[sequence[:, -recent:]]
    counts = (recent_categories[:, None, :] == cand_category[:, :, None]).sum(axis=2)
    cross = np.minimum(counts, cfg.num_cross - 1).astype(np.int64)
    return RequestData(
        config=cfg, item_category=item_category, segment=segment, sequence=sequence,
        timestamps=timestamps, candidates=candidates, cross=cross, impression=impression, click=click,
        item_latent=latent, item_quality=quality, taste=taste, recent_interest=interest,
        click_logit=click_logit,
    )
