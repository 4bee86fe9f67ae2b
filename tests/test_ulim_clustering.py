"""ULIM's category clustering (2.1.1): the extraction of S_c, the model's refusal of an unclustered
long-term input, and the golden case that pins the clustering (spec/ulim.md#category-clustering-ulim-211)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import refimpl.cases.ulim as ulim_cases
import refimpl.models.ulim as ulim_model
from refimpl.conformance import reference_adapter, run_conformance
from refimpl.models.ulim import (
    ULIMBatch,
    ULIMConfig,
    category_subsequence,
    require_category_subsequence,
    ulim_init,
    ulim_loss_and_grads,
)

CASE = "ulim/unclustered_long_sequence"
ITEM_CATEGORY = (np.arange(12) % 3).astype(np.int64)  # I = 12 items, C = 3: item i has category i mod 3


def loss_with_long_items(long_items: list[list[int]]) -> float:
    """The issue's example: I = 12, C = 3, a batch of category 1, one row."""
    cfg = ULIMConfig(num_items=12, num_categories=3, dim=4, num_heads=2)
    params = ulim_init(np.random.default_rng(0), cfg)
    items = np.array(long_items, dtype=np.int64)
    batch = ULIMBatch(
        np.array([[1, 4]]), np.ones((1, 2), dtype=bool), items, np.ones(items.shape, dtype=bool)
    )
    out = ulim_loss_and_grads(params, batch, np.array([7]), np.array([1, 10]), 1, ITEM_CATEGORY, cfg)
    return out.loss


def test_a_long_input_of_other_categories_is_refused_by_name() -> None:
    assert np.isfinite(loss_with_long_items([[1, 4, 10]]))
    with pytest.raises(ValueError, match=r"long_items: .*category 1.*\(0, 0\) holds item 0 of category 0"):
        loss_with_long_items([[0, 2, 3]])
    with pytest.raises(ValueError, match=r"\(0, 2\) holds item 5 of category 2 \(1 valid position"):
        loss_with_long_items([[1, 4, 5]])


def test_negative_control_without_the_guard_the_unclustered_input_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ulim_model, "require_category_subsequence", lambda *args: None)
    assert np.isfinite(loss_with_long_items([[0, 2, 3]]))  # the refusal above comes from the guard


def test_masked_positions_of_other_categories_are_ignored() -> None:
    items = np.array([[1, 0, 4]])
    require_category_subsequence(items, np.array([[True, False, True]]), ITEM_CATEGORY, 1)
    with pytest.raises(ValueError, match="long_items"):
        require_category_subsequence(items, np.ones((1, 3), dtype=bool), ITEM_CATEGORY, 1)


def test_category_subsequence_worked_example_of_the_spec() -> None:
    # [a1, b1, a2, c1, a3] with a = category 0 (items 0, 3, 6), b = 1, c = 2; category 3 is absent.
    item_category = np.array([0, 1, 0, 2, 0, 0, 0, 3], dtype=np.int64)
    sequence = np.array([[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]])
    mask = np.ones((2, 5), dtype=bool)
    items, kept = category_subsequence(sequence, mask, item_category, np.array([0, 3]), 2)
    assert items.tolist() == [[2, 4], [0, 0]]
    assert kept.tolist() == [[True, True], [False, False]]
    mask[0, 4] = False  # a masked behaviour is not part of the sequence
    items, kept = category_subsequence(sequence, mask, item_category, np.array([0, 0]), 3)
    assert items.tolist() == [[0, 2, 0], [0, 2, 4]]
    assert kept.tolist() == [[True, True, False], [True, True, True]]


def test_category_subsequence_refuses_bad_input_by_name() -> None:
    sequence, mask = np.array([[0, 12]]), np.ones((1, 2), dtype=bool)
    with pytest.raises(ValueError, match=r"long_sequence: ids at valid positions must be in \[0, 12\)"):
        category_subsequence(sequence, mask, ITEM_CATEGORY, np.array([0]), 2)
    with pytest.raises(ValueError, match="categories"):
        category_subsequence(sequence[:, :1], mask[:, :1], ITEM_CATEGORY, np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="max_length"):
        category_subsequence(sequence[:, :1], mask[:, :1], ITEM_CATEGORY, np.array([0]), 0)


def ulim_failures() -> dict[str, Any]:
    report = run_conformance(reference_adapter(), components=["ulim"])
    return {r.case_id: r for r in report.results if r.status == "fail"}


def test_reference_passes_the_unclustered_case() -> None:
    report = run_conformance(reference_adapter(), components=["ulim"])
    assert report.ok and CASE in {r.case_id for r in report.results}, [r.text for r in report.results]


def test_conformance_catches_a_port_that_skips_the_clustering(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_clustering(sequence: Any, mask: Any, *args: Any) -> tuple[Any, Any]:
        return sequence, mask

    monkeypatch.setattr(ulim_cases, "category_subsequence", no_clustering)
    monkeypatch.setattr(ulim_model, "require_category_subsequence", lambda *args: None)
    failures = ulim_failures()
    assert set(failures) == {CASE}
    assert {"subsequence_items", "loss", "long_user"} <= set(failures[CASE].failing_names)


def test_conformance_catches_a_port_that_keeps_the_oldest_behaviours(monkeypatch: pytest.MonkeyPatch) -> None:
    def oldest_first(sequence: Any, mask: Any, item_category: Any, categories: Any, width: int) -> Any:
        reversed_items, reversed_mask = category_subsequence(
            sequence[:, ::-1], mask[:, ::-1], item_category, categories, width
        )
        counts = reversed_mask.sum(axis=1)
        items = np.zeros_like(reversed_items)
        for row, count in enumerate(counts):
            items[row, :count] = reversed_items[row, :count][::-1]
        return items, reversed_mask

    monkeypatch.setattr(ulim_cases, "category_subsequence", oldest_first)
    failures = ulim_failures()
    assert set(failures) == {CASE}
    assert failures[CASE].first_divergent_intermediate == "subsequence_items"
