"""Golden cases and reference adapters of the integer preprocessing ULIM's serving and training rest
on: `category_history` (PGIN's pointer history: merge, deduplicate, time-order; spec/pgin.md) and
`category_subsequence` (ULIM's category subsequences with most-recent truncation; spec/category_sequences.md).

Every result is an int64 id array and a bool mask: an implementation must match them exactly
(atol = rtol = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl.cases._base import CaseTensors, Config, Result, Tensors, exact_case
from refimpl.data.category_history import merge_category_history
from refimpl.data.category_subsequence import category_subsequences


def category_history_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    """long/short categories and masks in; timestamps `long_times`/`short_times` when the case has them."""
    history, history_mask = merge_category_history(
        inputs["long_categories"],
        inputs["long_mask"],
        inputs["short_categories"],
        inputs["short_mask"],
        config["max_history"],
        long_times=inputs.get("long_times"),
        short_times=inputs.get("short_times"),
        pad_id=config["pad_id"],
    )
    return Result(outputs={"history": history, "history_mask": history_mask}, grads={})


def category_subsequence_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    subsequence, subsequence_mask = category_subsequences(
        inputs["items"], inputs["item_categories"], inputs["mask"], inputs["categories"],
        config["max_length"], pad_id=config["pad_id"],
    )
    return Result(outputs={"subsequence": subsequence, "subsequence_mask": subsequence_mask}, grads={})


COMPONENTS = {
    "category_history": category_history_reference,
    "category_subsequence": category_subsequence_reference,
}


def _ints(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=np.int64)


def _bools(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=bool)


def _merge_hand(rng: np.random.Generator) -> CaseTensors:
    """No timestamps: the long sequence (oldest first) precedes the short one. P = 4.

    row 0: long (3, 1, 3, 2), short (1, 5): distinct by last occurrence 3, 2, 1, 5 -> (3, 2, 1, 5)
    row 1: long (4, 4, 0 masked, 2), short (2, 4 masked): ids at masked positions are ignored
           -> (4, 2), padded
    row 2: six distinct categories (0..5 in that order): the 4 most recent kept -> (2, 3, 4, 5)
    row 3: nothing valid -> all padding
    """
    return CaseTensors(
        inputs={
            "long_categories": _ints([[3, 1, 3, 2], [4, 4, 0, 2], [0, 1, 2, 3], [1, 2, 3, 4]]),
            "long_mask": _bools([[1, 1, 1, 1], [1, 1, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]]),
            "short_categories": _ints([[1, 5], [2, 4], [4, 5], [0, 0]]),
            "short_mask": _bools([[1, 1], [1, 0], [1, 1], [0, 0]]),
        },
        params={},
        upstream={},
    )


def _merge_timestamps(rng: np.random.Generator) -> CaseTensors:
    """Timestamps interleave the two sequences. P = 3, pad_id = -1.

    row 0: long (a@1, b@5, c@9), short (b@3, d@7): last occurrences a@1, b@5, d@7, c@9
           -> the 3 most recent (b, d, c) = (1, 3, 2)
    row 1: a tie: long (2@4), short (5@4, 2@2): equal times order long before short, so 5 (short,
           t=4) is more recent than 2 (long, t=4) -> (2, 5)
    """
    return CaseTensors(
        inputs={
            "long_categories": _ints([[0, 1, 2], [2, 0, 0]]),
            "long_mask": _bools([[1, 1, 1], [1, 0, 0]]),
            "long_times": _ints([[1, 5, 9], [4, 0, 0]]),
            "short_categories": _ints([[1, 3], [5, 2]]),
            "short_mask": _bools([[1, 1], [1, 1]]),
            "short_times": _ints([[3, 7], [4, 2]]),
        },
        params={},
        upstream={},
    )


def _subsequence_hand(rng: np.random.Generator) -> CaseTensors:
    """T = 3. Row 0 items 10..17 with categories (0, 1, 0, 0, 2, 0, 1, 0), position 6 masked.

    category 0 (five behaviours 10, 12, 13, 15, 17): the 3 most recent, oldest first -> (13, 15, 17)
    category 1 (11, and 16 masked): -> (11)
    category 3 (none): all padding; category 0 again: the same subsequence again
    Row 1: masked positions hold category 2 and must not count -> category 2 gives (21)
    """
    return CaseTensors(
        inputs={
            "items": _ints([[10, 11, 12, 13, 14, 15, 16, 17], [20, 21, 22, 23, 24, 25, 26, 27]]),
            "item_categories": _ints([[0, 1, 0, 0, 2, 0, 1, 0], [1, 2, 1, 2, 2, 0, 0, 0]]),
            "mask": _bools([[1, 1, 1, 1, 1, 1, 0, 1], [1, 1, 1, 0, 0, 1, 1, 1]]),
            "categories": _ints([[0, 1, 3, 0], [2, 0, 1, 3]]),
        },
        params={},
        upstream={},
    )


@dataclass(frozen=True)
class RandomSubsequences:
    """B rows of L behaviours (item ids in [0, `item_ids`)), valid with `valid_share`, whose
    categories are drawn from `category_shares` (C = its length; the last ones rare); each row asks
    for K distinct categories in random order, each cut to its T most recent behaviours."""

    batch: int = 3
    length: int = 40
    category_shares: tuple[float, ...] = (0.4, 0.3, 0.2, 0.08, 0.02)
    wanted: int = 4
    max_length: int = 6
    valid_share: float = 0.85
    item_ids: int = 1000

    def describe(self) -> str:
        shares = ", ".join(f"{share:g}" for share in self.category_shares)
        return (f"B={self.batch}, L={self.length}, C={len(self.category_shares)} with shares ({shares}), "
                f"K={self.wanted}, T={self.max_length}, positions valid with share {self.valid_share}")

    def build(self, rng: np.random.Generator) -> CaseTensors:
        shape = (self.batch, self.length)
        num_categories = len(self.category_shares)
        categories = rng.choice(num_categories, size=shape, p=list(self.category_shares))
        return CaseTensors(
            inputs={
                "items": rng.integers(0, self.item_ids, size=shape),
                "item_categories": categories.astype(np.int64),
                "mask": rng.random(shape) < self.valid_share,
                "categories": np.stack(
                    [rng.permutation(num_categories)[: self.wanted] for _ in range(self.batch)]
                ).astype(np.int64),
            },
            params={},
            upstream={},
        )


RANDOM_SUBSEQUENCES = RandomSubsequences()


CASES = (
    exact_case("category_history", "dedup_order_truncation", "No timestamps, P = 4: dedup by most recent "
          "occurrence, long before short, the P most recent kept, masked ids ignored, an empty row.",
          "spec/pgin.md#the-category-history-merge_category_history",
          {"max_history": 4, "pad_id": 0}, _merge_hand),
    exact_case("category_history", "timestamps_and_ties", "Timestamps interleave the sequences; equal "
          "timestamps order long before short. P = 3, pad_id = -1.",
          "spec/pgin.md#the-category-history-merge_category_history",
          {"max_history": 3, "pad_id": -1}, _merge_timestamps),
    exact_case("category_subsequence", "hand_truncation", "T = 3: the most recent behaviours of each "
          "category, oldest first; a missing category; a category asked twice; masked positions ignored.",
          "spec/category_sequences.md#category-subsequences", {"max_length": 3, "pad_id": 0}, _subsequence_hand),
    exact_case("category_subsequence", "random", f"{RANDOM_SUBSEQUENCES.describe()}.",
          "spec/category_sequences.md#category-subsequences",
          {"max_length": RANDOM_SUBSEQUENCES.max_length, "pad_id": 0}, RANDOM_SUBSEQUENCES.build),
)
