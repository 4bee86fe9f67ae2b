"""Golden cases and reference adapters of ULIM's serving decisions: `top_k_categories` (PGIN's top-K
categories and their tie rule; spec/category_sequences.md) and `cascade_exact` (the cascaded
category-to-item retrieval on the exact back end: ids, routes, quotas; spec/retrieval.md).

The ids, routes, quotas and masks are integers and bools, compared exactly (atol = rtol = 0). The
inputs are small integers and quarters, exact in float32 too, so a float32 implementation meets the
same ties and the same order.
"""

from __future__ import annotations

import numpy as np

from refimpl.cases._base import CaseTensors, Config, Result, Tensors, exact_case
from refimpl.models.pgin import top_k_from_distribution
from refimpl.retrieval import CascadeConfig, Catalogue, ExactIndex, cascade_retrieve


def top_k_categories_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    """y (B, C) a distribution per row -> top_categories (B, k) int64, most probable first, ties
    to the lower category id."""
    return Result(outputs={"top_categories": top_k_from_distribution(inputs["y"], config["k"])}, grads={})


def cascade_exact_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    """The catalogue (item_vectors (I, D), item_categories (I,), item_ids (I,), C categories) and
    per user the PGIN categories (B, K), long_vectors (B, K, D), long_mask (B, K), short_vectors
    (B, D) -> the merged result ids, scores, routes, valid (B, N) and quotas (B, K + 1)."""
    catalogue = Catalogue.build(
        inputs["item_vectors"], inputs["item_categories"], inputs["item_ids"],
        num_categories=config["num_categories"],
    )
    result = cascade_retrieve(
        ExactIndex(catalogue), inputs["categories"], inputs["long_vectors"], inputs["short_vectors"],
        CascadeConfig(n=config["n"], short_share=config["short_share"]), long_mask=inputs["long_mask"],
    )
    return Result(
        outputs={"ids": result.ids, "scores": result.scores, "routes": result.routes,
                 "valid": result.valid, "quotas": result.quotas},
        grads={},
    )


COMPONENTS = {"top_k_categories": top_k_categories_reference, "cascade_exact": cascade_exact_reference}


def _top_k_ties(rng: np.random.Generator) -> CaseTensors:
    """C = 6, k = 3, probabilities in sixteenths: row 0 ties at the top (3 and 1 at 4/16:
    1 first), row 1 ties across the cut (2, 4, 5 at 2/16 for the last slot: 2), row 2 is
    uniform (0, 1, 2), row 3 has no tie."""
    y = np.array([
        [2, 4, 1, 4, 3, 2],
        [7, 3, 2, 0, 2, 2],
        [1, 1, 1, 1, 1, 1],
        [1, 6, 2, 4, 0, 3],
    ], dtype=np.float64)
    return CaseTensors(inputs={"y": y / y.sum(axis=1, keepdims=True)}, params={}, upstream={})


def _cascade_worked_example(rng: np.random.Generator) -> CaseTensors:
    """spec/retrieval.md#worked-example: 12 items, 3 categories, a repeated category, a masked one."""
    vectors = np.array([[1, 0], [2, 0], [3, 0], [4, 0], [5, 0], [6, 0], [0, 1], [0, 2], [0, 3],
                        [1, 1], [2, 2], [3, 3]], dtype=np.float64)
    return CaseTensors(
        inputs={
            "item_vectors": vectors,
            "item_categories": np.array([0] * 6 + [1] * 3 + [2] * 3, dtype=np.int64),
            "item_ids": np.arange(100, 112, dtype=np.int64),
            "categories": np.array([[1, 0, 1, 2]], dtype=np.int64),
            "long_vectors": np.array([[[0.0, 1.0], [1.0, 0.0], [5.0, 5.0], [1.0, 1.0]]]),
            "long_mask": np.array([[True, True, True, False]]),
            "short_vectors": np.array([[1.0, 0.5]]),
        },
        params={},
        upstream={},
    )


def _cascade_small_category_ties(rng: np.random.Generator) -> CaseTensors:
    """I = 14 items, C = 4 (category 3 holds one item, category 2 none), D = 3, integer vectors with
    repeated rows (equal scores: the lower id first), ids shuffled against the row order. B = 3
    users, K = 3, N = 7: row 0 asks for the one-item category (smaller than its quota), row 1 for
    the empty one and a repeat, row 2 has every long-term route masked (all to the short route)."""
    base = rng.integers(-2, 3, size=(10, 3)).astype(np.float64)
    vectors = np.concatenate([base, base[:3], base[:1]])  # rows 10..13 repeat rows 0..2 and 0
    categories = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 3, 0, 1, 1, 0], dtype=np.int64)
    ids = rng.permutation(np.arange(20, 34)).astype(np.int64)
    return CaseTensors(
        inputs={
            "item_vectors": vectors,
            "item_categories": categories,
            "item_ids": ids,
            "categories": np.array([[3, 0, 1], [2, 1, 1], [0, 1, 3]], dtype=np.int64),
            "long_vectors": rng.integers(-2, 3, size=(3, 3, 3)).astype(np.float64),
            "long_mask": np.array([[True, True, True], [True, True, True], [False, False, False]]),
            "short_vectors": rng.integers(-2, 3, size=(3, 3)).astype(np.float64),
        },
        params={},
        upstream={},
    )


CASES = (
    exact_case("top_k_categories", "ties", "C = 6, k = 3: ties at the top, across the cut and everywhere "
          "(uniform); ties go to the lower category id.", "spec/category_sequences.md#top-k-categories",
          {"k": 3}, _top_k_ties),
    exact_case("cascade_exact", "worked_example", "The worked example of spec/retrieval.md: N = 8, a "
          "repeated category (dropped), a masked route, equal scores ordered by id.",
          "spec/retrieval.md#worked-example",
          {"n": 8, "short_share": None, "num_categories": 3}, _cascade_worked_example),
    exact_case("cascade_exact", "small_category_and_ties", "N = 7, a one-item category (smaller than its "
          "quota), an empty category, a repeat, a row without long-term routes, repeated vectors.",
          "spec/retrieval.md#the-cascade",
          {"n": 7, "short_share": None, "num_categories": 4}, _cascade_small_category_ties),
)
