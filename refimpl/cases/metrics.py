"""Golden cases and reference adapters of the evaluation metrics (spec/metrics.md):
`top_n_metrics` (HitRate@N and Precision@N as UMI eq. 15-16, HR@N as ULIM reports it) and `auc`.

The metrics are pure functions of lists in `refimpl.metrics`; here their inputs are padded arrays
(with masks), the layout a retrieval result has, so that any language can read them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refimpl._check import Shapes
from refimpl.cases._base import Builder, CaseSpec, CaseTensors, Config, Result, Tensors
from refimpl.metrics import auc, hit_rate_at_n, hr_at_n, precision_at_n

SPEC = "spec/metrics.md"


def top_n_metrics_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    """retrieved, scores, retrieved_mask (U, R): each user's ranked list (best first, the valid slots
    first, scores non-increasing; a list shorter than R is padded with mask False); relevant,
    relevant_mask (U, T): each user's ground-truth items. The metrics come back in the dtype of
    the scores; `hits` (U,) int64 is |R_u^N ∩ T_u|."""
    shapes = Shapes()
    scores = shapes.check_float("scores", inputs["scores"], ("U", "R"), allow_inf=True)
    retrieved = shapes.check_int("retrieved", inputs["retrieved"], ("U", "R"))
    retrieved_mask = shapes.check_bool("retrieved_mask", inputs["retrieved_mask"], ("U", "R"))
    relevant = shapes.check_int("relevant", inputs["relevant"], ("U", "T"))
    relevant_mask = shapes.check_bool("relevant_mask", inputs["relevant_mask"], ("U", "T"))
    if (retrieved_mask[:, 1:] & ~retrieved_mask[:, :-1]).any():
        raise ValueError("retrieved_mask: the valid slots of a ranked list must come first")
    if ((scores[:, 1:] > scores[:, :-1]) & retrieved_mask[:, 1:]).any():
        raise ValueError("scores: a ranked list must have non-increasing scores over its valid slots")
    n = config["n"]
    ranked = [row[mask] for row, mask in zip(retrieved, retrieved_mask, strict=True)]
    targets = [set(row[mask].tolist()) for row, mask in zip(relevant, relevant_mask, strict=True)]
    hits = np.array([len(set(row[:n].tolist()) & t) for row, t in zip(ranked, targets, strict=True)],
                    dtype=np.int64)
    dtype = scores.dtype
    return Result(
        outputs={
            "hit_rate_at_n": np.asarray(hit_rate_at_n(ranked, targets, n), dtype=dtype),
            "precision_at_n": np.asarray(precision_at_n(ranked, targets, n), dtype=dtype),
            "hr_at_n": np.asarray(hr_at_n(ranked, targets, n), dtype=dtype),
        },
        grads={},
        intermediates={"hits": hits},
    )


def auc_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    """scores (B, M) float, labels (B, M) int64 in {0, 1}, mask (B, M) bool: ROC AUC of the masked
    entries, ties counting one half, in the dtype of the scores."""
    scores = inputs["scores"]
    value = auc(scores, inputs["labels"], inputs["mask"])
    return Result(outputs={"auc": np.asarray(value, dtype=scores.dtype)}, grads={})


COMPONENTS = {"top_n_metrics": top_n_metrics_reference, "auc": auc_reference}


def _padded(rows: list[list[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((len(rows), width), -1, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=bool)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = row
        mask[index, : len(row)] = True
    return ids, mask


def _ranked(retrieved: list[list[int]], relevant: list[list[int]]) -> CaseTensors:
    width = max(len(r) for r in retrieved)
    ids, mask = _padded(retrieved, width)
    truth, truth_mask = _padded(relevant, max(len(t) for t in relevant))
    # dyadic, well-separated scores: exact in float32 as in float64
    scores = np.where(mask, width - np.arange(width, dtype=np.float64)[None, :], -np.inf) / 4.0
    return CaseTensors(
        inputs={"retrieved": ids, "scores": scores, "retrieved_mask": mask, "relevant": truth,
                "relevant_mask": truth_mask},
        params={},
        upstream={},
    )


def _hand_top_n(rng: np.random.Generator) -> CaseTensors:
    """The worked example of spec/metrics.md: UMI eq. 15 gives 0.5 where "any hit" gives 2/3."""
    return _ranked([[5, 3, 9, 1], [2, 2, 7, 4], [8, 6, 0, 3]], [[3, 1], [2], [4]])


def _edge_top_n(rng: np.random.Generator) -> CaseTensors:
    """A short list (2 items for N = 3), a duplicate in the top N, every target found, none found,
    a target beyond the cut-off, and a duplicated ground-truth id (a set: counted once)."""
    return _ranked(
        [[4, 7], [1, 1, 2, 3, 5], [9, 8, 6, 0, 2], [3, 2, 1, 0, 7], [6, 5, 4, 3, 2]],
        [[4, 7, 11], [1, 5], [9, 8, 6], [10], [2, 2]],
    )


def _auc_hand(rng: np.random.Generator) -> CaseTensors:
    """The worked example of spec/metrics.md: scores (3, 1, 2, 2, 2), labels (1, 0, 1, 0, 0)."""
    return CaseTensors(
        inputs={
            "scores": np.array([[3.0, 1.0, 2.0, 2.0, 2.0]]),
            "labels": np.array([[1, 0, 1, 0, 0]], dtype=np.int64),
            "mask": np.ones((1, 5), dtype=bool),
        },
        params={},
        upstream={},
    )


@dataclass(frozen=True)
class MaskedTies:
    """An AUC case full of ties: B rows of M candidates, scores on a grid of 1/`grid` in [0, 1]
    (exact in float32), candidates 0 and 1 a valid positive and a valid negative, the others
    positive with `positive_share` and valid with `valid_share`; every masked candidate holds
    `masked_score`, above every valid one, so counting it changes the AUC."""

    batch: int = 3
    candidates: int = 6
    grid: int = 4
    positive_share: float = 0.4
    valid_share: float = 0.7
    masked_score: float = 10.0

    def describe(self) -> str:
        return (f"B={self.batch}, M={self.candidates}, scores on a grid of 1/{self.grid} in [0, 1] (ties), "
                f"positives with share {self.positive_share}, candidates masked with share "
                f"{1 - self.valid_share:.1f} holding score {self.masked_score:g}, above every valid one")

    def build(self, rng: np.random.Generator) -> CaseTensors:
        shape = (self.batch, self.candidates)
        scores = rng.integers(0, self.grid + 1, size=shape) / self.grid
        labels = (rng.random(shape) < self.positive_share).astype(np.int64)
        labels[:, 0], labels[:, 1] = 1, 0
        mask = rng.random(shape) < self.valid_share
        mask[:, :2] = True
        scores[~mask] = self.masked_score
        return CaseTensors(inputs={"scores": scores, "labels": labels, "mask": mask}, params={}, upstream={})


MASKED_TIES = MaskedTies()


def _case(component: str, name: str, description: str, section: str, config: Config,
          build: Builder) -> CaseSpec:
    """Exact cases: the integer results must match exactly, and the metric values are ratios of
    small integers (one division, then at most a mean of a few terms)."""
    return CaseSpec(component, name, description, f"{SPEC}#{section}", config, build, rtol=1e-15, atol=0.0)


CASES = (
    _case("top_n_metrics", "hand_example", "The worked example: 3 users, N = 2; HitRate@2 = 0.5 "
          "(UMI eq. 15), Precision@2 = 1/3, HR@2 = 2/3.", "top-n-metrics-umi-ulim", {"n": 2}, _hand_top_n),
    _case("top_n_metrics", "edge_cases", "N = 3: a list shorter than N, a duplicate in the top N, "
          "all / no / beyond-N targets, a duplicated ground-truth id.", "top-n-metrics-umi-ulim",
          {"n": 3}, _edge_top_n),
    _case("auc", "hand_example", "The worked example: scores (3, 1, 2, 2, 2), labels (1, 0, 1, 0, 0): "
          "AUC = 5/6.", "auc-ifa", {}, _auc_hand),
    _case("auc", "masked_ties", f"{MASKED_TIES.describe()}.", "auc-ifa", {}, MASKED_TIES.build),
)
