"""Top-k target attention (spec/top_k_attention.md): the selection rule, the two scores, the ESU
as target attention over the gathered behaviours, gradients, edges and bad input.

Every property comes with a negative control: a deliberately broken variant the same check catches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl.cases import top_k_attention as cases
from refimpl.cases.attention import random_params
from refimpl.gradcheck import assert_gradients_match, check_component
from refimpl.nn.attention import (
    AttentionConfig,
    AttentionParams,
    attention_forward,
    target_attention_backward,
    target_attention_forward,
)
from refimpl.nn.top_k_attention import (
    SCORES,
    TopKAttentionConfig,
    select_top_k,
    top_k_attention_backward,
    top_k_attention_forward,
)

Array = np.ndarray[Any, Any]
Selector = Callable[[Array, Array, int], tuple[Array, Array]]


def brute_force_selection(scores: Array, valid: Array, k: int) -> tuple[Array, Array]:
    """The rule written out: sort each row's positions by (invalid last, larger score first, lower
    position first), keep the first min(k, L), list them in increasing position."""
    length = scores.shape[-1]
    slots = min(k, length)
    rows_scores, rows_valid = scores.reshape(-1, length), np.broadcast_to(valid, scores.shape).reshape(-1, length)
    indices = np.zeros((rows_scores.shape[0], slots), dtype=np.int64)
    for row, (score, ok) in enumerate(zip(rows_scores, rows_valid, strict=True)):
        order = sorted(range(length), key=lambda j: (not ok[j], -score[j] if ok[j] else 0.0, j))
        indices[row] = sorted(order[:slots])
    indices = indices.reshape(*scores.shape[:-1], slots)
    return indices, np.take_along_axis(np.broadcast_to(valid, scores.shape), indices, axis=-1)


def higher_position_wins_ties(scores: Array, valid: Array, k: int) -> tuple[Array, Array]:
    """Broken on purpose: ties at the k-th place go to the HIGHER position."""
    flipped_indices, _ = select_top_k(scores[..., ::-1].copy(), np.ascontiguousarray(valid[..., ::-1]), k)
    indices = np.sort(scores.shape[-1] - 1 - flipped_indices, axis=-1)
    return indices, np.take_along_axis(valid, indices, axis=-1)


@st.composite
def selection_problems(draw: st.DrawFn) -> tuple[Array, Array, int]:
    rows, length = draw(st.integers(1, 4)), draw(st.integers(1, 9))
    # few distinct values, so exact ties (at the k-th place too) are common
    values = draw(st.lists(st.integers(-2, 2), min_size=rows * length, max_size=rows * length))
    bits = draw(st.lists(st.booleans(), min_size=rows * length, max_size=rows * length))
    scores = np.array(values, dtype=np.float64).reshape(rows, length)
    valid = np.array(bits, dtype=bool).reshape(rows, length)
    return scores, valid, draw(st.integers(1, length + 2))


def _agrees(selector: Selector, scores: Array, valid: Array, k: int) -> bool:
    got, got_mask = selector(scores, valid, k)
    want, want_mask = brute_force_selection(scores, valid, k)
    return bool(np.array_equal(got, want) and np.array_equal(got_mask, want_mask))


@given(selection_problems())
def test_selection_is_the_stated_rule(problem: tuple[Array, Array, int]) -> None:
    assert _agrees(select_top_k, *problem)


def test_negative_control_the_wrong_tie_rule_is_caught() -> None:
    scores = np.array([[1.0, 2.0, 2.0, 2.0, 0.0]])
    valid = np.ones_like(scores, dtype=bool)
    assert select_top_k(scores, valid, 2)[0].tolist() == [[1, 2]]
    assert not _agrees(higher_position_wins_ties, scores, valid, 2)


def test_masked_positions_are_never_selected_and_k_above_valid_takes_every_valid_one() -> None:
    scores = np.array([[5.0, 9.0, -1.0, 3.0]])
    valid = np.array([[True, False, True, False]])
    indices, selected = select_top_k(scores, valid, 3)
    assert indices.tolist() == [[0, 1, 2]] and selected.tolist() == [[True, False, True]]
    indices, selected = select_top_k(scores, valid, 10)
    assert indices.tolist() == [[0, 1, 2, 3]] and selected.sum() == 2


def _problem(rng: np.random.Generator, b: int = 2, m: int = 3, length: int = 9, d: int = 8) -> dict[str, Any]:
    mask = rng.random((b, length)) < 0.7
    mask[:, 0] = True
    return {
        "params": AttentionParams(**random_params(rng, d)),
        "candidates": rng.standard_normal((b, m, d)),
        "seq": rng.standard_normal((b, length, d)),
        "seq_mask": mask,
    }


def test_twin_score_is_the_esu_head_0_score() -> None:
    """The GSU's "attention" score is exactly head 0's pre-softmax score of the attention kernel."""
    rng = np.random.default_rng(1)
    p = _problem(rng)
    heads, k = 2, 4
    _, cache = top_k_attention_forward(**p, cfg=TopKAttentionConfig(k=k, num_heads=heads))
    b, m, d = p["candidates"].shape
    q = p["candidates"] @ p["params"].Wq + p["params"].bq
    keys = p["seq"] @ p["params"].Wk + p["params"].bk
    d_head = d // heads
    head0 = np.einsum("bmd,bld->bml", q[..., :d_head], keys[..., :d_head]) / math.sqrt(d_head)
    np.testing.assert_allclose(cache.scores, head0, rtol=1e-12, atol=1e-12)
    # the kernel's head-0 weights are the softmax of the same scores over the valid keys
    _, kernel = attention_forward(p["params"], p["candidates"], p["seq"], p["seq_mask"], AttentionConfig(heads))
    softmax = np.exp(np.where(p["seq_mask"][:, None, :], head0, -np.inf))
    np.testing.assert_allclose(kernel.weights[:, 0], softmax / softmax.sum(-1, keepdims=True), rtol=1e-10)


def test_sim_soft_score_is_the_inner_product() -> None:
    rng = np.random.default_rng(2)
    p = _problem(rng)
    _, cache = top_k_attention_forward(**p, cfg=TopKAttentionConfig(k=3, score="inner_product"))
    np.testing.assert_allclose(cache.scores, np.einsum("bmd,bld->bml", p["candidates"], p["seq"]), rtol=1e-12)


@pytest.mark.parametrize("score", SCORES)
def test_out_is_target_attention_over_the_gathered_selection(score: str) -> None:
    rng = np.random.default_rng(3)
    p = _problem(rng)
    cfg = TopKAttentionConfig(k=4, num_heads=2, score=score)
    out, cache = top_k_attention_forward(**p, cfg=cfg)
    d_out = rng.standard_normal(out.shape)
    grads, d_candidates, d_seq = top_k_attention_backward(cache, d_out)
    b, m, d = out.shape
    for row in range(b):
        for cand in range(m):
            picked = cache.indices[row, cand][cache.selected_mask[row, cand]]
            want, ta_cache = target_attention_forward(
                p["params"], p["candidates"][row, cand][None], p["seq"][row, picked][None],
                np.ones((1, picked.size), dtype=bool), AttentionConfig(num_heads=2))
            np.testing.assert_allclose(out[row, cand], want[0], rtol=1e-12, atol=1e-13)
            _, d_query, _ = target_attention_backward(ta_cache, d_out[row, cand][None])
            np.testing.assert_allclose(d_candidates[row, cand], d_query[0], rtol=1e-10, atol=1e-12)
    # an unselected behaviour gets no gradient
    unselected = np.ones(p["seq"].shape[:2], dtype=bool)
    for row in range(b):
        unselected[row, cache.indices[row][cache.selected_mask[row]]] = False
    assert np.all(d_seq[unselected] == 0)
    assert np.all(grads.bk == 0)


GRADCHECKED = [c for c in cases.CASES if c.name != "ties"]  # at an exact tie a finite step re-selects


@pytest.mark.parametrize("case", GRADCHECKED, ids=lambda c: c.case_id)
def test_gradients_match_finite_differences(case: Any) -> None:
    problems = check_component(
        cases.COMPONENTS[case.component], case.draw(), case.config, max_full_elements=40, directions=2
    )
    assert_gradients_match(problems)


def test_gradient_check_catches_a_gradient_sent_to_the_unselected() -> None:
    """Negative control: a backward that spreads d_seq evenly over every position is rejected."""
    case = next(c for c in cases.CASES if c.name == "inner_product")

    def broken(inputs: Any, params: Any, config: Any, upstream: Any) -> Any:
        result = cases.top_k_attention_reference(inputs, params, config, upstream)
        d_seq = result.grads["d_seq"]
        spread = np.broadcast_to(d_seq.mean(axis=1, keepdims=True), d_seq.shape).copy()
        return type(result)(result.outputs, {**result.grads, "d_seq": spread}, result.intermediates)

    problems = check_component(broken, case.draw(), case.config, max_full_elements=40, directions=2)
    assert any(p.startswith("seq") for p in problems)


def test_masked_candidates_and_empty_requests_give_zero_rows_and_no_gradient() -> None:
    rng = np.random.default_rng(4)
    p = _problem(rng)
    p["seq_mask"][0] = False
    cand_mask = np.array([[True, True, True], [False, True, True]])
    out, cache = top_k_attention_forward(**p, cfg=TopKAttentionConfig(k=3), cand_mask=cand_mask)
    assert np.all(out[0] == 0) and np.all(out[1, 0] == 0) and np.all(out[1, 1:] != 0)
    _, d_candidates, d_seq = top_k_attention_backward(cache, rng.standard_normal(out.shape))
    assert np.all(d_candidates[0] == 0) and np.all(d_candidates[1, 0] == 0) and np.all(d_seq[0] == 0)
    assert not cache.selected_mask[0].any() and not cache.selected_mask[1, 0].any()


def test_float32_stays_float32_and_empty_sequence_gives_zeros() -> None:
    rng = np.random.default_rng(5)
    p = _problem(rng)
    p32 = {
        "params": AttentionParams(**{n: v.astype(np.float32) for n, v in vars(p["params"]).items()}),
        "candidates": p["candidates"].astype(np.float32),
        "seq": p["seq"].astype(np.float32),
        "seq_mask": p["seq_mask"],
    }
    out, cache = top_k_attention_forward(**p32, cfg=TopKAttentionConfig(k=2, num_heads=2))
    grads, d_candidates, d_seq = top_k_attention_backward(cache, np.ones_like(out))
    assert out.dtype == d_candidates.dtype == d_seq.dtype == grads.Wq.dtype == np.float32
    p["seq"], p["seq_mask"] = p["seq"][:, :0], p["seq_mask"][:, :0]
    out, cache = top_k_attention_forward(**p, cfg=TopKAttentionConfig(k=2))
    assert cache.indices.shape == (2, 3, 0) and np.all(out == 0)
    assert top_k_attention_backward(cache, np.ones_like(out))[2].shape == (2, 0, 8)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"candidates": np.zeros((2, 3))}, "candidates"),
        ({"seq": np.zeros((2, 9, 5))}, "seq"),
        ({"seq_mask": np.ones((2, 9))}, "seq_mask"),
        ({"cand_mask": np.ones((2, 4), dtype=bool)}, "cand_mask"),
        ({"cfg": TopKAttentionConfig(k=0)}, "cfg.k"),
        ({"cfg": TopKAttentionConfig(k=2, num_heads=3)}, "cfg.num_heads"),
        ({"cfg": TopKAttentionConfig(k=2, score="cosine")}, "cfg.score"),
    ],
)
def test_bad_input_names_the_argument(change: dict[str, Any], match: str) -> None:
    p = _problem(np.random.default_rng(6))
    call = {**p, "cfg": TopKAttentionConfig(k=2), **change}
    with pytest.raises((ValueError, TypeError), match=match):
        top_k_attention_forward(**call)


def test_select_top_k_refuses_a_non_finite_valid_score() -> None:
    with pytest.raises(ValueError, match="scores"):
        select_top_k(np.array([[1.0, np.inf]]), np.array([[True, True]]), 1)
    indices, _ = select_top_k(np.array([[1.0, np.nan]]), np.array([[True, False]]), 1)  # ignored: invalid
    assert indices.tolist() == [[0]]
