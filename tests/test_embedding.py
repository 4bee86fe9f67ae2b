"""Embedding lookup and its scatter-add backward (spec/embedding.md), with negative controls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refimpl.nn.embedding as embedding_module
from refimpl.cases._base import CaseTensors, Config, Result, Tensors
from refimpl.cases.embedding import embedding_reference
from refimpl.gradcheck import check_component
from refimpl.nn.embedding import EmbeddingCache, embedding_backward, embedding_forward

Array = np.ndarray[Any, Any]


@st.composite
def setups(draw: st.DrawFn) -> CaseTensors:
    """ids of 1 or 2 axes from a vocabulary small enough that they repeat."""
    vocab, d = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
    ids = np.array(
        draw(st.lists(st.integers(0, vocab - 1), min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))),
        dtype=np.int64,
    ).reshape(shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return CaseTensors(
        {"ids": ids}, {"table": rng.standard_normal((vocab, d))}, {"d_out": rng.standard_normal((*shape, d))}
    )


@given(tensors=setups())
def test_gradients_match_finite_differences(tensors: CaseTensors) -> None:
    assert check_component(embedding_reference, tensors, {}) == []


def _fancy_index_backward(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    """The classic bug: `d_table[ids] += d_out` keeps one of the repeated ids' contributions."""
    result = embedding_reference(inputs, params, config, upstream)
    d_table = np.zeros_like(params["table"])
    d_table[inputs["ids"]] += upstream["d_out"]
    return Result(result.outputs, {"d_table": d_table})


def test_negative_control_finite_differences_catch_the_fancy_index_scatter() -> None:
    rng = np.random.default_rng(0)
    tensors = CaseTensors(
        {"ids": np.array([[1, 3, 1], [0, 1, 1]])},
        {"table": rng.standard_normal((4, 2))},
        {"d_out": rng.standard_normal((2, 3, 2))},
    )
    assert check_component(embedding_reference, tensors, {}) == []
    problems = check_component(_fancy_index_backward, tensors, {})
    assert problems and all(p.startswith("table[1") for p in problems)


Backward = Callable[[EmbeddingCache, Array], Array]


def scatter_error(backward: Backward, ids: Array, d_out: Array, vocab: int) -> float:
    """Against the definition: d_table[v] = sum of d_out[p] over positions p with ids[p] = v."""
    _, cache = embedding_forward(np.zeros((vocab, d_out.shape[-1])), ids)
    expected = np.zeros((vocab, d_out.shape[-1]))
    for position in np.ndindex(ids.shape):
        expected[ids[position]] += d_out[position]
    return float(np.max(np.abs(backward(cache, d_out) - expected)))


def _last_write_wins(cache: EmbeddingCache, d_out: Array) -> Array:
    d_table = np.zeros((cache.vocab, d_out.shape[-1]))
    d_table[cache.ids] += d_out
    return d_table


def test_scatter_sums_duplicates_and_the_control_is_caught() -> None:
    ids = np.array([[2, 2, 0], [2, 1, 0]])
    d_out = np.random.default_rng(1).standard_normal((2, 3, 3))
    assert scatter_error(embedding_backward, ids, d_out, vocab=4) < 1e-15
    assert scatter_error(_last_write_wins, ids, d_out, vocab=4) > 1e-3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_computes_in_the_table_dtype(dtype: Any) -> None:
    out, cache = embedding_forward(np.ones((3, 2), dtype), np.array([0, 2, 2]))
    assert out.dtype == dtype and embedding_backward(cache, np.ones((3, 2), dtype)).dtype == dtype


def test_tiny_hand_case_matches_the_spec_numbers() -> None:
    out, cache = embedding_forward(np.arange(8.0).reshape(4, 2), np.array([[1, 3, 1]]))
    d_table = embedding_backward(cache, np.array([[[1.0, -1.0], [2.0, 0.5], [10.0, 20.0]]]))
    assert out.tolist() == [[[2.0, 3.0], [6.0, 7.0], [2.0, 3.0]]]
    assert d_table.tolist() == [[0.0, 0.0], [11.0, 19.0], [0.0, 0.0], [2.0, 0.5]]


def add_at_mismatch(backward: Backward, tensors: CaseTensors, dtype: Any) -> bool:
    """Whether `backward` differs, in any bit, from the plain scatter-add np.add.at(d_table, ids,
    d_out) (the sparse product sums the same terms in the same order)."""
    ids, d_out = tensors.inputs["ids"], tensors.upstream["d_out"].astype(dtype)
    _, cache = embedding_forward(tensors.params["table"].astype(dtype), ids)
    expected = np.zeros(tensors.params["table"].shape, dtype=dtype)
    np.add.at(expected, ids.reshape(-1), d_out.reshape(-1, d_out.shape[-1]))
    actual = backward(cache, d_out)
    return actual.dtype != expected.dtype or not np.array_equal(actual, expected)


@pytest.mark.parametrize("scatter_rows", [0, embedding_module.SCATTER_ROWS], ids=["sparse product", "add.at"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(tensors=setups())
def test_both_scatters_equal_add_at_bit_for_bit(scatter_rows: int, dtype: Any, tensors: CaseTensors) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(embedding_module, "SCATTER_ROWS", scatter_rows)  # 0: every size takes the sparse product
        assert not add_at_mismatch(embedding_backward, tensors, dtype)


def test_both_scatters_agree_at_the_demo_sizes() -> None:
    """At the UMI demo's shapes (B = 128, L = 20, D = 32, 800 items), on each side of SCATTER_ROWS."""
    rng = np.random.default_rng(5)
    for shape in [(128, 20), (128,), (50,)]:
        ids = rng.integers(0, 800, shape)
        tensors = CaseTensors({"ids": ids}, {"table": rng.standard_normal((800, 32))},
                              {"d_out": rng.standard_normal((*shape, 32))})
        for rows in (0, 10**9):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(embedding_module, "SCATTER_ROWS", rows)
                assert not add_at_mismatch(embedding_backward, tensors, np.float64)


def test_negative_control_add_at_check_catches_the_last_write_wins_scatter() -> None:
    ids = np.array([[2, 2, 0]])
    tensors = CaseTensors({"ids": ids}, {"table": np.zeros((3, 2))}, {"d_out": np.ones((1, 3, 2))})
    assert add_at_mismatch(_last_write_wins, tensors, np.float64)
