"""The IFA model: end-to-end gradients, a real learning check, permutation symmetry, the stable ESMM
loss, ranking, validation. Each property has a negative control that the same check rejects."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

import refimpl.models.ifa as ifa
from refimpl.cases import ifa as cases
from refimpl.cases._base import Result, Tensors
from refimpl.gradcheck import assert_gradients_match, check_component, check_gradients, component_objective
from refimpl.metrics import auc
from refimpl.models.ifa import (
    IFABatch,
    IFAConfig,
    IFAParams,
    esmm_loss_forward,
    ifa_backward,
    ifa_batch_from_dict,
    ifa_forward,
    ifa_params_from_dict,
    ifa_params_to_dict,
    init_ifa_params,
    rank_candidates,
)
from refimpl.nn.linear_attention import linear_attention_forward, linear_self_attention_forward
from refimpl.optim import AdamConfig, adam_init, adam_step

CASE_IDS = ("ifa/small_softplus", "ifa/fully_masked_sequence", "ifa/single_candidate_single_behaviour",
            "ifa/large_inputs")


def case(case_id: str) -> Any:
    return next(c for c in cases.CASES if c.case_id == case_id)


# --- gradients of the whole model --------------------------------------------------------------


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_whole_model_gradients_match_finite_differences(case_id: str) -> None:
    spec = case(case_id)
    problems = check_component(cases.ifa_reference, spec.draw(), spec.config, max_full_elements=8,
                               directions=2)
    assert_gradients_match(problems)


def test_gradient_check_catches_a_dropped_ram_key_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """If RAM's backward forgot that x also feeds the keys and values, the check rejects it."""
    def query_path_only(cache: Any, d_out: Any) -> Any:
        grads, d_q_in, _ = ifa.linear_attention_backward(cache, d_out)
        return grads, d_q_in

    spec = case("ifa/small_softplus")
    monkeypatch.setattr(ifa, "linear_self_attention_backward", query_path_only)
    f, point, analytic = component_objective(cases.ifa_reference, spec.draw(), spec.config)
    problems = check_gradients(f, {"item_table": point["item_table"]}, analytic, max_full_elements=8)
    assert any(p.startswith("item_table") for p in problems)


# --- a real learning check ---------------------------------------------------------------------

TOPICS = 4
ITEMS = 40
USERS = 16


def synthetic_batch(rng: np.random.Generator, batch: int, m: int = 8, length: int = 12) -> IFABatch:
    """Items belong to topic id % 4; a user's behaviours mostly come from one topic; a candidate is
    impressed when its topic is the sequence's topic (10% label noise) and clicked when impressed
    and its cross feature is 1. The labels depend on the sequence and the cross features only."""
    topic = rng.integers(0, TOPICS, size=batch)
    on_topic = rng.random((batch, length)) < 0.85
    seq_ids = np.where(
        on_topic,
        topic[:, None] + TOPICS * rng.integers(0, ITEMS // TOPICS, size=(batch, length)),
        rng.integers(0, ITEMS, size=(batch, length)),
    )
    seq_mask = np.arange(length)[None, :] < rng.integers(length // 2, length + 1, size=batch)[:, None]
    cand_ids = rng.integers(0, ITEMS, size=(batch, m))
    cand_ids[:, : m // 2] = topic[:, None] + TOPICS * rng.integers(0, ITEMS // TOPICS, size=(batch, m // 2))
    cross_ids = rng.integers(0, 3, size=(batch, m))
    impression = (cand_ids % TOPICS == topic[:, None]) ^ (rng.random((batch, m)) < 0.1)
    click = impression & (cross_ids == 1)
    cand_mask = np.ones((batch, m), dtype=bool)
    cand_mask[:, -1] = rng.random(batch) < 0.5
    return IFABatch(
        user_ids=rng.integers(0, USERS, size=batch),
        cand_ids=cand_ids,
        cross_ids=cross_ids,
        cand_mask=cand_mask,
        seq_ids=seq_ids,
        seq_mask=seq_mask,
        impression=impression.astype(np.int64),
        click=click.astype(np.int64),
    )


def train(steps: int, direction: float) -> tuple[float, float, float]:
    """(initial loss, final loss, held-out click AUC of the ranking score) after `steps` Adam steps
    along `direction` times the gradient (+1 descends; -1 is the broken control)."""
    rng = np.random.default_rng(2024)
    cfg = IFAConfig(num_heads=2)
    params = ifa_params_to_dict(init_ifa_params(rng, ITEMS, USERS, 3, width=8, hidden=(16,)))
    train_batch = synthetic_batch(rng, 32)
    held_out = synthetic_batch(rng, 32)
    state = adam_init(params)
    adam = AdamConfig(lr=0.02)
    losses = []
    for _ in range(steps):
        output, cache = ifa_forward(ifa_params_from_dict(params), train_batch, cfg)
        losses.append(float(output.loss))
        grads = ifa_params_to_dict(ifa_backward(cache, np.array(direction)))
        params, state = adam_step(params, grads, state, adam)
    final, _ = ifa_forward(ifa_params_from_dict(params), train_batch, cfg)
    scored, _ = ifa_forward(ifa_params_from_dict(params), held_out, cfg)
    held_out_auc = auc(scored.score, held_out.click, mask=held_out.cand_mask)
    return losses[0], float(final.loss), held_out_auc


def learned(initial: float, final: float, held_out_auc: float) -> bool:
    return final < 0.5 * initial and held_out_auc > 0.8


def test_esmm_loss_falls_and_the_ranking_generalizes() -> None:
    initial, final, held_out_auc = train(300, direction=1.0)
    assert learned(initial, final, held_out_auc), (initial, final, held_out_auc)


def test_learning_check_rejects_a_model_that_does_not_learn() -> None:
    assert not learned(*train(20, direction=-1.0))


# --- permutation symmetry of the model ---------------------------------------------------------


def permute(batch: IFABatch, seq: np.ndarray | None = None, cand: np.ndarray | None = None) -> IFABatch:
    if seq is not None:
        batch = replace(batch, seq_ids=batch.seq_ids[:, seq], seq_mask=batch.seq_mask[:, seq])
    if cand is not None:
        batch = replace(
            batch,
            **{name: getattr(batch, name)[:, cand]
               for name in ("cand_ids", "cross_ids", "cand_mask", "impression", "click")},
        )
    return batch


def symmetry_errors(params: IFAParams, batch: IFABatch, cfg: IFAConfig) -> tuple[float, float]:
    """(change of score and loss under a sequence permutation, deviation from equivariance of the
    scores and change of the loss under a candidate permutation)."""
    rng = np.random.default_rng(5)
    base, _ = ifa_forward(params, batch, cfg)
    seq = rng.permutation(batch.seq_ids.shape[1])
    cand = rng.permutation(batch.cand_ids.shape[1])
    by_seq, _ = ifa_forward(params, permute(batch, seq=seq), cfg)
    by_cand, _ = ifa_forward(params, permute(batch, cand=cand), cfg)
    seq_error = max(np.abs(by_seq.score - base.score).max(), abs(float(by_seq.loss - base.loss)))
    cand_error = max(np.abs(by_cand.score - base.score[:, cand]).max(), abs(float(by_cand.loss - base.loss)))
    return float(seq_error), float(cand_error)


def model_example() -> tuple[IFAParams, IFABatch, IFAConfig]:
    spec = case("ifa/small_softplus")
    tensors = spec.draw()
    return ifa_params_from_dict(tensors.params), ifa_batch_from_dict(tensors.inputs), cases.ifa_config(spec.config)


def test_model_is_sequence_invariant_and_candidate_equivariant() -> None:
    seq_error, cand_error = symmetry_errors(*model_example())
    assert seq_error < 1e-12 and cand_error < 1e-12


def _ramp(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = x * np.linspace(0.5, 1.5, x.shape[1])[None, :, None]
    return result


def test_symmetry_check_catches_positional_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    def positional_fsm(params: Any, q_in: Any, kv_in: Any, *rest: Any, **kw: Any) -> Any:
        return linear_attention_forward(params, q_in, _ramp(kv_in), *rest, **kw)

    def positional_ram(params: Any, x: Any, *rest: Any) -> Any:
        return linear_self_attention_forward(params, _ramp(x), *rest)

    with monkeypatch.context() as patch:
        patch.setattr(ifa, "linear_attention_forward", positional_fsm)
        assert symmetry_errors(*model_example())[0] > 1e-6
    with monkeypatch.context() as patch:
        patch.setattr(ifa, "linear_self_attention_forward", positional_ram)
        assert symmetry_errors(*model_example())[1] > 1e-6


# --- the ESMM loss -----------------------------------------------------------------------------


def naive_esmm(a: np.ndarray, c: np.ndarray, y_imp: np.ndarray, y_clk: np.ndarray) -> np.ndarray:
    """BCE on probabilities, as written in the paper (overflows to inf for saturated logits)."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        p_imp = 1 / (1 + np.exp(-a))
        p = p_imp / (1 + np.exp(-c))
        bce_imp = -(y_imp * np.log(p_imp) + (1 - y_imp) * np.log(1 - p_imp))
        bce_ctcvr = -(y_clk * np.log(p) + (1 - y_clk) * np.log(1 - p))
    result: np.ndarray = bce_imp + bce_ctcvr
    return result


def logit_grid() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    values = np.array([-800.0, -40.0, -3.0, 0.0, 2.5, 40.0, 800.0])
    a, c = np.meshgrid(values, values)
    for y_imp in (0, 1):
        for y_clk in (0, 1):
            yield a, c, np.full(a.shape, y_imp), np.full(a.shape, y_clk)


def esmm_is_stable_and_exact(loss_fn: Any) -> bool:
    """Finite everywhere on the grid, and equal to the naive formula where that one is finite."""
    for a, c, y_imp, y_clk in logit_grid():
        per = loss_fn(a, c, y_imp, y_clk)
        if not np.isfinite(per).all():
            return False
        moderate = (np.abs(a) < 10) & (np.abs(c) < 10)
        if not np.allclose(per[moderate], naive_esmm(a, c, y_imp, y_clk)[moderate], rtol=1e-12):
            return False
    return True


def reference_per_candidate(a: np.ndarray, c: np.ndarray, y_imp: np.ndarray, y_clk: np.ndarray) -> np.ndarray:
    _, per, _ = esmm_loss_forward(a, c, y_imp, y_clk, np.ones(a.shape, dtype=bool))
    return per


def test_esmm_loss_is_stable_without_clipping() -> None:
    assert esmm_is_stable_and_exact(reference_per_candidate)


def test_stability_check_rejects_the_naive_formula() -> None:
    assert not esmm_is_stable_and_exact(naive_esmm)


def test_esmm_worked_example() -> None:
    a = np.array([[0.0, 40.0]])
    c = np.array([[0.0, 40.0]])
    _, per, _ = esmm_loss_forward(a, c, np.array([[1, 1]]), np.array([[0, 0]]), np.ones((1, 2), dtype=bool))
    assert per[0, 0] == pytest.approx(np.log(2) + np.log(4 / 3), rel=1e-14)
    assert per[0, 1] == pytest.approx(40 - np.log(2), rel=1e-14)
    assert not np.isfinite(naive_esmm(a, c, np.array([[1, 1]]), np.array([[0, 0]]))[0, 1])


def test_loss_is_the_mean_over_valid_candidates() -> None:
    rng = np.random.default_rng(0)
    a, c = rng.standard_normal((2, 5)), rng.standard_normal((2, 5))
    y_imp = np.array([[1, 0, 1, 0, 1], [0, 0, 1, 1, 0]])
    y_clk = y_imp * np.array([[1, 0, 0, 0, 1], [0, 0, 1, 0, 0]])
    mask = np.array([[True, True, False, True, True], [False, True, True, True, False]])
    loss, per, _ = esmm_loss_forward(a, c, y_imp, y_clk, mask)
    assert float(loss) == pytest.approx(naive_esmm(a, c, y_imp, y_clk)[mask].mean(), rel=1e-12)
    assert (per[~mask] == 0).all()
    empty, _, _ = esmm_loss_forward(a, c, y_imp, y_clk, np.zeros_like(mask))
    assert float(empty) == 0.0


# --- ranking, outputs, validation --------------------------------------------------------------


def test_ranking_by_score_with_invalid_candidates_last_and_ties_by_index() -> None:
    score = np.array([[0.2, 0.9, 0.2, 0.5]])
    mask = np.array([[True, True, True, False]])
    assert rank_candidates(score, mask).tolist() == [[1, 0, 2, 3]]


def test_outputs_are_finite_and_masked_candidates_score_zero() -> None:
    for spec in cases.CASES:
        t = spec.draw()
        result: Result = cases.ifa_reference(t.inputs, t.params, spec.config, t.upstream)
        for name, value in result.flat().items():
            assert np.isfinite(value).all(), f"{spec.case_id}: {name}"
        invalid = ~t.inputs["cand_mask"]
        assert (result.intermediates["score"][invalid] == 0).all()
        no_sequence = ~t.inputs["seq_mask"].any(axis=1)
        assert (result.intermediates["fsm_out"][no_sequence] == 0).all()


def test_float32_model_computes_in_float32() -> None:
    params, batch, cfg = model_example()
    flat32 = {k: v.astype(np.float32) for k, v in ifa_params_to_dict(params).items()}
    output, cache = ifa_forward(ifa_params_from_dict(flat32), batch, cfg)
    grads = ifa_params_to_dict(ifa_backward(cache, np.array(0.7, dtype=np.float32)))
    assert output.loss.dtype == output.score.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())
    reference, _ = ifa_forward(params, batch, cfg)
    assert float(output.loss) == pytest.approx(float(reference.loss), rel=1e-5)


def _with(tensors: Tensors, **changes: Any) -> IFABatch:
    return ifa_batch_from_dict({**tensors, **changes})


def test_bad_inputs_are_refused_with_the_argument_named() -> None:
    spec = case("ifa/small_softplus")
    t = spec.draw()
    params = ifa_params_from_dict(t.params)
    cfg = cases.ifa_config(spec.config)
    bad_labels = t.inputs["impression"].copy()
    bad_labels[0, 0] = 2
    with pytest.raises(ValueError, match="impression"):
        ifa_forward(params, _with(t.inputs, impression=bad_labels), cfg)
    with pytest.raises(ValueError, match="cand_ids"):
        ifa_forward(params, _with(t.inputs, cand_ids=t.inputs["cand_ids"] + 100), cfg)
    with pytest.raises(ValueError, match="seq_mask"):
        ifa_forward(params, _with(t.inputs, seq_mask=t.inputs["seq_mask"][:, :2]), cfg)
    with pytest.raises(TypeError, match="cand_mask"):
        ifa_forward(params, _with(t.inputs, cand_mask=t.inputs["cand_mask"].astype(int)), cfg)
    with pytest.raises(ValueError, match="missing 'click_W0'"):
        ifa_params_from_dict({k: v for k, v in t.params.items() if k != "click_W0"})
    with pytest.raises(ValueError, match="cfg.phi"):
        ifa_forward(params, ifa_batch_from_dict(t.inputs), replace(cfg, phi="tanh"))


def test_negative_control_zero_check_catches_an_fsm_that_ignores_the_sequence_mask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken FSM that attends over padded behaviours: a user without a sequence gets a
    non-zero FSM output, which the check above reports."""
    from refimpl.nn.linear_attention import linear_attention_forward as real


    def unmasked_fsm(params: Any, queries: Any, keys: Any, key_mask: Any, cfg: Any, **kwargs: Any) -> Any:
        return real(params, queries, keys, np.ones_like(key_mask), cfg, **kwargs)

    monkeypatch.setattr(ifa, "linear_attention_forward", unmasked_fsm)
    with pytest.raises(AssertionError):
        test_outputs_are_finite_and_masked_candidates_score_zero()
