"""UMI eq. 1, the multi-interest serving score (spec/max_interest_score.md): numbers, gradients,
exact retrieval, the per-interest merge, goldens, and negative controls."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import refimpl.nn.max_interest_score as serving
from refimpl.cases.max_interest_score import CASES, max_interest_score_reference
from refimpl.conformance import reference_adapter, run_conformance
from refimpl.gradcheck import assert_gradients_match, check_gradients
from refimpl.nn.max_interest_score import (
    max_interest_score_backward,
    max_interest_score_forward,
    max_interest_top_n,
    merge_interest_candidates,
)
from refimpl.pipelines.evaluation import merged_search
from refimpl.retrieval.catalogue import Catalogue
from refimpl.retrieval.exact import ExactIndex


def test_worked_example_numbers() -> None:
    case = next(c for c in CASES if c.name == "tiny_hand")
    t = case.draw()
    result = max_interest_score_reference(t.inputs, t.params, case.config, t.upstream)
    assert result.outputs["scores"].tolist() == [[2.0, 1.0, 2.0, 0.5]]
    assert result.outputs["top_n_ids"].tolist() == [[0, 2, 1]]
    assert result.intermediates["best_interest"].tolist() == [[0, 0, 1, 1]]
    assert result.grads["d_interests"].tolist() == [[[0.0, -0.5], [-2.0, 1.5]]]
    assert result.grads["d_items"].tolist() == [[0.5, 0.0], [-1.0, 0.0], [0.0, 0.25], [0.0, 2.0]]


def gradient_problems(backward: Any, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    point = {"interests": rng.standard_normal((3, 4, 5)), "items": rng.standard_normal((7, 5))}
    d_scores = rng.standard_normal((3, 7))

    def f(at: dict[str, Any]) -> float:
        scores, _ = max_interest_score_forward(at["interests"], at["items"])
        return float(np.sum(d_scores * scores))

    _, cache = max_interest_score_forward(point["interests"], point["items"])
    d_interests, d_items = backward(cache, d_scores)
    return check_gradients(f, point, {"interests": d_interests, "items": d_items})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradients_match_finite_differences(seed: int) -> None:
    assert_gradients_match(gradient_problems(max_interest_score_backward, seed))


def test_negative_control_gradient_check_catches_a_gradient_spread_over_every_interest() -> None:
    def spread(cache: Any, d_scores: Any) -> tuple[Any, Any]:
        k = cache.interests.shape[1]
        d_interests = np.einsum("bm,md->bd", d_scores, cache.items)[:, None, :] / k
        return np.repeat(d_interests, k, axis=1), max_interest_score_backward(cache, d_scores)[1]

    assert gradient_problems(spread, 0)


def by_definition(interests: Any, items: Any, n: int) -> list[list[int]]:
    """UMI eq. 1 item by item, then a sort by (score descending, id)."""
    ranked = []
    for user in interests:
        scores = [max(float(v @ e) for v in user) for e in items]
        ranked.append(sorted(range(len(items)), key=lambda m: (-scores[m], m))[:n])
    return ranked


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_top_n_is_eq_1_by_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    interests = rng.integers(-2, 3, size=(4, 3, 3)).astype(float)  # small integers: many exact ties
    items = rng.integers(-2, 3, size=(9, 3)).astype(float)
    ids, scores = max_interest_top_n(interests, items, 5)
    assert ids.tolist() == by_definition(interests, items, 5)
    assert np.all(np.diff(scores, axis=1) <= 0)


def per_interest_top_n(interests: Any, items: Any, n: int) -> tuple[Any, Any]:
    """Each interest's own exact top n: ids, scores (B, K, n)."""
    b, k, d = interests.shape
    ids, scores = max_interest_top_n(interests.reshape(b * k, 1, d), items, n)
    return ids.reshape(b, k, n), scores.reshape(b, k, n)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_merging_each_interests_exact_top_n_is_eq_1(seed: int) -> None:
    rng = np.random.default_rng(seed)
    interests = rng.integers(-2, 3, size=(5, 3, 4)).astype(float)
    items = rng.integers(-2, 3, size=(20, 4)).astype(float)
    expected, _ = max_interest_top_n(interests, items, 6)
    ids, scores = per_interest_top_n(interests, items, 6)
    assert merge_interest_candidates(ids, scores, 6).tolist() == expected.tolist()
    index = ExactIndex(Catalogue.build(items, np.zeros(20, dtype=np.int64), num_categories=1))
    assert merged_search(index, interests, 6).tolist() == expected.tolist()


def test_negative_control_a_merge_without_deduplication_is_caught() -> None:
    interests = np.array([[[1.0, 0.0], [1.0, 0.1]]])  # both interests find item 0 first
    items = np.array([[3.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    expected, _ = max_interest_top_n(interests, items, 2)
    ids, scores = per_interest_top_n(interests, items, 2)
    order = np.argsort(-scores.reshape(1, -1), axis=1, kind="stable")
    without_dedup = np.take_along_axis(ids.reshape(1, -1), order, axis=1)[:, :2]
    assert expected.tolist() == [[0, 1]]
    assert without_dedup.tolist() != expected.tolist()
    assert merge_interest_candidates(ids, scores, 2).tolist() == expected.tolist()


def test_merge_skips_padding_and_pads_short_rows() -> None:
    ids = np.array([[[4, -1], [4, 2]]])
    scores = np.array([[[1.0, 0.0], [0.5, 0.5]]])
    assert merge_interest_candidates(ids, scores, 3).tolist() == [[4, 2, -1]]


def test_bad_inputs_are_refused_by_name() -> None:
    interests, items = np.zeros((2, 3, 4)), np.zeros((5, 4))
    with pytest.raises(ValueError, match="items"):
        max_interest_score_forward(interests, np.zeros((5, 3)))
    with pytest.raises(TypeError, match="items"):
        max_interest_score_forward(interests, items.astype(np.float32))
    with pytest.raises(ValueError, match=r"n: expected at most M = 5"):
        max_interest_top_n(interests, items, 6)
    with pytest.raises(ValueError, match="n: expected a positive integer"):
        max_interest_top_n(interests, items, 0)


def test_float32_in_float32_out() -> None:
    interests, items = np.ones((1, 2, 3), np.float32), np.ones((4, 3), np.float32)
    scores, cache = max_interest_score_forward(interests, items)
    d_interests, d_items = max_interest_score_backward(cache, np.ones((1, 4), np.float32))
    assert scores.dtype == d_interests.dtype == d_items.dtype == np.float32


def test_reference_passes_its_goldens() -> None:
    report = run_conformance(reference_adapter(), components=["max_interest_score"])
    assert report.ok and len(report.results) == len(CASES), [r.text for r in report.results]


def test_conformance_catches_a_port_scoring_with_the_first_interest(monkeypatch: pytest.MonkeyPatch) -> None:
    real = serving.max_interest_score_forward

    def first_interest(interests: Any, items: Any) -> Any:
        return real(interests[:, :1], items)

    monkeypatch.setattr(serving, "max_interest_score_forward", first_interest)
    monkeypatch.setattr("refimpl.cases.max_interest_score.max_interest_score_forward", first_interest)
    report = run_conformance(reference_adapter(), components=["max_interest_score"])
    failed = {r.case_id: r for r in report.results if r.status == "fail"}
    assert "max_interest_score/one_interest" not in failed  # K = 1: nothing to choose
    small = failed["max_interest_score/small"]
    assert small.first_divergent_intermediate == "best_interest"
    assert "scores" in small.failing_names
