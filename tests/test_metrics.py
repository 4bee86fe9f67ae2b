"""AUC (Mann-Whitney, ties one half) and the top-N metrics HitRate@N, Precision@N (UMI eq. 15-16)
and HR@N (ULIM), each against a brute-force definition, with negative controls."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl.metrics import auc, hit_rate_at_n, hr_at_n, precision_at_n


def pairwise_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """The definition: over every (positive, negative) pair, 1 if the positive scores higher,
    1/2 on a tie."""
    pos = scores[labels.astype(bool)]
    neg = scores[~labels.astype(bool)]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins) / (pos.size * neg.size)


def strict_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """A broken AUC that counts a tie as a loss (ordinal ranks)."""
    pos = scores[labels.astype(bool)]
    neg = scores[~labels.astype(bool)]
    return float((pos[:, None] > neg[None, :]).sum()) / (pos.size * neg.size)


@st.composite
def scored_labels(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Scores from a small integer set (many ties), both classes present."""
    n = draw(st.integers(2, 30))
    scores = np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), dtype=float)
    labels = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    labels[0], labels[1] = True, False
    return scores, labels


def auc_problems(fn: Callable[[np.ndarray, np.ndarray], float], scores: np.ndarray,
                 labels: np.ndarray) -> list[str]:
    problems = []
    if abs(fn(scores, labels) - pairwise_auc(scores, labels)) > 1e-12:
        problems.append("differs from the pairwise definition")
    if abs(fn(-scores, labels) - (1 - pairwise_auc(scores, labels))) > 1e-12:
        problems.append("auc(-s) != 1 - auc(s)")
    return problems


@given(scored_labels())
def test_auc_is_the_mann_whitney_statistic_with_ties(data: tuple[np.ndarray, np.ndarray]) -> None:
    assert auc_problems(auc, *data) == []


def test_auc_check_catches_ties_counted_as_losses() -> None:
    scores = np.array([1.0, 1.0, 2.0, 0.0])
    labels = np.array([True, False, True, False])
    assert auc_problems(auc, scores, labels) == []
    assert "differs from the pairwise definition" in auc_problems(strict_auc, scores, labels)


def test_auc_hand_examples_and_monotone_invariance() -> None:
    assert auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auc([0.5, 0.5], [1, 0]) == 0.5
    assert auc([3.0, 1.0, 2.0, 2.0, 2.0], [1, 0, 1, 0, 0]) == pytest.approx(5 / 6)
    scores = np.array([0.3, -1.0, 2.0, 0.3, 5.0])
    labels = np.array([1, 0, 1, 0, 0])
    assert auc(np.exp(scores), labels) == auc(scores, labels)


def test_auc_mask_and_shapes() -> None:
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.7]])
    labels = np.array([[1, 0, 1], [0, 1, 0]])
    mask = np.array([[True, True, False], [True, True, True]])
    assert auc(scores, labels, mask=mask) == pytest.approx(pairwise_auc(scores[mask], labels[mask]))


@pytest.mark.parametrize(
    ("scores", "labels", "needle"),
    [
        ([0.1, 0.2], [1, 1], "one class"),
        ([0.1, 0.2], [0, 0], "one class"),
        ([], [], "one class"),
        ([0.1, np.nan], [1, 0], "finite"),
        ([0.1, 0.2], [1, 2], "0/1"),
        ([0.1, 0.2], [1, 0, 1], "shape"),
    ],
)
def test_auc_refuses_undefined_input(scores: list[float], labels: list[int], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        auc(scores, labels)


def test_auc_refuses_a_mask_that_leaves_one_class() -> None:
    with pytest.raises(ValueError, match="one class"):
        auc([0.1, 0.2, 0.3], [1, 0, 1], mask=np.array([True, False, True]))


# --- top-N metrics -----------------------------------------------------------------------------


def brute_top_n(retrieved: Sequence[Sequence[int]], relevant: Sequence[Sequence[int]],
                n: int) -> tuple[float, float, float]:
    """(HitRate@N, Precision@N, HR@N) written out from the definitions."""
    hits = [len(set(r[:n]) & set(t)) for r, t in zip(retrieved, relevant, strict=True)]
    users = len(retrieved)
    hit_rate = sum(h / len(set(t)) for h, t in zip(hits, relevant, strict=True)) / users
    precision = sum(h / n for h in hits) / users
    any_hit = sum(h > 0 for h in hits) / users
    return hit_rate, precision, any_hit


@st.composite
def retrieval(draw: st.DrawFn) -> tuple[list[list[int]], list[list[int]], int]:
    users = draw(st.integers(1, 6))
    items = st.integers(0, 12)
    retrieved = [draw(st.lists(items, max_size=8)) for _ in range(users)]
    relevant = [draw(st.lists(items, min_size=1, max_size=4)) for _ in range(users)]
    return retrieved, relevant, draw(st.integers(1, 8))


Metric = Callable[[Sequence[Sequence[int]], Sequence[Sequence[int]], int], float]


def top_n_problems(metrics: tuple[Metric, Metric, Metric], retrieved: list[list[int]],
                   relevant: list[list[int]], n: int) -> list[str]:
    expected = brute_top_n(retrieved, relevant, n)
    names = ("HitRate@N", "Precision@N", "HR@N")
    return [name for name, fn, value in zip(names, metrics, expected, strict=True)
            if abs(fn(retrieved, relevant, n) - value) > 1e-15]


METRICS = (hit_rate_at_n, precision_at_n, hr_at_n)


@given(retrieval())
def test_top_n_metrics_match_their_definitions(data: tuple[list[list[int]], list[list[int]], int]) -> None:
    assert top_n_problems(METRICS, *data) == []


def test_definition_check_catches_a_missing_cutoff_and_a_wrong_divisor() -> None:
    def whole_list_hit_rate(retrieved: Sequence[Sequence[int]], relevant: Sequence[Sequence[int]],
                            n: int) -> float:
        return hit_rate_at_n(retrieved, relevant, max(len(r) for r in retrieved))

    def per_list_precision(retrieved: Sequence[Sequence[int]], relevant: Sequence[Sequence[int]],
                           n: int) -> float:
        return precision_at_n(retrieved, relevant, n) * n / min(n, len(retrieved[0]))

    def any_hit_rate(retrieved: Sequence[Sequence[int]], relevant: Sequence[Sequence[int]],
                     n: int) -> float:
        """HitRate@N read as "at least one target retrieved" (not UMI eq. 15)."""
        return hr_at_n(retrieved, relevant, n)

    def micro_hr(retrieved: Sequence[Sequence[int]], relevant: Sequence[Sequence[int]], n: int) -> float:
        """HR@N read as targets hit over all targets (not the share of users with a hit)."""
        pairs = list(zip(retrieved, relevant, strict=True))
        return sum(len(set(r[:n]) & set(t)) for r, t in pairs) / sum(len(set(t)) for _, t in pairs)

    retrieved, relevant = [[1, 2, 3]], [[3]]
    assert top_n_problems(METRICS, retrieved, relevant, 2) == []
    broken = (whole_list_hit_rate, per_list_precision, hr_at_n)
    assert top_n_problems(broken, [[1, 2, 3]], [[3]], 2) == ["HitRate@N"]
    assert top_n_problems(broken, [[3]], [[3]], 4) == ["Precision@N"]
    several = [[1, 2, 3], [4]], [[1, 9], [4]]
    assert top_n_problems(METRICS, *several, 2) == []
    assert top_n_problems((any_hit_rate, precision_at_n, micro_hr), *several, 2) == ["HitRate@N", "HR@N"]


def test_top_n_hand_example() -> None:
    retrieved = np.array([[5, 3, 9, 1], [2, 2, 7, 4], [8, 6, 0, 3]])
    relevant = [[3, 1], [2], [4]]
    # top 2: {5, 3} hits 3 (1 of 2 targets); {2} hits 2 once (duplicates count once); {8, 6} misses
    assert hit_rate_at_n(retrieved, relevant, 2) == 0.5  # (1/2 + 1/1 + 0/1) / 3, UMI eq. 15
    assert precision_at_n(retrieved, relevant, 2) == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert hr_at_n(retrieved, relevant, 2) == pytest.approx(2 / 3)
    assert hit_rate_at_n(retrieved, relevant, 4) == pytest.approx((2 / 2 + 1 / 1 + 0) / 3)
    assert hr_at_n(retrieved, relevant, 4) == pytest.approx(2 / 3)


def test_short_lists_are_used_as_they_are_and_precision_divides_by_n() -> None:
    assert precision_at_n([[4]], [[4]], 5) == pytest.approx(1 / 5)
    assert hit_rate_at_n([[]], [[4]], 5) == 0.0


@pytest.mark.parametrize(
    ("retrieved", "relevant", "n", "needle"),
    [
        ([[1]], [[1]], 0, "n:"),
        ([[1]], [[1], [2]], 1, "relevant"),
        ([], [], 1, "at least one user"),
        ([[[1, 2]]], [[1]], 1, "1-D"),
    ],
)
def test_top_n_refuses_bad_input(retrieved: list[Any], relevant: list[Any], n: int, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        hit_rate_at_n(retrieved, relevant, n)


def test_hit_rate_needs_a_ground_truth_item_per_user() -> None:
    with pytest.raises(ValueError, match="users \\[1\\] have none"):
        hit_rate_at_n([[1], [2]], [[1], []], 1)
