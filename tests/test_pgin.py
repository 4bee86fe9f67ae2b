"""The PGIN model (refimpl.models.pgin): end-to-end gradients, y a distribution, serving's top-k
with its tie rule, padding ignored, and a real learning check against the pointer-only and
generator-only ablations."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl.cases.pgin import CASES, COMPONENTS, random_batch
from refimpl.conformance import reference_adapter, run_conformance
from refimpl.gradcheck import assert_gradients_match, check_component
from refimpl.models.pgin import (
    PGINBatch,
    PGINConfig,
    make_batch,
    param_shapes,
    pgin_backward,
    pgin_forward,
    pgin_init,
    pgin_loss_and_grads,
    top_k_categories,
    top_k_from_distribution,
)
from refimpl.optim import AdamConfig, adam_init, adam_step

SMALL = PGINConfig(num_categories=7, num_items=9, user_feature_dim=3, dim=4, num_heads=2, mlp_hidden=(5,))


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


# small: tensors of <= 8 elements element by element, larger ones along 3 random directions plus 2
# elements; one_category (mostly zero gradients): one random direction per tensor, to stay quick.
FD_OPTIONS = {"small": {"max_full_elements": 8}, "one_category": {"max_full_elements": 1, "directions": 1}}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_whole_model_gradients_match_finite_differences(case: Any) -> None:
    problems = check_component(COMPONENTS["pgin"], case.draw(), case.config, **FD_OPTIONS[case.name])
    assert_gradients_match(problems)


def test_reference_passes_its_model_goldens() -> None:
    report = run_conformance(reference_adapter(), components=["pgin"])
    assert report.ok and len(report.results) == len(CASES)


@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 6),
    st.sampled_from(["learned", "pointer", "generator"]),
    st.sampled_from([np.float32, np.float64]),
)
def test_y_is_a_distribution_with_pointer_mass_on_the_history(
    seed: int, c: int, gate: str, dtype: Any
) -> None:
    cfg = replace(SMALL, num_categories=c, gate=gate)
    rng = _rng(seed)
    params = pgin_init(rng, cfg, dtype)
    batch = random_batch(rng, cfg, 3, 5, 2, 3)
    batch = replace(batch, user_features=batch.user_features.astype(dtype))
    out, _ = pgin_forward(params, batch, cfg)
    assert out.y.dtype == dtype and (out.y >= 0).all()
    np.testing.assert_allclose(out.y.sum(axis=1), 1, atol=1e-5 if dtype == np.float32 else 1e-12)
    off_history = np.ones_like(out.y_poi, dtype=bool)
    for row in range(3):
        off_history[row, batch.history[row, batch.history_mask[row]]] = False
    assert (out.y_poi[off_history] == 0).all()


def test_masked_ids_are_ignored() -> None:
    rng = _rng(1)
    params = pgin_init(rng, SMALL)
    batch = random_batch(rng, SMALL, 3, 6, 3, 4)
    batch.short_mask[0] = False
    garbage = replace(
        batch,
        long_items=np.where(batch.long_mask, batch.long_items, 999),
        long_categories=np.where(batch.long_mask, batch.long_categories, -1),
        short_items=np.where(batch.short_mask, batch.short_items, -5),
        history=np.where(batch.history_mask, batch.history, 77),
    )
    np.testing.assert_array_equal(pgin_forward(params, batch, SMALL)[0].y, pgin_forward(params, garbage, SMALL)[0].y)


def test_top_k_breaks_ties_to_the_lowest_id() -> None:
    y = np.array([[0.2, 0.3, 0.2, 0.3], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_array_equal(top_k_from_distribution(y, 3), [[1, 3, 0], [0, 1, 2]])
    # Negative control: a descending argsort that is not stable puts the highest id first.
    assert np.argsort(y, axis=1, kind="stable")[:, ::-1][:, :3].tolist() != [[1, 3, 0], [0, 1, 2]]


def test_top_k_categories_serves_the_most_probable_categories() -> None:
    rng = _rng(2)
    params = pgin_init(rng, SMALL)
    batch = random_batch(rng, SMALL, 4, 6, 3, 4)
    top = top_k_categories(params, batch, 3, SMALL)
    assert top.shape == (4, 3) and top.dtype == np.int64
    y = pgin_forward(params, replace(batch, label=None), SMALL)[0].y
    picked = np.take_along_axis(y, top, axis=1)
    assert (np.diff(picked, axis=1) <= 0).all()
    assert (picked[:, -1:] >= np.sort(y, axis=1)[:, -3:-2]).all()
    for k in (0, SMALL.num_categories + 1):
        with pytest.raises(ValueError, match="k"):
            top_k_categories(params, batch, k, SMALL)


def test_bad_params_and_batches_are_refused() -> None:
    rng = _rng(3)
    params = pgin_init(rng, SMALL)
    batch = random_batch(rng, SMALL, 2, 4, 2, 3)
    missing = {k: v for k, v in params.items() if k != "gate_b"}
    with pytest.raises(ValueError, match="gate_b"):
        pgin_forward(missing, batch, SMALL)
    with pytest.raises(ValueError, match="mlp_W0"):
        pgin_forward({**params, "mlp_W0": np.zeros((4, 6))}, batch, SMALL)
    with pytest.raises(TypeError, match="user_features"):
        pgin_forward(params, replace(batch, user_features=batch.user_features.astype(np.float32)), SMALL)
    with pytest.raises(ValueError, match="long_items"):
        pgin_forward(params, replace(batch, long_items=batch.long_items + 100), SMALL)
    with pytest.raises(ValueError, match="short_mask"):
        pgin_forward(params, replace(batch, short_mask=np.ones((2, 5), dtype=bool)), SMALL)
    with pytest.raises(ValueError, match="cfg.num_heads"):
        pgin_init(rng, replace(SMALL, num_heads=3))


def test_backward_returns_a_gradient_for_every_param_in_their_dtype() -> None:
    rng = _rng(4)
    params = pgin_init(rng, SMALL, np.float32)
    batch = random_batch(rng, SMALL, 2, 4, 2, 3)
    batch = replace(batch, user_features=batch.user_features.astype(np.float32))
    out, cache = pgin_forward(params, batch, SMALL)
    grads, d_user = pgin_backward(cache, 1.0)
    assert set(grads) == set(param_shapes(SMALL))
    assert all(grads[k].shape == v.shape and grads[k].dtype == np.float32 for k, v in params.items())
    assert d_user.shape == (2, 3) and d_user.dtype == np.float32


def test_make_batch_merges_the_history() -> None:
    ones = np.ones((1, 3), dtype=bool)
    batch = make_batch(
        np.zeros((1, 2)), np.zeros((1, 3), dtype=np.int64), np.array([[4, 2, 4]]), ones,
        np.zeros((1, 3), dtype=np.int64), np.array([[1, 2, 1]]), ones, 5,
    )
    np.testing.assert_array_equal(batch.history[0, batch.history_mask[0]], [4, 2, 1])


# --- the learning check ---------------------------------------------------------------------

HOME, TYPES, BLOCK, HISTORY = 30, 5, 2, 3
TASK = PGINConfig(num_categories=HOME + TYPES * BLOCK, num_items=50, user_feature_dim=TYPES + 2,
                  dim=8, num_heads=1, mlp_hidden=(32,))


def next_category_task(rng: np.random.Generator, b: int, return_rate: float = 0.5) -> PGINBatch:
    """Users of one of TYPES types (one-hot in their features, plus noise) have engaged with
    HISTORY distinct categories among the first HOME. With probability `return_rate` the next
    category is one of them (uniformly); otherwise it is new: one of the BLOCK categories (after
    HOME) of the user's type, never in any history."""
    types = rng.integers(0, TYPES, b)
    features = np.concatenate([np.eye(TYPES)[types], rng.standard_normal((b, 2))], axis=1)
    history = np.stack([rng.permutation(HOME)[:HISTORY] for _ in range(b)])
    rows = np.arange(b)[:, None]
    long_categories = history[rows, rng.integers(0, HISTORY, (b, 12))]
    short_categories = history[rows, rng.integers(0, HISTORY, (b, 4))]
    returns = rng.random(b) < return_rate
    label = np.where(
        returns,
        history[np.arange(b), rng.integers(0, HISTORY, b)],
        HOME + types * BLOCK + rng.integers(0, BLOCK, b),
    ).astype(np.int64)
    return make_batch(
        features, rng.integers(0, TASK.num_items, (b, 12)), long_categories, np.ones((b, 12), dtype=bool),
        rng.integers(0, TASK.num_items, (b, 4)), short_categories, np.ones((b, 4), dtype=bool), 6, label,
    )


def train_and_score(gate: str, steps: int = 200) -> float:
    """Top-5 accuracy on 1000 held-out users after `steps` Adam steps on fresh batches of 32."""
    cfg = replace(TASK, gate=gate)
    rng = _rng(0)
    params = pgin_init(rng, cfg)
    state = adam_init(params)
    adam = AdamConfig(lr=0.02)
    for _ in range(steps):
        _, grads = pgin_loss_and_grads(params, next_category_task(rng, 32), cfg)
        params, state = adam_step(params, grads, state, adam)
    test = next_category_task(_rng(99), 1000)
    assert test.label is not None
    top = top_k_categories(params, test, 5, cfg)
    return float((top == test.label[:, None]).any(axis=1).mean())


def test_the_model_learns_to_blend_pointer_and_generator() -> None:
    full = train_and_score("learned")
    pointer_only = train_and_score("pointer")
    generator_only = train_and_score("generator")
    # Half the targets are returns, half new: each ablation can only be good at one half.
    assert full > 0.9, (full, pointer_only, generator_only)
    assert full > pointer_only + 0.25 and full > generator_only + 0.25, (full, pointer_only, generator_only)


# --- negative controls: each check above applied to a deliberately broken variant -----------


def test_negative_control_gradient_check_catches_a_wrong_pgin_backward() -> None:
    """A backward that halves the gating weight's gradient is caught by the same check."""
    case = next(c for c in CASES if c.name == "small")

    def halves_gate_gradient(inputs: Any, params: Any, config: Any, upstream: Any) -> Any:
        result = COMPONENTS["pgin"](inputs, params, config, upstream)
        return replace(result, grads={**result.grads, "d_gate_w": 0.5 * result.grads["d_gate_w"]})

    problems = check_component(halves_gate_gradient, case.draw(), case.config, **FD_OPTIONS["small"])
    assert any("gate_w" in p for p in problems)
    with pytest.raises(AssertionError):
        assert_gradients_match(problems)


def _unnormalised_mixture(real: Any) -> Any:
    """A broken gate: y = P_poi y_poi + y_gen (forgets the 1 - P_poi)."""

    def mixture(*args: Any) -> Any:
        out, cache = real(*args)
        return replace(out, y=out.P_poi[:, None] * out.y_poi + out.y_gen), cache

    return mixture


def _pointer_reading_padded_history(real: Any) -> Any:
    """A broken pointer: attends over every history slot, padded ones included."""

    def pointer(*args: Any) -> Any:
        params, query, history_emb, history, history_mask, *rest = args
        return real(params, query, history_emb, np.where(history_mask, history, 0),
                    np.ones_like(history_mask), *rest)

    return pointer


@pytest.mark.parametrize("broken", [_unnormalised_mixture, _pointer_reading_padded_history])
def test_negative_control_distribution_check_catches_a_broken_mixture(
    broken: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import refimpl.models.pgin as pgin_module
    from refimpl.nn.pointer_generator import pointer_generator_forward

    monkeypatch.setattr(pgin_module, "pointer_generator_forward", broken(pointer_generator_forward))
    check = test_y_is_a_distribution_with_pointer_mass_on_the_history.hypothesis.inner_test  # type: ignore[attr-defined]
    with pytest.raises(AssertionError):
        for seed in range(5):
            check(seed, 6, "learned", np.float64)


def test_negative_control_masked_id_check_catches_a_raw_lookup_of_padded_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken lookup that does not sanitise padded ids: the garbage ids make the check fail."""
    import refimpl.models.pgin as pgin_module

    monkeypatch.setattr(pgin_module, "_valid_ids", lambda ids, mask: ids)
    with pytest.raises(ValueError, match="long_items"):
        test_masked_ids_are_ignored()


def test_negative_control_masked_id_check_catches_an_encoder_reading_padded_items(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken encoder: padded ids are looked up (wrapped into range) and MHSA ignores the mask."""
    import refimpl.models.pgin as pgin_module
    from refimpl.nn.attention import mhsa_forward as real_mhsa

    monkeypatch.setattr(pgin_module, "_valid_ids", lambda ids, mask: np.where(mask, ids, np.abs(ids) % 3))
    monkeypatch.setattr(
        pgin_module, "mhsa_forward", lambda p, x, mask, c: real_mhsa(p, x, np.ones_like(mask), c)
    )
    with pytest.raises(AssertionError):
        test_masked_ids_are_ignored()
