"""Golden cases and the reference adapter of `embedding`, out = table[ids] (spec/embedding.md).

Every case repeats ids within a batch, so an implementation that writes the backward's scatter with
a fancy-index `+=` (which keeps one of the duplicates) fails on `d_table`.
"""

from __future__ import annotations

import numpy as np

from refimpl.cases._base import (
    Builder,
    CaseSpec,
    CaseTensors,
    Config,
    Result,
    Tensors,
    upstream_like,
)
from refimpl.nn.embedding import embedding_backward, embedding_forward

SPEC = "spec/embedding.md"


def embedding_reference(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    out, cache = embedding_forward(params["table"], inputs["ids"])
    d_table = embedding_backward(cache, upstream["d_out"])
    return Result(outputs={"out": out}, grads={"d_table": d_table})


COMPONENTS = {"embedding": embedding_reference}


def _random(vocab: int, d: int, ids_shape: tuple[int, int]) -> Builder:
    """ids from a small range so they repeat, plus ids 0 and V-1 (the table's first and last row);
    the rows never looked up get exactly zero gradient."""

    def build(rng: np.random.Generator) -> CaseTensors:
        ids = rng.integers(0, max(2, vocab // 2), size=ids_shape).astype(np.int64)
        ids[0, 0] = 0
        ids[-1, -1] = vocab - 1
        ids[-1, 0] = ids[0, 1]
        return CaseTensors(
            inputs={"ids": ids},
            params={"table": rng.standard_normal((vocab, d))},
            upstream=upstream_like(rng, {"out": (*ids_shape, d)}),
        )

    return build


def _tiny_hand(rng: np.random.Generator) -> CaseTensors:
    """table (4, 2) = [[0, 1], [2, 3], [4, 5], [6, 7]], ids [[1, 3, 1]]: id 1 twice, 0 and 2 unused."""
    return CaseTensors(
        inputs={"ids": np.array([[1, 3, 1]], dtype=np.int64)},
        params={"table": np.arange(8.0).reshape(4, 2)},
        upstream={"d_out": np.array([[[1.0, -1.0], [2.0, 0.5], [10.0, 20.0]]])},
    )


CASES = (
    CaseSpec(
        "embedding",
        "tiny_hand",
        "V=4, D=2, ids [[1, 3, 1]]; numbers in the spec.",
        f"{SPEC}#worked-example",
        {},
        _tiny_hand,
    ),
    CaseSpec(
        "embedding",
        "duplicates",
        "V=10, D=4, ids (3, 6) from [0, 5) plus V-1: many repeats across and within rows.",
        f"{SPEC}#backward",
        {},
        _random(10, 4, (3, 6)),
    ),
    CaseSpec(
        "embedding",
        "long_rows",
        "V=30, D=4, ids (4, 40) from [0, 15) plus V-1: every id repeats many times.",
        f"{SPEC}#shapes",
        {},
        _random(30, 4, (4, 40)),
    ),
)
