"""The UMI and MIND models: end-to-end gradients, the training loss, masking, API, negative controls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

import refimpl.models.mind as mind_module
import refimpl.models.umi as umi_module
from refimpl.conformance import reference_adapter, run_conformance
from refimpl.gradcheck import assert_gradients_match, check_gradients
from refimpl.models.mind import MINDConfig, mind_backward, mind_forward, mind_init, mind_loss
from refimpl.models.umi import (
    UMIConfig,
    UserBatch,
    draw_initial_logits,
    umi_backward,
    umi_backward_with_inputs,
    umi_forward,
    umi_init,
    umi_loss,
)
from refimpl.nn.capsule_routing import CapsuleRoutingConfig, frozen_routing_forward
from refimpl.nn.multi_interest_readout import ReadoutConfig
from refimpl.optim import AdamConfig, adam_init, adam_step

B, L, K, V, D, C, F, VP = 2, 5, 3, 6, 3, 2, 2, 4
EXACT = CapsuleRoutingConfig(detach_routing=False)


def umi_cfg(routing: CapsuleRoutingConfig = EXACT, **switches: bool) -> UMIConfig:
    return UMIConfig(V, VP, C, D, F, K, attention_hidden=3, field_hidden=3, refine_hidden=4, routing=routing,
                     **switches)


def mind_cfg(detach: bool = False) -> MINDConfig:
    routing = CapsuleRoutingConfig(update="accumulate", map="shared", detach_routing=detach)
    return MINDConfig(V, VP, C, D, F, K, hidden=4, routing=routing)


def batch(seed: int) -> UserBatch:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, (B, L))
    ids[0, 1] = ids[0, 0]
    mask = rng.random((B, L)) < 0.7
    mask[:, :2] = True
    return UserBatch(ids, mask, rng.integers(0, VP, (B, C)), draw_initial_logits(rng, B, L, K))


def with_biases(params: dict[str, Any], seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {k: 0.1 * rng.standard_normal(v.shape) if v.ndim == 1 else v for k, v in params.items()}


MODELS: dict[str, tuple[Any, ...]] = {
    "umi": (umi_init, umi_forward, umi_backward, umi_loss, umi_cfg),
    "mind": (mind_init, mind_forward, mind_backward, mind_loss, lambda: mind_cfg()),
    # UMI Table 3's ablations (w/o DAR, w/o IR): the same model with a block switched off
    "umi_without_dar": (umi_init, umi_forward, umi_backward, umi_loss,
                        lambda: umi_cfg(user_guided_attention=False)),
    "umi_without_ir": (umi_init, umi_forward, umi_backward, umi_loss,
                       lambda: umi_cfg(interest_refinement=False)),
}
ABLATIONS = ["umi_without_dar", "umi_without_ir"]


def model_gradient_problems(
    name: str, seed: int, backward: Callable[..., Any] | None = None, only: tuple[str, ...] = ()
) -> list[str]:
    init, forward, default_backward, _, make_cfg = MODELS[name]
    cfg = make_cfg()
    params = with_biases(init(np.random.default_rng(seed), cfg), seed)
    x = batch(seed)
    upstream = np.random.default_rng(seed + 1).standard_normal((B, K, D))

    def f(at: dict[str, Any]) -> float:
        b = replace(x, initial_logits=at.get("initial_logits", x.initial_logits))
        out, _ = forward({k: at.get(k, v) for k, v in params.items()}, b, cfg)
        return float(np.sum(out * upstream))

    _, cache = forward(params, x, cfg)
    grads = (backward or default_backward)(cache, upstream)
    with_inputs = umi_backward_with_inputs if name.startswith("umi") else mind_module.mind_backward_with_inputs
    d_logits = with_inputs(cache, upstream)[1]
    point = {**params, "initial_logits": x.initial_logits}
    point = {k: v for k, v in point.items() if not only or k in only}
    return check_gradients(f, point, {**grads, "initial_logits": d_logits}, max_full_elements=60)


@pytest.mark.parametrize("name", ["umi", "mind", *ABLATIONS])
def test_model_gradient_matches_finite_differences(name: str) -> None:
    assert_gradients_match(model_gradient_problems(name, 0))


def test_negative_control_model_check_catches_a_dropped_gradient() -> None:
    def drops_profile(cache: Any, d: Any) -> Any:
        return {**umi_backward(cache, d), "profile_table": np.zeros((VP, F))}

    assert model_gradient_problems("umi", 1, drops_profile, only=("profile_table",))


@pytest.mark.parametrize("name", ["umi", "mind"])
def test_detached_model_gradient_matches_frozen_coefficients(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Detached: the gradient of the model whose final routing coefficients are constants."""
    init, forward, backward, _, _ = MODELS[name]
    cfg = umi_cfg(CapsuleRoutingConfig()) if name == "umi" else mind_cfg(detach=True)
    module = umi_module if name == "umi" else mind_module
    params = with_biases(init(np.random.default_rng(2), cfg), 2)
    x = batch(2)
    upstream = np.random.default_rng(3).standard_normal((B, K, D))
    _, cache = forward(params, x, cfg)
    grads = backward(cache, upstream)
    frozen = cache.routing.coefficients[-1]
    real = module.capsule_routing_forward

    def frozen_routing(p: Any, items: Any, weights: Any, mask: Any, logits: Any, c: Any) -> Any:
        _, routing_cache = real(p, items, weights, mask, logits, c)
        return frozen_routing_forward(p, items, weights, mask, frozen), routing_cache

    monkeypatch.setattr(module, "capsule_routing_forward", frozen_routing)

    def f(at: dict[str, Any]) -> float:
        return float(np.sum(forward(at, x, cfg)[0] * upstream))

    assert_gradients_match(check_gradients(f, params, grads, max_full_elements=60))


@pytest.mark.parametrize("name", ["umi", "mind", *ABLATIONS])
@pytest.mark.parametrize("mode", ["standard", "harder_negatives"])
def test_training_loss_gradient_matches_finite_differences(name: str, mode: str) -> None:
    init, _, _, loss_fn, make_cfg = MODELS[name]
    cfg = make_cfg()
    params = with_biases(init(np.random.default_rng(4), cfg), 4)
    x = batch(4)
    positive_ids = np.array([1, 2])
    negative_ids = np.array([0, 2, 3, 3])  # a duplicate and an accidental hit of row 1
    readout = ReadoutConfig(mode=mode)

    def f(at: dict[str, Any]) -> float:
        return float(loss_fn({**params, **at}, x, positive_ids, negative_ids, cfg, readout)[0])

    loss, grads = loss_fn(params, x, positive_ids, negative_ids, cfg, readout)
    assert loss.shape == () and np.isfinite(loss)
    # The item table (targets and behaviours) and two weights on the interests' path; the
    # other parameters' gradients are d_interests through the model, checked above.
    point = {k: params[k] for k in ("item_table", "profile_table", "routing_W")}
    assert_gradients_match(check_gradients(f, point, grads, max_full_elements=40))


@pytest.mark.parametrize("name", ["umi", "mind", *ABLATIONS])
def test_padded_behaviours_change_nothing_and_get_zero_gradient(name: str) -> None:
    init, forward, backward, _, make_cfg = MODELS[name]
    cfg = make_cfg()
    params = init(np.random.default_rng(5), cfg)
    x = batch(5)
    mask = x.mask.copy()
    mask[1] = False  # an all-padded user too
    x = replace(x, mask=mask)
    ids = x.behaviour_ids.copy()
    ids[~mask] = V - 1  # the only occurrences of item V-1
    ids[mask & (ids == V - 1)] = 0
    x = replace(x, behaviour_ids=ids)
    other = replace(
        x, behaviour_ids=np.where(mask, ids, V - 2), initial_logits=np.where(mask[..., None], x.initial_logits, 9.0)
    )
    out, cache = forward(params, x, cfg)
    np.testing.assert_array_equal(forward(params, other, cfg)[0], out)
    grads = backward(cache, np.random.default_rng(6).standard_normal(out.shape))
    assert np.all(grads["item_table"][V - 1] == 0)


@pytest.mark.parametrize("name", ["umi", "mind"])
def test_api_params_grads_adam_and_float32(name: str) -> None:
    init, forward, backward, loss_fn, make_cfg = MODELS[name]
    cfg = make_cfg()
    params = init(np.random.default_rng(7), cfg)
    again = init(np.random.default_rng(7), cfg)
    assert all(np.array_equal(params[k], again[k]) for k in params)  # all randomness from rng
    x = batch(7)
    out, cache = forward(params, x, cfg)
    assert out.shape == (B, K, D)
    grads = backward(cache, np.ones_like(out))
    assert grads.keys() == params.keys()
    assert all(grads[k].shape == params[k].shape for k in params)
    new_params, _ = adam_step(params, grads, adam_init(params), AdamConfig())
    assert new_params.keys() == params.keys()
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    x32 = replace(x, initial_logits=x.initial_logits.astype(np.float32))
    out32, cache32 = forward(p32, x32, cfg)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out, rtol=1e-4, atol=1e-5)
    assert all(g.dtype == np.float32 for g in backward(cache32, np.ones_like(out32)).values())
    with pytest.raises(ValueError, match="behaviour_ids"):
        forward(params, replace(x, behaviour_ids=x.behaviour_ids + V), cfg)
    with pytest.raises(ValueError, match="initial_logits"):
        forward(params, replace(x, initial_logits=x.initial_logits[:, :, :2]), cfg)
    with pytest.raises(ValueError, match="routing_W"):
        forward({k: v for k, v in params.items() if k != "routing_W"}, x, cfg)
    with pytest.raises(ValueError, match="d_interests"):
        backward(cache, np.ones((B, K, D + 1)))


@pytest.mark.parametrize("name", ["umi", "mind"])
def test_training_decreases_the_loss(name: str) -> None:
    init, _, _, loss_fn, make_cfg = MODELS[name]
    cfg = replace(make_cfg(), routing=replace(make_cfg().routing, detach_routing=True))
    params = init(np.random.default_rng(8), cfg)
    x = batch(8)
    positive_ids, negative_ids = np.array([1, 4]), np.array([0, 2, 3, 5])
    state, adam = adam_init(params), AdamConfig(lr=0.05)
    losses = []
    for _ in range(30):
        loss, grads = loss_fn(params, x, positive_ids, negative_ids, cfg, ReadoutConfig())
        losses.append(float(loss))
        params, state = adam_step(params, grads, state, adam)
    assert losses[-1] < 0.5 * losses[0]


def fancy_index_backward(cache: Any, d_out: Any) -> Any:
    """The classic bug: `d_table[ids] += d_out` keeps one of several duplicate ids."""
    d_table = np.zeros((cache.vocab, d_out.shape[-1]), dtype=d_out.dtype)
    d_table[cache.ids.reshape(-1)] += d_out.reshape(-1, d_out.shape[-1])
    return d_table


def test_models_pass_their_goldens() -> None:
    report = run_conformance(reference_adapter(), components=["umi", "mind"])
    assert report.ok and len(report.results) == 6, [r.text for r in report.results]


def test_conformance_catches_fancy_index_accumulation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(umi_module, "embedding_backward", fancy_index_backward)
    monkeypatch.setattr(mind_module, "embedding_backward", fancy_index_backward)
    report = run_conformance(reference_adapter(), components=["umi", "mind"])
    failed = {r.case_id: r for r in report.results if r.status == "fail"}
    assert set(failed) == {f"{m}/{c}" for m in ("umi", "mind") for c in ("small_detached", "small_exact", "realistic")}
    for result in failed.values():  # only the two scattered gradients; profile ids repeat across users
        assert set(result.failing_names) == {"d_item_table", "d_profile_table"}


def test_mind_without_profile_fields() -> None:
    """C = 0 (data without user profiles): MIND still routes, and its gradient is exact."""
    cfg = replace(mind_cfg(), num_fields=0)
    params = mind_init(np.random.default_rng(9), cfg)
    x = replace(batch(9), profile_ids=np.zeros((B, 0), dtype=np.int64))
    upstream = np.random.default_rng(10).standard_normal((B, K, D))
    out, cache = mind_forward(params, x, cfg)
    assert out.shape == (B, K, D) and params["mlp_W1"].shape[0] == D

    def f(at: dict[str, Any]) -> float:
        return float(np.sum(mind_forward({**params, **at}, x, cfg)[0] * upstream))

    point = {k: params[k] for k in ("item_table", "routing_W", "mlp_W1")}
    assert_gradients_match(check_gradients(f, point, mind_backward(cache, upstream), max_full_elements=30))
    with pytest.raises(ValueError, match="num_fields"):
        umi_init(np.random.default_rng(0), replace(umi_cfg(), num_fields=0))


@pytest.mark.parametrize("name", ["umi", "mind"])
def test_negative_control_padding_check_catches_routing_that_ignores_the_mask(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken model whose routing weighs and routes padded positions like real behaviours."""
    module = umi_module if name == "umi" else mind_module
    real_routing = module.capsule_routing_forward

    def unmasked_routing(p: Any, items: Any, weights: Any, mask: Any, logits: Any, c: Any) -> Any:
        padded_weighted = np.where(mask, weights, np.ones_like(weights))
        return real_routing(p, items, padded_weighted, np.ones_like(mask), logits, c)

    monkeypatch.setattr(module, "capsule_routing_forward", unmasked_routing)
    with pytest.raises(AssertionError):
        test_padded_behaviours_change_nothing_and_get_zero_gradient(name)


def test_negative_control_training_loss_check_catches_a_wrong_item_table_gradient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken training loss whose item-table gradient is halved: the same check fails."""
    init, forward, backward, real_loss, make_cfg = MODELS["umi"]

    def halves_item_table(*args: Any) -> Any:
        loss, grads = real_loss(*args)
        return loss, {**grads, "item_table": 0.5 * grads["item_table"]}

    monkeypatch.setitem(MODELS, "umi", (init, forward, backward, halves_item_table, make_cfg))
    with pytest.raises(AssertionError):
        test_training_loss_gradient_matches_finite_differences("umi", "standard")


def test_ablation_switches_drop_their_blocks_and_are_validated() -> None:
    without_dar = umi_init(np.random.default_rng(0), umi_cfg(user_guided_attention=False))
    without_ir = umi_init(np.random.default_rng(0), umi_cfg(interest_refinement=False))
    assert not any(name.startswith("uga_") for name in without_dar)
    assert not any(name.startswith("refine_") for name in without_ir) and "mlp_W1" in without_ir
    # w/o DAR weighs every valid behaviour 1: the routing sees the mask alone
    interests, cache = umi_forward(without_dar, batch(0), umi_cfg(user_guided_attention=False))
    assert cache.attention is None and np.isfinite(interests).all()
    with pytest.raises(TypeError, match="cfg.user_guided_attention"):
        umi_init(np.random.default_rng(0), umi_cfg(user_guided_attention="no"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uga_W1"):  # the full model's params do not fit the ablation
        umi_forward(umi_init(np.random.default_rng(0), umi_cfg()), batch(0), umi_cfg(user_guided_attention=False))
