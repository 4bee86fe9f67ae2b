"""ComiRec-DR's dynamic routing and model: gradients, invariants, and negative controls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refimpl.nn.dynamic_routing as routing_module
from refimpl.cases._base import CaseTensors
from refimpl.cases.dynamic_routing import CASES, Routing, dynamic_routing_case_config, dynamic_routing_reference
from refimpl.conformance import reference_adapter, run_conformance
from refimpl.gradcheck import assert_gradients_match, check_component, check_gradients
from refimpl.models.comirec import ComiRecConfig, comirec_forward, comirec_init, comirec_loss
from refimpl.models.umi import UserBatch
from refimpl.nn.capsule_routing import CapsuleRoutingConfig, CapsuleRoutingParams, capsule_routing_forward
from refimpl.nn.dynamic_routing import (
    DynamicRoutingConfig,
    DynamicRoutingParams,
    dynamic_routing_backward,
    dynamic_routing_forward,
    frozen_dynamic_routing_forward,
)
from refimpl.nn.multi_interest_readout import ReadoutConfig

Arrays = dict[str, Any]
seeds = st.integers(0, 2**32 - 1)


def draw(seed: int, b: int = 2, length: int = 4, k: int = 3, d_in: int = 3, d_out: int = 2) -> Arrays:
    """The golden cases' builder at these sizes, from `seed`, flattened into one dict."""
    t = Routing(batch=b, length=length, interests=k, d_in=d_in, d_out=d_out).build(np.random.default_rng(seed))
    return {**t.inputs, "W": t.params["W"], "upstream": t.upstream["d_interests"]}


def run(x: Arrays, cfg: DynamicRoutingConfig) -> tuple[Any, Any]:
    return dynamic_routing_forward(DynamicRoutingParams(x["W"]), x["items"], x["mask"], cfg)


def comirec_loop(items: Any, mask: Any, W: Any, iterations: int) -> Any:
    """ComiRec's CapsuleNetwork (bilinear_type = 2) written out row by row and position by position."""
    b, length, _ = items.shape
    k, d_out = W.shape[1], W.shape[3]
    out = np.zeros((b, k, d_out))
    for row in range(b):
        u = np.array([[items[row, i] @ W[i, j] for j in range(k)] for i in range(length)])  # (L, K, D_out)
        logits = np.zeros((length, k))
        for _ in range(iterations):
            c = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            c[~mask[row]] = 0.0
            z = np.einsum("ik,ikd->kd", c, u)
            n = np.sum(z * z, axis=1, keepdims=True)
            v = n / (1 + n) * z / np.sqrt(n + 1e-9)
            logits = logits + np.einsum("ikd,kd->ik", u, v)
        out[row] = v
    return out


# ---------------------------------------------------------------- the algorithm, written out


@given(seed=seeds, iterations=st.integers(1, 3), k=st.integers(1, 3))
def test_routing_equals_comirecs_loop_written_out(seed: int, iterations: int, k: int) -> None:
    x = draw(seed, k=k)
    interests, _ = run(x, DynamicRoutingConfig(iterations=iterations))
    np.testing.assert_allclose(interests, comirec_loop(x["items"], x["mask"], x["W"], iterations), atol=1e-12)


def softmax_over_positions(logits: Any, mask: Any) -> Any:
    """The classic porting slip: the softmax over behaviours (axis 1) instead of over interests."""
    e = np.where(mask[:, :, None], np.exp(logits - logits.max(axis=1, keepdims=True)), 0.0)
    return e / np.maximum(e.sum(axis=1, keepdims=True), 1e-300)


@given(seed=seeds, iterations=st.integers(1, 3))
@settings(max_examples=10)
def test_negative_control_the_loop_catches_a_softmax_over_positions(seed: int, iterations: int) -> None:
    x = draw(seed, length=4, k=5)  # K > L: 1/K never equals a uniform 1/n over n <= L valid positions
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(routing_module, "_coefficients", softmax_over_positions)
        broken, _ = run(x, DynamicRoutingConfig(iterations=iterations))
    assert not np.allclose(broken, comirec_loop(x["items"], x["mask"], x["W"], iterations), atol=1e-6)


def test_tiny_case_matches_the_hand_computed_numbers_of_the_spec() -> None:
    tiny = next(case for case in CASES if case.name == "tiny_hand_checked")
    t = tiny.draw()
    result = dynamic_routing_reference(t.inputs, t.params, tiny.config, t.upstream)
    np.testing.assert_allclose(result.intermediates["weighted_sums_iter0"], [[[1.5, 0.5], [2.0, 0.0]]], rtol=1e-15)
    scale = 2.5 / 3.5 / np.sqrt(2.5)
    np.testing.assert_allclose(result.outputs["interests"], [[[1.5 * scale, 0.5 * scale], [0.8, 0.0]]], rtol=1e-9)
    np.testing.assert_allclose(result.outputs["interests"], [[[0.677631, 0.225877], [0.8, 0.0]]], atol=1e-6)


# ---------------------------------------------------------------- gradients


def exact_gradient_problems(cfg: DynamicRoutingConfig, x: Arrays) -> list[str]:
    tensors = CaseTensors(
        inputs={"items": x["items"], "mask": x["mask"]}, params={"W": x["W"]}, upstream={"d_interests": x["upstream"]}
    )
    return check_component(
        dynamic_routing_reference, tensors, dynamic_routing_case_config(cfg.iterations, cfg.detach_routing)
    )


def detached_gradient_problems(x: Arrays, grads: Any, cache: Any) -> list[str]:
    """The detached backward against finite differences of the routing with c frozen at c^{t-1}."""
    frozen = cache.coefficients[-1]

    def f(at: Arrays) -> float:
        v = frozen_dynamic_routing_forward(DynamicRoutingParams(at["W"]), at["items"], frozen)
        return float(np.sum(v * x["upstream"]))

    return check_gradients(f, {"W": x["W"], "items": x["items"]}, {"W": grads.W, "items": grads.items})


@given(seed=seeds, iterations=st.integers(1, 3), k=st.integers(1, 3))
@settings(max_examples=8)
def test_exact_gradient_matches_finite_differences(seed: int, iterations: int, k: int) -> None:
    assert_gradients_match(exact_gradient_problems(DynamicRoutingConfig(iterations, False), draw(seed, k=k)))


@given(seed=seeds, iterations=st.integers(1, 3), k=st.integers(1, 3))
@settings(max_examples=8)
def test_detached_gradient_matches_frozen_coefficients(seed: int, iterations: int, k: int) -> None:
    x = draw(seed, k=k)
    _, cache = run(x, DynamicRoutingConfig(iterations, True))
    assert_gradients_match(detached_gradient_problems(x, dynamic_routing_backward(cache, x["upstream"]), cache))


def test_negative_control_exact_check_catches_detached_gradient() -> None:
    assert exact_gradient_problems(DynamicRoutingConfig(3, True), draw(1))


def test_negative_control_frozen_check_catches_exact_gradient() -> None:
    x = draw(2)
    _, exact = run(x, DynamicRoutingConfig(3, False))
    assert detached_gradient_problems(x, dynamic_routing_backward(exact, x["upstream"]), exact)


# ---------------------------------------------------------------- invariants


def assert_padded_positions_inert(x: Arrays, cfg: DynamicRoutingConfig) -> None:
    """Noise at padded positions changes nothing; they get zero gradient; c is a distribution over
    interests at valid positions and 0 at padded ones."""
    interests, cache = run(x, cfg)
    noisy = dict(x, items=np.where(x["mask"][..., None], x["items"], 100.0 * np.abs(x["items"]) + 5.0))
    noisy_interests, noisy_cache = run(noisy, cfg)
    np.testing.assert_allclose(noisy_interests, interests, atol=1e-12)
    grads = dynamic_routing_backward(noisy_cache, x["upstream"])
    assert np.all(grads.items[~x["mask"]] == 0)
    for c in cache.coefficients:
        np.testing.assert_allclose(c[x["mask"]].sum(axis=-1), 1.0, rtol=1e-12)
        assert np.all(c[~x["mask"]] == 0)


@given(seed=seeds, iterations=st.integers(1, 3), detach=st.booleans())
def test_padded_positions_change_nothing_and_get_zero_gradient(seed: int, iterations: int, detach: bool) -> None:
    assert_padded_positions_inert(draw(seed, b=3, length=5), DynamicRoutingConfig(iterations, detach))


def test_negative_control_padding_check_catches_an_unmasked_softmax(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routing_module, "_coefficients", lambda logits, mask: routing_module.softmax_interests(logits))
    x = draw(4, b=3, length=5)
    assert not x["mask"].all()
    with pytest.raises(AssertionError):
        assert_padded_positions_inert(x, DynamicRoutingConfig())


@given(seed=seeds, iterations=st.integers(1, 3))
def test_one_map_for_every_position_and_interest_is_mind_routing_from_zero_logits(seed: int, iterations: int) -> None:
    """W[i, j] = S for all i, j equals capsule_routing's MIND configuration (shared S, a_i = 1,
    accumulate) started at b^0 = 0: then every interest is the same vector (MIND's random b^0
    is what breaks the symmetry)."""
    x = draw(seed, k=3)
    shared = x["W"][0, 0]
    W = np.broadcast_to(shared, x["W"].shape).copy()
    cfg = DynamicRoutingConfig(iterations)
    interests, _ = dynamic_routing_forward(DynamicRoutingParams(W), x["items"], x["mask"], cfg)
    b, length, _ = x["items"].shape
    mind, _ = capsule_routing_forward(
        CapsuleRoutingParams(shared), x["items"], np.ones((b, length)), x["mask"], np.zeros((b, length, 3)),
        CapsuleRoutingConfig(iterations=iterations, update="accumulate", map="shared"),
    )
    np.testing.assert_allclose(interests, mind, atol=1e-12)
    np.testing.assert_allclose(interests, np.broadcast_to(interests[:, :1], interests.shape), atol=1e-12)


def reversed_rows(x: Arrays) -> Arrays:
    return dict(x, items=x["items"][:, ::-1], mask=x["mask"][:, ::-1])


def test_negative_control_permuting_behaviours_moves_comirec_not_mind() -> None:
    """MIND's routing is invariant to the order of behaviours; ComiRec-DR's is not (W[i] belongs to
    slot i): a check that the two routings agree on permuted input must fail for ComiRec-DR."""
    x = draw(5, b=2, length=5)
    x["mask"][:] = True
    b, length, _ = x["items"].shape
    mind_cfg = CapsuleRoutingConfig(update="accumulate", map="shared")
    logits = np.random.default_rng(0).standard_normal((b, length, 3))

    def mind(y: Arrays, b0: Any) -> Any:
        return capsule_routing_forward(
            CapsuleRoutingParams(x["W"][0, 0]), y["items"], np.ones((b, length)), y["mask"], b0, mind_cfg
        )[0]

    np.testing.assert_allclose(mind(reversed_rows(x), logits[:, ::-1]), mind(x, logits), atol=1e-12)
    comirec = run(x, DynamicRoutingConfig())[0]
    assert not np.allclose(run(reversed_rows(x), DynamicRoutingConfig())[0], comirec, atol=1e-6)


@given(seed=seeds, iterations=st.integers(1, 3))
def test_one_interest_is_squash_of_the_mapped_sum(seed: int, iterations: int) -> None:
    x = draw(seed, k=1)
    interests, _ = run(x, DynamicRoutingConfig(iterations))
    z = np.einsum("bl,bld->bd", x["mask"].astype(float), np.einsum("blc,lcd->bld", x["items"], x["W"][:, 0]))
    n = np.sum(z * z, axis=-1, keepdims=True)
    np.testing.assert_allclose(interests[:, 0], n / (1 + n) * z / np.sqrt(n + 1e-9), atol=1e-12)


def test_float32_in_float32_out() -> None:
    x = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in draw(6).items()}
    interests, cache = run(x, DynamicRoutingConfig(3, False))
    grads = dynamic_routing_backward(cache, x["upstream"])
    assert interests.dtype == grads.W.dtype == grads.items.dtype == np.float32
    np.testing.assert_allclose(interests, run(draw(6), DynamicRoutingConfig())[0], atol=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x: dict(x, items=x["items"][0]), "items: expected 3 dimensions"),
        (lambda x: dict(x, mask=x["mask"].astype(int)), "mask: expected a bool mask"),
        (lambda x: dict(x, W=x["W"][:-1]), "W: expected shape (L, K, D_in, D_out)"),
        (lambda x: dict(x, W=x["W"][:, :0]), "W: expected at least one interest"),
        (lambda x: dict(x, W=x["W"].astype(np.float32)), "W: dtype float32 differs"),
        (lambda x: dict(x, items=np.where(x["mask"][..., None], np.nan, x["items"])), "items:"),
    ],
)
def test_bad_inputs_raise_errors_naming_the_argument(change: Callable[[Arrays], Arrays], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(").replace(")", r"\)")):
        run(change(draw(7)), DynamicRoutingConfig())


@pytest.mark.parametrize(
    ("cfg", "message"),
    [(DynamicRoutingConfig(iterations=0), "cfg.iterations"), (DynamicRoutingConfig(detach_routing=1), "cfg.detach")],  # type: ignore[arg-type]
)
def test_bad_configs_raise_errors_naming_the_field(cfg: DynamicRoutingConfig, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        run(draw(7), cfg)


# ---------------------------------------------------------------- the ComiRec-DR model


def model_batch(seed: int, b: int = 3, length: int = 4, k: int = 2, vocab: int = 9) -> UserBatch:
    rng = np.random.default_rng(seed)
    mask = rng.random((b, length)) < 0.8
    mask[:, 0] = True
    return UserBatch(
        behaviour_ids=rng.integers(0, vocab, (b, length)),
        mask=mask,
        profile_ids=np.zeros((b, 0), dtype=np.int64),
        initial_logits=np.zeros((b, length, k)),
    )


@pytest.mark.parametrize("mode", ["standard", "harder_negatives"])
def test_model_loss_gradient_matches_finite_differences(mode: str) -> None:
    cfg = ComiRecConfig(num_items=9, dim=3, num_interests=2, max_length=5, routing=DynamicRoutingConfig(3, False))
    params = comirec_init(np.random.default_rng(8), cfg)
    batch, positives, negatives = model_batch(8), np.array([1, 2, 3]), np.array([4, 5, 1, 7])
    readout = ReadoutConfig(mode)
    _, grads = comirec_loss(params, batch, positives, negatives, cfg, readout)
    problems = check_gradients(
        lambda at: float(comirec_loss(at, batch, positives, negatives, cfg, readout)[0]), params, grads
    )
    assert_gradients_match(problems)
    assert np.all(grads["routing_W"][4] == 0)  # the batch has L = 4 of L_max = 5 maps


def test_harder_negatives_loss_is_at_least_the_standard_loss() -> None:
    cfg = ComiRecConfig(num_items=9, dim=3, num_interests=3, max_length=4)
    params = comirec_init(np.random.default_rng(9), cfg)
    batch = model_batch(9, k=3)
    losses = [
        float(comirec_loss(params, batch, np.array([1, 2, 3]), np.array([4, 5, 6]), cfg, ReadoutConfig(mode))[0])
        for mode in ("standard", "harder_negatives")
    ]
    assert losses[1] >= losses[0]


def test_model_refuses_a_batch_longer_than_its_maps() -> None:
    cfg = ComiRecConfig(num_items=9, dim=3, num_interests=2, max_length=3)
    with pytest.raises(ValueError, match="cfg.max_length = 3"):
        comirec_forward(comirec_init(np.random.default_rng(0), cfg), model_batch(0), cfg)


def test_model_refuses_a_wrong_routing_map_shape() -> None:
    cfg = ComiRecConfig(num_items=9, dim=3, num_interests=2, max_length=4)
    params = comirec_init(np.random.default_rng(0), cfg)
    params["routing_W"] = params["routing_W"][:, :1]
    with pytest.raises(ValueError, match="routing_W"):
        comirec_forward(params, model_batch(0), cfg)


# ---------------------------------------------------------------- conformance


def conformance_failures(component: str) -> dict[str, Any]:
    report = run_conformance(reference_adapter(), components=[component])
    return {r.case_id: r for r in report.results if r.status == "fail"}


@pytest.mark.parametrize("component", ["dynamic_routing", "comirec", "dssm"])
def test_reference_passes_its_own_goldens(component: str) -> None:
    report = run_conformance(reference_adapter(), components=[component])
    assert report.ok and report.results, [r.text for r in report.results]


def test_conformance_catches_unmasked_coefficients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Padded positions routed like real ones: every case with padding fails at the first
    coefficients; K = 1 fails too (its padded c would be 1)."""
    monkeypatch.setattr(routing_module, "_coefficients", lambda logits, mask: routing_module.softmax_interests(logits))
    failures = conformance_failures("dynamic_routing")
    case = failures["dynamic_routing/comirec_detached_t3"]
    assert case.first_divergent_intermediate == "routing_coefficients_iter0"
    assert "dynamic_routing/k1_exact_t3" in failures
    assert "dynamic_routing/tiny_hand_checked" not in failures  # no padding: nothing to mask
    assert "comirec/small_detached" in conformance_failures("comirec")


def test_conformance_catches_one_map_per_interest_for_every_position(monkeypatch: pytest.MonkeyPatch) -> None:
    """UMI's per-interest maps W_j (position 0's for every position) instead of W[i, j]."""
    original = routing_module._map
    monkeypatch.setattr(routing_module, "_map", lambda W, items: original(np.broadcast_to(W[:1], W.shape), items))
    failures = conformance_failures("dynamic_routing")
    assert failures["dynamic_routing/comirec_detached_t3"].first_divergent_intermediate == "mapped_items"
