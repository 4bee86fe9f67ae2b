"""The attention kernel, MHSA and target attention (spec/attention.md).

Every property comes with a negative control: a deliberately broken variant that the same check
catches, so a check that cannot fail would show up here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl.cases._base import CaseTensors, Config, Result, Tensors
from refimpl.cases.attention import COMPONENTS, attention_reference
from refimpl.gradcheck import check_component
from refimpl.nn.attention import (
    PARAM_NAMES,
    AttentionConfig,
    AttentionParams,
    attention_forward,
    masked_softmax,
    mhsa_backward,
    mhsa_forward,
    target_attention_backward,
    target_attention_forward,
    target_attention_projected_backward,
    target_attention_projected_forward,
)

Array = np.ndarray[Any, Any]


def _params(rng: np.random.Generator, d: int, scale: float = 1.0) -> Tensors:
    return {
        name: rng.standard_normal((d, d)) * scale / math.sqrt(d)
        if name.startswith("W")
        else 0.1 * rng.standard_normal(d)
        for name in PARAM_NAMES
    }


def _mask(draw: st.DrawFn, rows: int, cols: int) -> Array:
    bits = draw(st.lists(st.booleans(), min_size=rows * cols, max_size=rows * cols))
    return np.array(bits, dtype=bool).reshape(rows, cols)


@st.composite
def setups(draw: st.DrawFn, kind: str) -> tuple[CaseTensors, Config]:
    """Tensors of an `attention`, `mhsa` or `target_attention` call with hypothesis-drawn shapes,
    heads and masks (all-masked rows included); the float values come from a drawn seed."""
    heads = draw(st.sampled_from([1, 2]))
    d = heads * draw(st.integers(1, 2))
    b = draw(st.integers(1, 2))
    length = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    params = _params(rng, d)
    if kind == "mhsa":
        inputs = {"x": rng.standard_normal((b, length, d)), "mask": _mask(draw, b, length)}
        out_shape: tuple[int, ...] = (b, length, d)
    elif kind == "target_attention":
        inputs = {
            "query": rng.standard_normal((b, d)),
            "seq": rng.standard_normal((b, length, d)),
            "mask": _mask(draw, b, length),
        }
        out_shape = (b, d)
    else:
        q = draw(st.integers(1, 3))
        inputs = {
            "q_in": rng.standard_normal((b, q, d)),
            "kv_in": rng.standard_normal((b, length, d)),
            "key_mask": _mask(draw, b, length),
            "query_mask": _mask(draw, b, q),
        }
        out_shape = (b, q, d)
    upstream = {"d_out": rng.standard_normal(out_shape)}
    return CaseTensors(inputs, params, upstream), {"num_heads": heads}


# --- analytic gradients == finite differences --------------------------------------------------


@pytest.mark.parametrize("kind", ["attention", "mhsa", "target_attention"])
@given(data=st.data())
def test_gradients_match_finite_differences(kind: str, data: st.DataObject) -> None:
    tensors, config = data.draw(setups(kind))
    assert check_component(COMPONENTS[kind], tensors, config) == []


def _transposed_d_wk(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    result = attention_reference(inputs, params, config, upstream)
    return Result(result.outputs, {**result.grads, "d_Wk": result.grads["d_Wk"].T}, result.intermediates)


def _unscaled_backward(inputs: Tensors, params: Tensors, config: Config, upstream: Tensors) -> Result:
    """Forward right, but the gradient of the scores misses the 1/sqrt(D_h) factor."""
    result = attention_reference(inputs, params, config, upstream)
    dh = params["Wq"].shape[0] // config["num_heads"]
    grads = {k: v * math.sqrt(dh) if k in ("d_Wq", "d_bq") else v for k, v in result.grads.items()}
    return Result(result.outputs, grads, result.intermediates)


@pytest.mark.parametrize("broken", [_transposed_d_wk, _unscaled_backward])
def test_negative_control_finite_differences_catch_a_wrong_backward(
    broken: Callable[..., Result],
) -> None:
    rng = np.random.default_rng(1)
    tensors = CaseTensors(
        inputs={
            "q_in": rng.standard_normal((2, 3, 4)),
            "kv_in": rng.standard_normal((2, 5, 4)),
            "key_mask": np.ones((2, 5), dtype=bool),
            "query_mask": np.ones((2, 3), dtype=bool),
        },
        params=_params(rng, 4),
        upstream={"d_out": rng.standard_normal((2, 3, 4))},
    )
    assert check_component(attention_reference, tensors, {"num_heads": 1}) == []
    problems = check_component(broken, tensors, {"num_heads": 1})
    assert problems
    assert all(p.startswith(("Wk", "Wq", "bq")) for p in problems)


# --- the kernel equals a plain per-row, per-head loop ------------------------------------------


def loop_attention(
    p: AttentionParams, q_in: Array, kv_in: Array, key_mask: Array, query_mask: Array, heads: int
) -> tuple[Array, Array]:
    """The spec's equations, one batch row, query, head and key at a time (out, weights)."""
    b_size, q_size, d = q_in.shape
    length = kv_in.shape[1]
    dh = d // heads
    out = np.zeros((b_size, q_size, d))
    weights = np.zeros((b_size, heads, q_size, length))
    for b in range(b_size):
        valid_keys = [j for j in range(length) if key_mask[b, j]]
        keys = [kv_in[b, j] @ p.Wk + p.bk for j in range(length)]
        values = [kv_in[b, j] @ p.Wv + p.bv for j in range(length)]
        for i in range(q_size):
            if not query_mask[b, i] or not valid_keys:
                continue
            query = q_in[b, i] @ p.Wq + p.bq
            context = np.zeros(d)
            for h in range(heads):
                cols = slice(h * dh, (h + 1) * dh)
                scores = {
                    j: sum(float(query[c] * keys[j][c]) for c in range(cols.start, cols.stop)) / math.sqrt(dh)
                    for j in valid_keys
                }
                top = max(scores.values())
                total = sum(math.exp(s - top) for s in scores.values())
                for j in valid_keys:
                    weights[b, h, i, j] = math.exp(scores[j] - top) / total
                    context[cols] += weights[b, h, i, j] * values[j][cols]
            out[b, i] = context @ p.Wo + p.bo
    return out, weights


Kernel = Callable[[AttentionParams, Array, Array, Array, Array, int], tuple[Array, Array]]


def reference_kernel(
    p: AttentionParams, q_in: Array, kv_in: Array, key_mask: Array, query_mask: Array, heads: int
) -> tuple[Array, Array]:
    out, cache = attention_forward(p, q_in, kv_in, key_mask, AttentionConfig(heads), query_mask)
    return out, cache.weights


def kernel_vs_loop(kernel: Kernel, tensors: CaseTensors, heads: int) -> float:
    """The greatest difference between `kernel` and the loop implementation (outputs, weights)."""
    p = AttentionParams(**tensors.params)
    args = (tensors.inputs[k] for k in ("q_in", "kv_in", "key_mask", "query_mask"))
    q_in, kv_in, key_mask, query_mask = args
    out, weights = kernel(p, q_in, kv_in, key_mask, query_mask, heads)
    loop_out, loop_weights = loop_attention(p, q_in, kv_in, key_mask, query_mask, heads)
    return max(float(np.max(np.abs(out - loop_out))), float(np.max(np.abs(weights - loop_weights))))


@given(data=st.data())
def test_kernel_equals_the_loop_implementation(data: st.DataObject) -> None:
    tensors, config = data.draw(setups("attention"))
    assert kernel_vs_loop(reference_kernel, tensors, config["num_heads"]) < 1e-12


def _unscaled_kernel(
    p: AttentionParams, q_in: Array, kv_in: Array, key_mask: Array, query_mask: Array, heads: int
) -> tuple[Array, Array]:
    """Scores not divided by sqrt(D_h): the same as scaling Wq and bq by sqrt(D_h)."""
    factor = math.sqrt(p.Wq.shape[0] // heads)
    scaled = AttentionParams(**{**vars(p), "Wq": p.Wq * factor, "bq": p.bq * factor})
    return reference_kernel(scaled, q_in, kv_in, key_mask, query_mask, heads)


def _head_swapped_kernel(
    p: AttentionParams, q_in: Array, kv_in: Array, key_mask: Array, query_mask: Array, heads: int
) -> tuple[Array, Array]:
    """Heads split from interleaved columns (column c to head c % H) instead of contiguous blocks."""
    d = p.Wq.shape[0]
    order = np.concatenate([np.arange(h, d, heads) for h in range(heads)])
    permuted = {
        k: (v[:, order] if k in ("Wq", "Wk", "Wv") else v[order]) for k, v in vars(p).items() if k not in ("Wo", "bo")
    }
    swapped = AttentionParams(**permuted, Wo=p.Wo[order], bo=p.bo)
    return reference_kernel(swapped, q_in, kv_in, key_mask, query_mask, heads)


@pytest.mark.parametrize(("broken", "heads"), [(_unscaled_kernel, 1), (_head_swapped_kernel, 2)])
def test_negative_control_loop_comparison_catches_a_wrong_kernel(broken: Kernel, heads: int) -> None:
    rng = np.random.default_rng(2)
    tensors = CaseTensors(
        inputs={
            "q_in": rng.standard_normal((2, 3, 4)),
            "kv_in": rng.standard_normal((2, 4, 4)),
            "key_mask": np.array([[True, False, True, True], [True, True, True, True]]),
            "query_mask": np.ones((2, 3), dtype=bool),
        },
        params=_params(rng, 4),
        upstream={},
    )
    assert kernel_vs_loop(reference_kernel, tensors, heads) < 1e-12
    assert kernel_vs_loop(broken, tensors, heads) > 1e-3


# --- MHSA: permutation equivariance over valid positions ---------------------------------------

Mhsa = Callable[[AttentionParams, Array, Array, AttentionConfig], Array]


def reference_mhsa(p: AttentionParams, x: Array, mask: Array, cfg: AttentionConfig) -> Array:
    return mhsa_forward(p, x, mask, cfg)[0]


def equivariance_error(mhsa: Mhsa, tensors: CaseTensors, config: Config, seed: int) -> float:
    """|mhsa(x[perm])  -  mhsa(x)[perm]| for a random permutation of the positions of each row."""
    p = AttentionParams(**tensors.params)
    x, mask = tensors.inputs["x"], tensors.inputs["mask"]
    cfg = AttentionConfig(config["num_heads"])
    rng = np.random.default_rng(seed)
    perm = np.stack([rng.permutation(x.shape[1]) for _ in range(x.shape[0])])
    rows = np.arange(x.shape[0])[:, None]
    permuted = mhsa(p, x[rows, perm], mask[rows, perm], cfg)
    return float(np.max(np.abs(permuted - mhsa(p, x, mask, cfg)[rows, perm])))


@given(data=st.data(), seed=st.integers(0, 1000))
def test_mhsa_is_permutation_equivariant(data: st.DataObject, seed: int) -> None:
    tensors, config = data.draw(setups("mhsa"))
    assert equivariance_error(reference_mhsa, tensors, config, seed) < 1e-12


def _positional_mhsa(p: AttentionParams, x: Array, mask: Array, cfg: AttentionConfig) -> Array:
    """A broken MHSA that adds a position signal: no longer permutation-equivariant."""
    positions = np.arange(x.shape[1], dtype=float)[None, :, None]
    return reference_mhsa(p, x + 0.5 * positions, mask, cfg)


def test_negative_control_equivariance_catches_position_dependence() -> None:
    rng = np.random.default_rng(3)
    tensors = CaseTensors(
        {"x": rng.standard_normal((2, 5, 4)), "mask": np.ones((2, 5), dtype=bool)}, _params(rng, 4), {}
    )
    assert equivariance_error(reference_mhsa, tensors, {"num_heads": 2}, seed=0) < 1e-12
    assert equivariance_error(_positional_mhsa, tensors, {"num_heads": 2}, seed=0) > 1e-3


# --- masked positions: no influence, zero gradient ---------------------------------------------


def masked_leak(mhsa: Mhsa, tensors: CaseTensors, config: Config) -> float:
    """How much the output moves when x changes at masked positions, plus the gradient they get."""
    p = AttentionParams(**tensors.params)
    x, mask = tensors.inputs["x"], tensors.inputs["mask"]
    cfg = AttentionConfig(config["num_heads"])
    noise = np.where(mask[:, :, None], 0.0, 10.0 * np.random.default_rng(4).standard_normal(x.shape))
    moved = float(np.max(np.abs(mhsa(p, x + noise, mask, cfg) - mhsa(p, x, mask, cfg))))
    _, cache = mhsa_forward(p, x, mask, cfg)
    _, d_x = mhsa_backward(cache, tensors.upstream["d_out"])
    return moved + float(np.max(np.abs(d_x[~mask]), initial=0.0))


@given(data=st.data())
def test_masked_positions_change_nothing_and_get_zero_gradient(data: st.DataObject) -> None:
    tensors, config = data.draw(setups("mhsa"))
    assert masked_leak(reference_mhsa, tensors, config) == 0.0


def _mask_ignoring_mhsa(p: AttentionParams, x: Array, mask: Array, cfg: AttentionConfig) -> Array:
    """A broken MHSA that masks the output rows but lets every key in."""
    out = mhsa_forward(p, x, np.ones_like(mask), cfg)[0]
    return np.where(mask[:, :, None], out, 0.0)


def test_negative_control_masked_leak_catches_unmasked_keys() -> None:
    rng = np.random.default_rng(5)
    mask = np.array([[True, False, True, False], [True, True, True, False]])
    tensors = CaseTensors(
        {"x": rng.standard_normal((2, 4, 4)), "mask": mask}, _params(rng, 4), {"d_out": rng.standard_normal((2, 4, 4))}
    )
    assert masked_leak(reference_mhsa, tensors, {"num_heads": 2}) == 0.0
    assert masked_leak(_mask_ignoring_mhsa, tensors, {"num_heads": 2}) > 1e-3


# --- all-masked rows: zeros, no NaN, no warning ------------------------------------------------

Softmax = Callable[[Array, Array], Array]


def empty_row_problems(softmax: Softmax, dtype: Any) -> list[str]:
    """Run a softmax on rows with every entry masked (and one normal row); report what goes wrong."""
    scores = np.array([[1.0, 2.0, 3.0], [4.0, -1.0, 0.5], [700.0, 800.0, 900.0]], dtype=dtype)
    mask = np.array([[False, False, False], [True, False, True], [False, False, False]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        weights = softmax(scores, mask)
    problems = [f"warning: {w.message}" for w in caught]
    if not np.all(np.isfinite(weights)):
        problems.append("non-finite weights")
    elif np.any(weights[[0, 2]] != 0):
        problems.append("an all-masked row is not zero")
    if weights.dtype != dtype:
        problems.append(f"dtype {weights.dtype}")
    return problems


def _naive_softmax(scores: Array, mask: Array) -> Array:
    filled = np.where(mask, scores, -np.inf)
    exp = np.exp(filled - filled.max(axis=-1, keepdims=True))
    result: Array = exp / exp.sum(axis=-1, keepdims=True)
    return result


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_all_masked_rows_give_zeros_without_nan_or_warning(dtype: Any) -> None:
    assert empty_row_problems(masked_softmax, dtype) == []
    rng = np.random.default_rng(6)
    params = {k: v.astype(dtype) for k, v in _params(rng, 4).items()}
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    mask = np.array([[False, False, False], [True, False, True]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, cache = mhsa_forward(AttentionParams(**params), x, mask, AttentionConfig(2))
        grads, d_x = mhsa_backward(cache, rng.standard_normal((2, 3, 4)).astype(dtype))
    assert out.dtype == dtype and d_x.dtype == dtype
    assert np.all(out[0] == 0) and np.all(d_x[0] == 0) and np.all(cache.weights[0] == 0)
    assert all(np.all(np.isfinite(getattr(grads, name))) for name in PARAM_NAMES)


def test_zero_keys_behave_as_all_masked_rows() -> None:
    """L = 0 (e.g. a batch whose category subsequences are all empty): zeros, no error."""
    rng = np.random.default_rng(8)
    params = AttentionParams(**_params(rng, 4))
    out, cache = target_attention_forward(
        params, rng.standard_normal((2, 4)), np.zeros((2, 0, 4)), np.zeros((2, 0), dtype=bool), AttentionConfig(2)
    )
    grads, d_query, d_seq = target_attention_backward(cache, rng.standard_normal((2, 4)))
    assert np.all(out == 0) and np.all(d_query == 0) and d_seq.shape == (2, 0, 4)
    assert all(np.all(getattr(grads, name) == 0) for name in PARAM_NAMES)


def test_negative_control_empty_row_check_catches_a_naive_softmax() -> None:
    problems = empty_row_problems(_naive_softmax, np.float64)
    assert "non-finite weights" in problems
    assert any(p.startswith("warning") for p in problems)


# --- large logits, dtypes, target attention ----------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_large_logits_stay_finite_and_in_dtype(dtype: Any) -> None:
    rng = np.random.default_rng(7)
    params = {k: (v * 300).astype(dtype) for k, v in _params(rng, 8).items()}
    x = rng.standard_normal((2, 6, 8)).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, cache = mhsa_forward(AttentionParams(**params), x, np.ones((2, 6), bool), AttentionConfig(2))
    assert out.dtype == dtype and cache.weights.dtype == dtype
    assert np.all(np.isfinite(out))
    assert np.allclose(cache.weights.sum(axis=-1), 1.0, atol=1e-5)


def test_projected_target_attention_is_the_kernel_with_one_query() -> None:
    rng = np.random.default_rng(8)
    p = AttentionParams(**_params(rng, 4))
    query, seq = rng.standard_normal((3, 4)), rng.standard_normal((3, 5, 4))
    mask = np.array([[True] * 5, [False] * 5, [True, False, False, False, False]])
    out, _ = target_attention_projected_forward(p, query, seq, mask, AttentionConfig(2))
    kernel_out, _ = attention_forward(p, query[:, None, :], seq, mask, AttentionConfig(2))
    assert np.array_equal(out, kernel_out[:, 0, :])
    assert np.all(out[1] == 0)


# --- target attention: the O(L D) form == the projected form (the executable definition) --------

TargetForward = Callable[..., tuple[Array, Any]]
TargetBackward = Callable[..., tuple[AttentionParams, Array, Array]]


@st.composite
def target_examples(draw: st.DrawFn) -> dict[str, Any]:
    """A target-attention call with drawn heads, widths, lengths (0 included), masks (all-masked
    rows included), weight scale (30: scores in the hundreds) and an optional upstream gradient on
    the attention weights (as PGIN's pointer gives)."""
    heads = draw(st.sampled_from([1, 2, 4]))
    d = heads * draw(st.integers(1, 3))
    b, length = draw(st.integers(1, 3)), draw(st.integers(0, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    with_d_weights = draw(st.booleans())
    return {
        "params": AttentionParams(**_params(rng, d, scale=draw(st.sampled_from([1.0, 30.0])))),
        "query": rng.standard_normal((b, d)),
        "seq": rng.standard_normal((b, length, d)),
        "mask": _mask(draw, b, length),
        "cfg": AttentionConfig(heads),
        "d_out": rng.standard_normal((b, d)),
        "d_weights": rng.standard_normal((b, heads, 1, length)) if with_d_weights else None,
    }


def _run_target(example: dict[str, Any], forward: TargetForward, backward: TargetBackward) -> dict[str, Array]:
    e = example
    out, cache = forward(e["params"], e["query"], e["seq"], e["mask"], e["cfg"])
    grads, d_query, d_seq = backward(cache, e["d_out"], e["d_weights"])
    return {
        "out": out, "attn_weights": cache.weights, "context": cache.context, "d_query": d_query, "d_seq": d_seq,
        **{f"d_{name}": getattr(grads, name) for name in PARAM_NAMES},
    }


def target_form_mismatches(
    example: dict[str, Any],
    forward: TargetForward = target_attention_forward,
    backward: TargetBackward = target_attention_backward,
) -> list[str]:
    """Names of the tensors where a target-attention pair differs from the projected form beyond
    float64 round-off (both run on the same example)."""
    fast = _run_target(example, forward, backward)
    projected = _run_target(example, target_attention_projected_forward, target_attention_projected_backward)
    def close(a: Array, b: Array) -> bool:
        return a.shape == b.shape and np.allclose(a, b, rtol=1e-9, atol=1e-10 * (1 + np.abs(b).max(initial=0)))

    return [name for name in projected if not close(fast[name], projected[name])]


@given(example=target_examples())
def test_target_attention_equals_the_projected_form(example: dict[str, Any]) -> None:
    assert target_form_mismatches(example) == []


def test_target_attention_masked_rows_are_zero_in_both_forms() -> None:
    rng = np.random.default_rng(11)
    example = {
        "params": AttentionParams(**_params(rng, 4)), "query": rng.standard_normal((2, 4)),
        "seq": rng.standard_normal((2, 3, 4)), "mask": np.array([[False] * 3, [True, False, True]]),
        "cfg": AttentionConfig(2), "d_out": rng.standard_normal((2, 4)), "d_weights": rng.standard_normal((2, 2, 1, 3)),
    }
    fast = _run_target(example, target_attention_forward, target_attention_backward)
    assert np.all(fast["out"][0] == 0) and np.all(fast["d_query"][0] == 0) and np.all(fast["d_seq"][0] == 0)
    assert np.all(fast["d_seq"][1, 1] == 0) and np.all(fast["d_bk"] == 0)
    assert target_form_mismatches(example) == []


def _example_with_valid_keys() -> dict[str, Any]:
    rng = np.random.default_rng(12)
    return {
        "params": AttentionParams(**_params(rng, 4)), "query": rng.standard_normal((2, 4)),
        "seq": rng.standard_normal((2, 5, 4)), "mask": np.array([[True, True, False, True, True], [True] * 5]),
        "cfg": AttentionConfig(2), "d_out": rng.standard_normal((2, 4)), "d_weights": rng.standard_normal((2, 2, 1, 5)),
    }


def test_negative_control_form_check_catches_a_dropped_value_bias() -> None:
    """ctx_h = p_h Wv_h without + bv_h: the outputs and the context differ."""
    example = _example_with_valid_keys()
    params = example["params"]

    def no_value_bias(p: AttentionParams, *args: Any) -> Any:
        out, cache = target_attention_forward(AttentionParams(**{**vars(p), "bv": np.zeros_like(p.bv)}), *args)
        return out, cache

    assert params.bv.any()
    mismatches = target_form_mismatches(example, no_value_bias)
    assert "out" in mismatches and "context" in mismatches


def test_negative_control_form_check_catches_a_missing_score_path_in_d_seq() -> None:
    """d_seq = w^T d_p only (the path through the scores forgotten): only d_seq differs."""

    def pooled_path_only(cache: Any, d_out: Array, d_weights: Array | None) -> tuple[AttentionParams, Array, Array]:
        grads, d_query, _ = target_attention_backward(cache, d_out, d_weights)
        weights = cache.weights[:, :, 0, :]
        b, heads, d = cache.pooled.shape
        d_context = np.where(cache.row_valid[:, None], d_out, 0) @ cache.params.Wo.T
        wv = cache.params.Wv.reshape(d, heads, d // heads).transpose(1, 0, 2)
        d_p = (d_context.reshape(b, heads, -1).transpose(1, 0, 2) @ wv.transpose(0, 2, 1)).transpose(1, 0, 2)
        return grads, d_query, weights.transpose(0, 2, 1) @ d_p

    assert target_form_mismatches(_example_with_valid_keys(), backward=pooled_path_only) == ["d_seq"]


def test_tiny_hand_case_matches_the_spec_numbers() -> None:
    a = 1.0 / (1.0 + math.exp(-1.0 / math.sqrt(2.0)))
    eye = np.eye(2)
    p = AttentionParams(
        Wq=eye,
        bq=np.zeros(2),
        Wk=eye,
        bk=np.zeros(2),
        Wv=np.array([[1.0, 2.0], [0.0, 1.0]]),
        bv=np.zeros(2),
        Wo=eye,
        bo=np.array([0.5, 0.0]),
    )
    out, cache = mhsa_forward(p, eye[None], np.ones((1, 2), bool), AttentionConfig(1))
    assert np.allclose(out[0], [[a + 0.5, 1 + a], [1.5 - a, 2 - a]], atol=1e-15)
    assert round(a, 6) == 0.669762


def test_negative_control_one_query_check_catches_target_attention_ignoring_the_mask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken target attention that lets padded keys in: it no longer equals the kernel."""
    real = target_attention_projected_forward

    def unmasked(p: AttentionParams, query: Any, seq: Any, mask: Any, cfg: AttentionConfig) -> Any:
        return real(p, query, seq, np.ones_like(mask), cfg)

    monkeypatch.setitem(globals(), "target_attention_projected_forward", unmasked)
    with pytest.raises(AssertionError):
        test_projected_target_attention_is_the_kernel_with_one_query()
