"""Capsule routing (UMI eq. 3-6, Algorithm 1): gradients, invariants, and negative controls."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refimpl.nn.capsule_routing as routing_module
from refimpl.cases._base import CaseTensors, Config
from refimpl.cases.capsule_routing import CASES, Routing, capsule_routing_reference, routing_case_config
from refimpl.conformance import reference_adapter, run_conformance
from refimpl.gradcheck import assert_gradients_match, check_component, check_gradients
from refimpl.nn.attention import masked_softmax
from refimpl.nn.capsule_routing import (
    CapsuleRoutingConfig,
    CapsuleRoutingParams,
    capsule_routing_backward,
    capsule_routing_forward,
    frozen_routing_forward,
    map_items_backward,
    squash,
    squash_backward,
)

Arrays = dict[str, Any]


def draw(
    seed: int,
    b: int = 2,
    length: int = 4,
    k: int = 3,
    d_in: int = 3,
    d_out: int = 3,
    shared: bool = False,
    ones: bool = False,
) -> Arrays:
    """The golden cases' builder at these sizes, from `seed`, flattened into one dict."""
    routing = Routing(
        batch=b, length=length, interests=k, d_in=d_in, d_out=d_out,
        map="shared" if shared else "per_interest", unit_item_weights=ones,
    )
    t = routing.build(np.random.default_rng(seed))
    return {**t.inputs, "W": t.params["W"], "upstream": t.upstream["d_interests"]}


def run(x: Arrays, cfg: CapsuleRoutingConfig) -> tuple[Any, Any]:
    return capsule_routing_forward(
        CapsuleRoutingParams(x["W"]),
        x["items"],
        x["item_weights"],
        x["mask"],
        x["initial_logits"],
        cfg,
    )


def case_config(cfg: CapsuleRoutingConfig) -> Config:
    return routing_case_config(cfg.iterations, cfg.update, cfg.detach_routing, cfg.map)


configs = st.builds(
    CapsuleRoutingConfig,
    iterations=st.integers(1, 3),
    update=st.sampled_from(["replace", "accumulate"]),
    detach_routing=st.booleans(),
    map=st.sampled_from(["per_interest", "shared"]),
)


# ---------------------------------------------------------------- gradients


def exact_gradient_problems(cfg: CapsuleRoutingConfig, x: Arrays) -> list[str]:
    tensors = CaseTensors(
        inputs={k: x[k] for k in ("items", "item_weights", "mask", "initial_logits")},
        params={"W": x["W"]},
        upstream={"d_interests": x["upstream"]},
    )
    return check_component(capsule_routing_reference, tensors, case_config(cfg))


def detached_gradient_problems(
    cfg: CapsuleRoutingConfig, x: Arrays, backward: Callable[..., Any] = capsule_routing_backward
) -> list[str]:
    """The detached backward against finite differences of the routing with c frozen at c^{t-1}."""
    _, cache = run(x, cfg)
    grads = backward(cache, x["upstream"])
    frozen = cache.coefficients[-1]

    def f(at: Arrays) -> float:
        v = frozen_routing_forward(CapsuleRoutingParams(at["W"]), at["items"], at["item_weights"], x["mask"], frozen)
        return float(np.sum(v * x["upstream"]))

    point = {name: x[name] for name in ("W", "items", "item_weights")}
    analytic = {"W": grads.W, "items": grads.items, "item_weights": grads.item_weights}
    problems = check_gradients(f, point, analytic)
    if np.any(grads.initial_logits != 0):
        problems.append("initial_logits: the detached gradient must be zero")
    return problems


@given(cfg=configs, seed=st.integers(0, 2**32 - 1), k=st.integers(1, 3))
@settings(max_examples=10)
def test_exact_gradient_matches_finite_differences(cfg: CapsuleRoutingConfig, seed: int, k: int) -> None:
    cfg = replace(cfg, detach_routing=False)
    x = draw(seed, k=k, shared=cfg.map == "shared")
    assert_gradients_match(exact_gradient_problems(cfg, x))


@given(cfg=configs, seed=st.integers(0, 2**32 - 1), k=st.integers(1, 3))
@settings(max_examples=10)
def test_detached_gradient_matches_frozen_coefficients(cfg: CapsuleRoutingConfig, seed: int, k: int) -> None:
    cfg = replace(cfg, detach_routing=True)
    x = draw(seed, k=k, shared=cfg.map == "shared")
    assert_gradients_match(detached_gradient_problems(cfg, x))


def test_negative_control_exact_check_catches_detached_gradient() -> None:
    """The exact-mode check fails on the detached gradient (t = 3: c depends on the inputs)."""
    x = draw(1)
    detached = CapsuleRoutingConfig(detach_routing=True)
    assert exact_gradient_problems(detached, x)


def test_negative_control_frozen_check_catches_exact_gradient() -> None:
    """The frozen-c check fails on the exact gradient (it has the terms through c)."""
    x = draw(2)
    exact = CapsuleRoutingConfig(detach_routing=False)
    _, cache = run(x, exact)

    def exact_backward(_: Any, d: Any) -> Any:
        return replace(capsule_routing_backward(cache, d), initial_logits=np.zeros_like(d[:, :1]))

    assert detached_gradient_problems(CapsuleRoutingConfig(), x, exact_backward)


def explicit_detached_gradients(cache: Any, d_interests: Any, absolute: bool = False) -> tuple[Any, Any, Any]:
    """The detached gradient in its textbook order (what `capsule_routing_backward` computed before
    it pooled first): d_u_ij = a_i c_ij d_z_j built as a (B, L, K, D_out) tensor, then
    `map_items_backward`; d_a_i = sum_j c_ij (u_ij . d_z_j), 0 at padded positions. `absolute`:
    the same sums over the absolute values of every factor, the scale of each entry's round-off."""
    size = np.abs if absolute else np.asarray
    coefficients = cache.coefficients[-1]
    d_sums = size(squash_backward(cache.sums[-1], d_interests))
    d_mapped = (cache.item_weights[:, :, None] * coefficients)[..., None] * d_sums[:, None, :, :]
    d_w, d_items = map_items_backward(size(cache.W), size(cache.items), d_mapped)
    d_item_weights = np.sum(coefficients * np.einsum("blko,bko->blk", size(cache.mapped), d_sums), axis=-1)
    return d_w, d_items, np.where(cache.mask, d_item_weights, 0)


def reordering_mismatches(grads: Any, cache: Any, d_interests: Any) -> list[str]:
    """Where `grads` differs from the textbook order by more than round-off: each order's error in
    an entry is at most n eps times the sum of its terms' absolute values, n = B L + K D_out (the
    longer sums: over rows and positions for d_W, over interests and widths for d_e and d_a), so
    the two differ by at most 2 n eps that sum (measured over 3,000 draws: at most 0.5 n eps, in
    float64 and float32). Padded positions must agree exactly (their sum of terms is 0)."""
    b, length, k = cache.coefficients[-1].shape
    n = b * length + k * cache.sums[-1].shape[2]
    eps = np.finfo(cache.items.dtype).eps
    mismatches = []
    for name, got, want, bound in zip(
        ("W", "items", "item_weights"),
        (grads.W, grads.items, grads.item_weights),
        explicit_detached_gradients(cache, d_interests),
        explicit_detached_gradients(cache, d_interests, absolute=True),
        strict=True,
    ):
        assert got.dtype == want.dtype == cache.items.dtype and got.shape == want.shape
        if np.any(np.abs(got - want) > 2 * n * eps * bound):
            mismatches.append(name)
    return mismatches


def reordering_draw(seed: int, shape: tuple[int, int, int, int, int], shared: bool, dtype: Any) -> Arrays:
    b, length, k, d_in, d_out = shape
    x = draw(seed, b=b, length=length, k=k, d_in=d_in, d_out=d_out, shared=shared)
    return {name: v.astype(dtype) if v.dtype == np.float64 else v for name, v in x.items()}


reordering_shapes = st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 4), st.integers(1, 5),
                              st.integers(1, 5))


@given(seed=st.integers(0, 2**32 - 1), shape=reordering_shapes, shared=st.booleans(),
       dtype=st.sampled_from([np.float64, np.float32]), iterations=st.integers(1, 3),
       update=st.sampled_from(["replace", "accumulate"]))
def test_detached_backward_equals_the_explicit_d_u_up_to_round_off(
    seed: int, shape: tuple[int, int, int, int, int], shared: bool, dtype: Any, iterations: int, update: str
) -> None:
    """The detached backward pools before it multiplies (spec/capsule_routing.md, "Computation
    order"); that changes only the order of the sums: it equals `map_items_backward` of the
    explicit d_u, per-interest and shared maps, float64 and float32, with padded positions
    (about 30%, item weights there nonzero in the input)."""
    x = reordering_draw(seed, shape, shared, dtype)
    cfg = CapsuleRoutingConfig(iterations=iterations, update=update, map="shared" if shared else "per_interest")
    _, cache = run(x, cfg)
    grads = capsule_routing_backward(cache, x["upstream"])
    assert reordering_mismatches(grads, cache, x["upstream"]) == []
    assert np.all(grads.initial_logits == 0)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_negative_control_reordering_check_catches_a_dropped_item_weight(shared: bool, dtype: Any) -> None:
    """The comparison above fails for a backward that pools with c_ij instead of a_i c_ij (a_i
    dropped: the routing cache's item weights replaced by the mask)."""
    x = reordering_draw(3, (3, 6, 3, 4, 5), shared, dtype)
    _, cache = run(x, CapsuleRoutingConfig(map="shared" if shared else "per_interest"))
    unweighted = replace(cache, item_weights=cache.mask.astype(dtype))
    grads = capsule_routing_backward(unweighted, x["upstream"])
    assert reordering_mismatches(grads, cache, x["upstream"]) == ["W", "items"]


# ---------------------------------------------------------------- invariants


def assert_distribution_over_interests(coefficients: Any) -> None:
    assert np.all(coefficients >= 0)
    np.testing.assert_allclose(coefficients.sum(axis=-1), 1.0, rtol=0, atol=1e-12)


@given(cfg=configs, seed=st.integers(0, 2**32 - 1))
def test_coefficients_are_a_distribution_over_interests(cfg: CapsuleRoutingConfig, seed: int) -> None:
    x = draw(seed, b=3, length=5, shared=cfg.map == "shared")
    x["initial_logits"] = x["initial_logits"] * 20
    _, cache = run(x, cfg)
    assert len(cache.coefficients) == cfg.iterations
    for c in cache.coefficients:
        assert_distribution_over_interests(c)


def test_negative_control_softmax_over_positions_is_not_a_distribution_over_interests() -> None:
    x = draw(3, b=2, length=5)
    logits = x["initial_logits"]
    over_positions = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    with pytest.raises(AssertionError):
        assert_distribution_over_interests(over_positions)


def assert_squash_properties(fn: Callable[[Any], Any], z: Any) -> None:
    v = fn(z)
    norms = np.linalg.norm(v, axis=-1)
    assert np.all(norms < 1)
    z_norms = np.linalg.norm(z, axis=-1)
    big = z_norms > 1e-3
    cosine = np.sum(v * z, axis=-1)[big] / (norms[big] * z_norms[big])
    np.testing.assert_allclose(cosine, 1.0, rtol=0, atol=1e-12)
    n2 = z_norms**2
    expected = n2 / (1 + n2) * z_norms / np.sqrt(n2 + 1e-9)
    np.testing.assert_allclose(norms[big], expected[big], rtol=1e-12)


@given(seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([1e-3, 0.3, 1.0, 10.0, 1e4]))
def test_squash_maps_into_open_unit_ball_and_keeps_direction(seed: int, scale: float) -> None:
    z = scale * np.random.default_rng(seed).standard_normal((7, 5))
    assert_squash_properties(squash, z)


def test_negative_control_squash_properties_catch_a_broken_squash() -> None:
    z = np.random.default_rng(4).standard_normal((6, 4)) * 3
    with pytest.raises(AssertionError):  # forgets the 1 + |z|^2: norm 1, not inside the ball
        assert_squash_properties(lambda z: z / np.linalg.norm(z, axis=-1, keepdims=True), z)
    with pytest.raises(AssertionError):  # scales each coordinate separately: turns the vector
        assert_squash_properties(lambda z: z * np.abs(z) / (1 + z * z), z)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_squash_of_zero_is_zero_with_finite_gradient(dtype: Any) -> None:
    z = np.zeros((2, 3), dtype=dtype)
    v = squash(z)
    assert v.dtype == dtype and np.all(v == 0)
    d_z = squash_backward(z, np.ones_like(z))
    assert d_z.dtype == dtype and np.all(np.isfinite(d_z)) and np.all(d_z == 0)
    tiny = np.full((1, 3), 1e-7, dtype=np.float64)  # the Jacobian near 0 is ~0, no blow-up
    assert np.all(np.abs(squash_backward(tiny, np.ones_like(tiny))) < 1e-3)


def squash_backward_without_epsilon(z: np.ndarray, d_v: np.ndarray) -> np.ndarray:
    """The broken variant: `squash_backward` with eps = 0, i.e. s = |z| (divides by 0 at z = 0)."""
    norm2 = np.sum(z * z, axis=-1, keepdims=True)
    root = np.sqrt(norm2)
    slope = (1 / (1 + norm2) - 1 / 2) / ((1 + norm2) * root)
    result: np.ndarray = norm2 / ((1 + norm2) * root) * d_v + 2 * slope * np.sum(z * d_v, axis=-1, keepdims=True) * z
    return result


def test_negative_control_squash_without_epsilon_has_nan_gradient_at_zero() -> None:
    z, d_v = np.zeros((1, 3)), np.ones((1, 3))
    with np.errstate(all="ignore"):
        assert np.all(np.isnan(squash_backward_without_epsilon(z, d_v)))
    assert np.all(squash_backward(z, d_v) == 0)
    away = np.array([[0.3, -1.2, 0.5]])  # where |z| > 0 the two agree: the variant is squash's backward
    np.testing.assert_allclose(squash_backward_without_epsilon(away, d_v), squash_backward(away, d_v), rtol=1e-8)


def permuted(x: Arrays, perm: Any) -> Arrays:
    out = dict(x)
    for name in ("items", "item_weights", "mask", "initial_logits"):
        out[name] = x[name][:, perm]
    return out


@given(cfg=configs, seed=st.integers(0, 2**32 - 1))
def test_permuting_behaviours_with_their_logits_leaves_interests_unchanged(
    cfg: CapsuleRoutingConfig, seed: int
) -> None:
    x = draw(seed, b=2, length=6, shared=cfg.map == "shared")
    perm = np.random.default_rng(seed).permutation(6)
    v, _ = run(x, cfg)
    v_perm, _ = run(permuted(x, perm), cfg)
    np.testing.assert_allclose(v_perm, v, rtol=1e-12, atol=1e-13)


def test_negative_control_permuting_behaviours_without_their_logits_changes_interests() -> None:
    x = draw(5, b=2, length=6)
    x["mask"][:] = True
    moved = permuted(x, np.roll(np.arange(6), 1))
    moved["initial_logits"] = x["initial_logits"]
    v, _ = run(x, CapsuleRoutingConfig())
    v_moved, _ = run(moved, CapsuleRoutingConfig())
    assert not np.allclose(v_moved, v, rtol=1e-12, atol=1e-13)


def mind_routing(items: Any, mask: Any, logits: Any, shared_map: Any, iterations: int) -> Any:
    """MIND's dynamic routing (Li et al. 2019, Algorithm 1) written out per user, loop by loop."""
    b, length, k = logits.shape
    out = np.zeros((b, k, shared_map.shape[1]))
    for row in range(b):
        u = items[row] @ shared_map  # (L, D_out), one map for every interest
        logit = logits[row].copy()
        for it in range(iterations):
            w = np.exp(logit - logit.max(axis=1, keepdims=True))
            w = w / w.sum(axis=1, keepdims=True)
            for j in range(k):
                z = sum(w[i, j] * u[i] for i in range(length) if mask[row, i])
                z = np.asarray(z, dtype=float) * np.ones(u.shape[1])
                n2 = z @ z
                out[row, j] = n2 / (1 + n2) * z / np.sqrt(n2 + 1e-9)
            if it + 1 < iterations:
                logit = logit + u @ out[row].T
    return out


@given(seed=st.integers(0, 2**32 - 1), iterations=st.integers(1, 3))
def test_all_ones_weights_and_shared_map_equal_mind_routing(seed: int, iterations: int) -> None:
    x = draw(seed, b=2, length=5, d_in=3, d_out=4, shared=True, ones=True)
    cfg = CapsuleRoutingConfig(iterations=iterations, update="accumulate", map="shared")
    v, _ = run(x, cfg)
    expected = mind_routing(x["items"], x["mask"], x["initial_logits"], x["W"], iterations)
    np.testing.assert_allclose(v, expected, rtol=1e-10, atol=1e-12)


def test_negative_control_replace_update_is_not_mind_routing() -> None:
    x = draw(6, b=2, length=5, shared=True, ones=True)
    v, _ = run(x, CapsuleRoutingConfig(update="replace", map="shared"))
    expected = mind_routing(x["items"], x["mask"], x["initial_logits"], x["W"], 3)
    assert not np.allclose(v, expected, rtol=1e-10, atol=1e-12)


def single_interest_reference(x: Arrays) -> Any:
    weights = np.where(x["mask"], x["item_weights"], 0)
    mapped = np.einsum("bld,do->blo", x["items"], x["W"][0])
    return squash(np.einsum("bl,blo->bo", weights, mapped))[:, None, :]


@given(seed=st.integers(0, 2**32 - 1), update=st.sampled_from(["replace", "accumulate"]))
def test_one_interest_one_iteration_is_squash_of_weighted_sum(seed: int, update: str) -> None:
    x = draw(seed, k=1, d_out=4)
    v, cache = run(x, CapsuleRoutingConfig(iterations=1, update=update))
    assert np.all(cache.coefficients[0] == 1)
    np.testing.assert_allclose(v, single_interest_reference(x), rtol=1e-12, atol=1e-14)


def test_negative_control_one_interest_check_catches_a_missing_item_weight() -> None:
    x = draw(7, k=1, d_out=4)
    unweighted = dict(x, item_weights=np.ones_like(x["item_weights"]))
    v, _ = run(unweighted, CapsuleRoutingConfig(iterations=1))
    assert not np.allclose(v, single_interest_reference(x), rtol=1e-12, atol=1e-14)


def assert_masked_behaviours_inert(cfg: CapsuleRoutingConfig, x: Arrays, forward: Any) -> None:
    """Changing padded behaviours changes nothing; they get exactly zero gradient."""
    rng = np.random.default_rng(0)
    padded = ~x["mask"]
    noisy = dict(x)
    noisy["items"] = np.where(padded[..., None], 100 * rng.standard_normal(x["items"].shape), x["items"])
    noisy["item_weights"] = np.where(padded, 5.0, x["item_weights"])
    noisy["initial_logits"] = np.where(padded[..., None], 50.0, x["initial_logits"])
    v, cache = forward(x, cfg)
    v_noisy, _ = forward(noisy, cfg)
    np.testing.assert_array_equal(v_noisy, v)
    grads = capsule_routing_backward(cache, x["upstream"])
    assert np.all(grads.items[padded] == 0)
    assert np.all(grads.item_weights[padded] == 0)
    assert np.all(grads.initial_logits[padded] == 0)


@given(cfg=configs, seed=st.integers(0, 2**32 - 1))
def test_masked_behaviours_change_nothing_and_get_zero_gradient(cfg: CapsuleRoutingConfig, seed: int) -> None:
    x = draw(seed, b=3, length=6, shared=cfg.map == "shared")
    x["mask"][1] = False  # an all-padded row too
    assert_masked_behaviours_inert(cfg, x, run)


def test_negative_control_mask_check_catches_weights_used_at_padded_positions() -> None:
    def ignores_mask(x: Arrays, cfg: CapsuleRoutingConfig) -> Any:
        return run(dict(x, mask=np.ones_like(x["mask"])), cfg)

    x = draw(8, b=2, length=6)
    x["mask"][0, 3:] = False
    with pytest.raises(AssertionError):
        assert_masked_behaviours_inert(CapsuleRoutingConfig(), x, ignores_mask)


def test_all_padded_row_gives_zero_interests_and_finite_gradient() -> None:
    x = draw(9, b=2, length=4)
    x["mask"][0] = False
    for detach in (True, False):
        v, cache = run(x, CapsuleRoutingConfig(detach_routing=detach))
        assert np.all(v[0] == 0)
        grads = capsule_routing_backward(cache, x["upstream"])
        for g in (grads.W, grads.items, grads.item_weights, grads.initial_logits):
            assert np.all(np.isfinite(g))


# ---------------------------------------------------------------- dtype and validation


def test_float32_in_float32_out() -> None:
    x32 = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in draw(10).items()}
    for detach in (True, False):
        v, cache = run(x32, CapsuleRoutingConfig(detach_routing=detach))
        grads = capsule_routing_backward(cache, x32["upstream"])
        assert v.dtype == np.float32
        assert all(g.dtype == np.float32 for g in (grads.W, grads.items, grads.item_weights, grads.initial_logits))
        v64, _ = run(draw(10), CapsuleRoutingConfig(detach_routing=detach))
        np.testing.assert_allclose(v, v64, rtol=1e-4, atol=1e-5)


def test_bad_inputs_raise_errors_naming_the_argument() -> None:
    x = draw(11)
    with pytest.raises(ValueError, match="initial_logits"):
        run(dict(x, initial_logits=x["initial_logits"][:, :3]), CapsuleRoutingConfig())
    with pytest.raises(ValueError, match="W"):
        run(x, CapsuleRoutingConfig(map="shared"))
    with pytest.raises(TypeError, match="mask"):
        run(dict(x, mask=x["mask"].astype(np.int64)), CapsuleRoutingConfig())
    with pytest.raises(TypeError, match="item_weights"):
        run(dict(x, item_weights=x["item_weights"].astype(np.float32)), CapsuleRoutingConfig())
    with pytest.raises(ValueError, match="initial_logits: expected at least one interest"):
        run(dict(x, initial_logits=x["initial_logits"][:, :, :0], W=x["W"][:0]), CapsuleRoutingConfig())
    with pytest.raises(ValueError, match="cfg.iterations"):
        run(x, CapsuleRoutingConfig(iterations=0))
    with pytest.raises(ValueError, match="cfg.update"):
        run(x, CapsuleRoutingConfig(update="sum"))
    with pytest.raises(TypeError, match="cfg.detach_routing"):
        run(x, CapsuleRoutingConfig(detach_routing=1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="coefficients"):
        frozen_routing_forward(
            CapsuleRoutingParams(x["W"]), x["items"], x["item_weights"], x["mask"], x["initial_logits"][:, 1:]
        )
    _, cache = run(x, CapsuleRoutingConfig())
    with pytest.raises(ValueError, match="d_interests"):
        capsule_routing_backward(cache, x["upstream"][:, :2])


def test_tiny_case_matches_the_hand_computed_numbers_of_the_spec() -> None:
    tiny = next(case for case in CASES if case.name == "tiny_hand_checked")
    tensors, config = tiny.draw(), tiny.config
    result = capsule_routing_reference(tensors.inputs, tensors.params, config, tensors.upstream)
    np.testing.assert_allclose(result.intermediates["weighted_sums_iter0"], [[[1.0, 0.75], [0.75, 1.0]]], rtol=1e-15)
    v = 1.5625 / 2.5625 / 1.25  # |z|^2 / (1 + |z|^2) / |z| with |z| = 1.25
    np.testing.assert_allclose(result.outputs["interests"], [[[v, 0.75 * v], [0.75 * v, v]]], rtol=1e-8)


# ---------------------------------------------------------------- conformance negative controls


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    yield monkeypatch


def conformance_failures(component: str) -> dict[str, Any]:
    report = run_conformance(reference_adapter(), components=[component])
    return {r.case_id: r for r in report.results if r.status == "fail"}


def test_reference_passes_its_own_goldens() -> None:
    report = run_conformance(reference_adapter(), components=["capsule_routing"])
    assert report.ok and len(report.results) >= 10, [r.text for r in report.results]


def test_conformance_catches_softmax_over_positions(patched: pytest.MonkeyPatch) -> None:
    def over_positions(logits: Any) -> Any:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    patched.setattr(routing_module, "softmax_interests", over_positions)
    failures = conformance_failures("capsule_routing")
    umi = failures["capsule_routing/umi_detached_t3"]
    assert "routing_coefficients_iter0" in umi.failing_names and "interests" in umi.failing_names
    assert umi.first_divergent_intermediate == "routing_coefficients_iter0"
    assert "capsule_routing/k1_exact_t3" in failures  # K = 1: over positions is not all ones


def test_conformance_catches_a_missing_item_weight(patched: pytest.MonkeyPatch) -> None:
    def without_item_weights(mapped: Any, weights: Any, coefficients: Any) -> Any:
        return np.einsum("blk,blko->bko", coefficients * (weights != 0)[..., None], mapped)

    patched.setattr(routing_module, "_aggregate", without_item_weights)
    failures = conformance_failures("capsule_routing")
    case = failures["capsule_routing/umi_detached_t3"]
    assert case.first_divergent_intermediate == "weighted_sums_iter0"
    assert "interests" in case.failing_names
    assert "capsule_routing/mind_detached_t3" not in failures  # a_i = 1: nothing to miss


def test_squash_does_not_overflow_or_underflow() -> None:
    """issue 15 case 11: |z|^2 of a float32 vector of norm 1e20 overflows; squash scales by max|z|
    first, so it returns the unit vector (the limit), and a vector of norm 1e-30 gives 0, both with
    no NaN and no numpy warning. Negative control: the unscaled formula gives NaN."""
    z = np.array([[1e20, 0.0, 0.0], [0.0, -1e-30, 0.0]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = squash(z)
    assert v.dtype == np.float32
    np.testing.assert_allclose(v, [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], atol=1e-6)
    with np.errstate(over="ignore", invalid="ignore"):
        norm2 = np.sum(z * z, axis=-1, keepdims=True)
        unscaled = z * (norm2 / ((1 + norm2) * np.sqrt(norm2 + 1e-9)))
    assert np.isnan(unscaled).any()


def squash_unscaled(z: np.ndarray) -> np.ndarray:
    """squash as UMI eq. 6 writes it, on z itself (what the goldens were generated with)."""
    norm2 = np.sum(z * z, axis=-1, keepdims=True)
    result: np.ndarray = z * (norm2 / ((1 + norm2) * np.sqrt(norm2 + 1e-9)))
    return result


def squash_backward_unscaled(z: np.ndarray, d_v: np.ndarray) -> np.ndarray:
    """squash's backward on z itself: g d_v + 2 g'(|z|^2) (z . d_v) z, |z|^2 formed explicitly."""
    norm2 = np.sum(z * z, axis=-1, keepdims=True)
    root = np.sqrt(norm2 + 1e-9)
    scale = norm2 / ((1 + norm2) * root)
    slope = (1 / (1 + norm2) - norm2 / (2 * (norm2 + 1e-9))) / ((1 + norm2) * root)
    result: np.ndarray = scale * d_v + 2 * slope * np.sum(z * d_v, axis=-1, keepdims=True) * z
    return result


def test_squash_backward_does_not_overflow_or_underflow() -> None:
    """issue 15 case 11, the backward: in float32 |z|^2 of norm 1e20 (or 3e38) overflows and the
    unscaled backward gives NaN; squash_backward scales by a power of 2 first and agrees with the
    float64 formula to float32 precision, and a norm of 1e-30 or a subnormal 1e-40 gives 0, all
    with no numpy warning. Negative control: the unscaled backward in float32 gives NaN."""
    z = np.array([[1e20, -3e19, 2e19], [3e38, 1.0, -1e38], [0.0, -1e-30, 0.0], [1e-40, 0.0, 0.0]], np.float32)
    d_v = np.array([[0.3, 1.0, -2.0], [1.0, -0.5, 2.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d_z = squash_backward(z, d_v)
        v = squash(z)
    assert d_z.dtype == np.float32 and v.dtype == np.float32
    expected = squash_backward_unscaled(z.astype(np.float64), d_v.astype(np.float64))
    # gradients below float32's smallest normal number (rows of norm 3e38 and below) are compared absolutely
    np.testing.assert_allclose(d_z, expected, rtol=1e-5, atol=np.finfo(np.float32).tiny)
    assert np.all(d_z[2:] == 0) and np.all(v[2:] == 0)
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.isnan(squash_backward_unscaled(z, d_v)[:2]).any()


@given(seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([0.0, 1e-12, 1e-3, 0.7, 1.0, 3.0, 1e3, 1e30]))
def test_squash_and_its_backward_equal_the_unscaled_formula_bit_for_bit_in_float64(seed: int, scale: float) -> None:
    """The power-of-2 scaling is exact in floating point: in float64 squash and squash_backward
    return exactly the unscaled formula's bits, so no float64 golden moves."""
    rng = np.random.default_rng(seed)
    z, d_v = scale * rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    assert np.array_equal(squash(z), squash_unscaled(z))
    assert np.array_equal(squash_backward(z, d_v), squash_backward_unscaled(z, d_v))


def test_negative_control_scaling_by_max_abs_itself_is_not_bit_exact() -> None:
    """The bit-for-bit check can fail: scaling by m = max|z_d| (not a power of 2) rounds u = z / m,
    and squash then differs from the unscaled formula in the last bits on some rows."""
    z = np.random.default_rng(0).standard_normal((200, 4))
    u = z / np.max(np.abs(z), axis=-1, keepdims=True)
    t2 = 1 / np.max(np.abs(z), axis=-1, keepdims=True) ** 2
    s = np.sum(u * u, axis=-1, keepdims=True)
    scaled_by_max = u * (s / ((t2 + s) * np.sqrt(s + 1e-9 * t2)))
    assert not np.array_equal(scaled_by_max, squash_unscaled(z))
    assert np.array_equal(squash(z), squash_unscaled(z))


def _softmax_by_np_max(scores: Any, mask: Any) -> Any:
    """masked_softmax as it was written before its short-axis row maximum: np.max over the axis."""
    shifted = scores + np.where(mask, 0, -np.inf).astype(scores.dtype)
    row_max = np.max(shifted, axis=-1, keepdims=True, initial=-np.inf)
    shifted -= np.where(np.isfinite(row_max), row_max, 0)
    np.exp(shifted, out=shifted)
    total = shifted.sum(axis=-1, keepdims=True)
    shifted /= np.where(total > 0, total, np.inf)
    return shifted


@settings(max_examples=40)
@given(st.integers(0, 2**32 - 1), st.integers(1, 10), st.sampled_from([np.float32, np.float64]),
       st.sampled_from([1.0, 1e3, 1e-300]))
def test_short_axis_softmax_equals_the_np_max_softmax_bit_for_bit(seed: int, k: int, dtype: Any,
                                                                  scale: float) -> None:
    """The attention kernel's softmax takes the row maximum of a last axis of up to 8 entries (the
    routing softmax's K interests) slice by slice: the same bits as np.max, masked rows, ties at
    the maximum and signed zeros included; k up to 10 covers both paths."""
    rng = np.random.default_rng(seed)
    logits = (scale * rng.standard_normal((3, 5, k))).astype(dtype)
    logits[0, 0] = 0.0  # ties at the maximum, and a row of signed zeros
    logits[0, 1] = -0.0
    mask = rng.random((3, 5, k)) < 0.7
    mask[1, 0] = False  # an all-masked row
    got = masked_softmax(logits, mask)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, _softmax_by_np_max(logits, mask))
    every = np.ones(k, dtype=bool)
    np.testing.assert_array_equal(routing_module.softmax_interests(logits), _softmax_by_np_max(logits, every))


def test_short_axis_bit_identity_fails_for_an_unshifted_softmax() -> None:
    """Negative control of the bit-for-bit property: a softmax without the max shift (equal in
    exact arithmetic) does not pass it."""
    logits = np.random.default_rng(3).standard_normal((64, 20, 3))
    every = np.ones(3, dtype=bool)
    e = np.exp(logits)
    unshifted = e / e.sum(axis=-1, keepdims=True)
    assert not np.array_equal(unshifted, _softmax_by_np_max(logits, every))
    np.testing.assert_array_equal(masked_softmax(logits, every), _softmax_by_np_max(logits, every))
