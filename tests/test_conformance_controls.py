"""Negative controls for the conformance runner on the base components.

Each broken adapter is the NumPy reference with ONE deliberate bug. The runner must fail exactly the
golden cases the bug shows in (computed here from the cases' own inputs), and name the tensor that
diverges. The float32 route is checked the same way.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from refimpl.cases._base import Tensors
from refimpl.conformance import reference_adapter, run_conformance
from refimpl.conformance.runner import AdapterFn, Report, select_cases
from refimpl.golden import default_golden_root
from refimpl.golden.format import GoldenCase
from refimpl.nn.attention import (
    AttentionCache,
    AttentionConfig,
    AttentionParams,
    attention_forward,
    masked_softmax,
    mhsa_forward,
    target_attention_projected_forward,
)

ATTENTION = ("attention", "mhsa", "target_attention")
BASE = (*ATTENTION, "linear", "mlp", "masked_mean_pool", "embedding")
REFERENCE = reference_adapter()
Array = np.ndarray[Any, Any]


def _cases(components: tuple[str, ...] = ATTENTION) -> list[GoldenCase]:
    return select_cases(default_golden_root(), components)


def _failing(report: Report) -> dict[str, list[str]]:
    """case id -> failing tensor names, for every case that did not pass."""
    assert all(r.status in ("pass", "fail") for r in report.results), [r.text for r in report.results]
    return {r.case_id: r.failing_names for r in report.results if r.status == "fail"}


# --- the reference with one bug each --------------------------------------------------------------


def _forward(
    component: str, inputs: Tensors, params: Tensors, config: dict[str, Any], ignore_masks: bool = False
) -> AttentionCache:
    """The reference forward of an attention component; its cache holds q, k, v, the masks (for
    target attention: the projected form, the kernel with one query)."""
    p, cfg = AttentionParams(**params), AttentionConfig(config["num_heads"])
    masks = {k: np.ones_like(v) if ignore_masks else v for k, v in inputs.items() if v.dtype == bool}
    if component == "mhsa":
        return mhsa_forward(p, inputs["x"], masks["mask"], cfg)[1]
    if component == "target_attention":
        return target_attention_projected_forward(p, inputs["query"], inputs["seq"], masks["mask"], cfg)[1]
    return attention_forward(p, inputs["q_in"], inputs["kv_in"], masks["key_mask"], cfg, masks["query_mask"])[1]


def _outputs(component: str, cache: AttentionCache, weights: Array) -> dict[str, Array]:
    """out, attn_weights and context recomputed from (possibly wrong) attention weights."""
    b, h, q, _ = weights.shape
    context = (weights @ cache.v).transpose(0, 2, 1, 3).reshape(b, q, -1)
    out = np.where(cache.row_valid[:, :, None], context @ cache.params.Wo + cache.params.bo, 0)
    if component == "target_attention":
        return {"out": out[:, 0], "attn_weights": weights[:, :, 0], "context": context[:, 0]}
    return {"out": out, "attn_weights": weights, "context": context}


WeightsBug = Callable[[AttentionCache, Array], Array]


def forward_bug(component: str, bug: WeightsBug) -> AdapterFn:
    """The reference with the attention weights replaced by `bug(cache, key_mask)`; the gradients
    stay the reference's, so only the forward tensors can fail."""

    def run(inputs: Tensors, params: Tensors, config: dict[str, Any], upstream: Tensors) -> dict[str, Any]:
        cache = _forward(component, inputs, params, config)
        key_mask = inputs["key_mask" if component == "attention" else "mask"]
        result = dict(REFERENCE[component](inputs, params, config, upstream))
        return result | _outputs(component, cache, bug(cache, key_mask))

    return run


def _unscaled_weights(cache: AttentionCache, key_mask: Array) -> Array:
    scores = cache.q @ cache.k.transpose(0, 1, 3, 2)  # missing * 1/sqrt(D_h)
    weights = masked_softmax(scores, key_mask[:, None, None, :])
    return np.where(cache.row_valid[:, None, :, None], weights, 0)


def _query_axis_weights(cache: AttentionCache, key_mask: Array) -> Array:
    scores = cache.q @ cache.k.transpose(0, 1, 3, 2) * cache.scale
    valid = cache.row_valid[:, None, :, None] & key_mask[:, None, None, :]
    return masked_softmax(scores.swapaxes(-1, -2), valid.swapaxes(-1, -2)).swapaxes(-1, -2)


def mask_ignored(component: str) -> AdapterFn:
    def run(inputs: Tensors, params: Tensors, config: dict[str, Any], upstream: Tensors) -> dict[str, Any]:
        unmasked = {k: np.ones_like(v) if v.dtype == bool else v for k, v in inputs.items()}
        return dict(REFERENCE[component](unmasked, params, config, upstream))

    return run


def transposed_grad(component: str, name: str) -> AdapterFn:
    def run(inputs: Tensors, params: Tensors, config: dict[str, Any], upstream: Tensors) -> dict[str, Any]:
        result = dict(REFERENCE[component](inputs, params, config, upstream))
        return result | {name: result[name].T}

    return run


def scaled_output(component: str, factor: float) -> AdapterFn:
    def run(inputs: Tensors, params: Tensors, config: dict[str, Any], upstream: Tensors) -> dict[str, Any]:
        result = dict(REFERENCE[component](inputs, params, config, upstream))
        return result | {"out": result["out"] * factor}

    return run


def _adapter(make: Callable[[str], AdapterFn]) -> dict[str, AdapterFn]:
    return {component: make(component) for component in ATTENTION}


# --- where each bug must show, computed from the cases' inputs -----------------------------------


def _masks(case: GoldenCase) -> tuple[Array, Array]:
    """(key_mask (B, L), query_mask (B, Q)) of a case, whatever the component calls them."""
    inputs = case.load_role("input")
    if case.component == "attention":
        return inputs["key_mask"], inputs["query_mask"]
    if case.component == "mhsa":
        return inputs["mask"], inputs["mask"]
    return inputs["mask"], np.ones((inputs["mask"].shape[0], 1), dtype=bool)


def _has_a_choice(case: GoldenCase) -> bool:
    """Some valid query has two or more valid keys (otherwise its weight is 1 however it is scored)."""
    key_mask, query_mask = _masks(case)
    return bool(np.any(query_mask & (key_mask.sum(axis=1) >= 2)[:, None]))


def _has_masked_entries(case: GoldenCase) -> bool:
    return not all(mask.all() for mask in _masks(case))


def _outside_tolerance(case: GoldenCase, name: str, factor: float, dtype: str) -> bool:
    entry = next(t for t in case.tensors if t.name == name)
    expected = case.load(entry)
    tol = entry.float64 if dtype == "float64" else entry.float32
    assert tol is not None
    return bool(np.any(np.abs(expected * (factor - 1)) > tol.atol + tol.rtol * np.abs(expected)))


# --- the controls -------------------------------------------------------------------------------


def test_the_reference_passes_every_base_case_in_float64_and_float32() -> None:
    for dtype in ("float64", "float32"):
        report = run_conformance(REFERENCE, components=BASE, dtype=dtype)
        assert report.ok, [r.text for r in report.results if r.status != "pass"]
        assert {r.case_id for r in report.results} == {c.case_id for c in _cases(BASE)}


def test_scores_not_scaled_fail_on_the_weights_first() -> None:
    failing = _failing(run_conformance(_adapter(lambda c: forward_bug(c, _unscaled_weights)), components=ATTENTION))
    # target_attention/large_logits: its scores are in the hundreds, the softmax is one-hot at
    # either scale, so that case alone cannot see this bug (the other cases with a choice do).
    expected = {c.case_id for c in _cases() if _has_a_choice(c)} - {"target_attention/large_logits"}
    assert set(failing) == expected
    for names in failing.values():
        assert "out" in names and not any(n.startswith("d_") for n in names)
    report = run_conformance(_adapter(lambda c: forward_bug(c, _unscaled_weights)), cases=["mhsa/tiny_hand"])
    assert report.results[0].first_divergent_intermediate == "attn_weights"
    assert "attn_weights" in report.results[0].text


def test_softmax_over_the_query_axis_fails() -> None:
    failing = _failing(run_conformance(_adapter(lambda c: forward_bug(c, _query_axis_weights)), components=ATTENTION))
    # mhsa/tiny_hand has symmetric scores (Wq = Wk = I, x = I): its weight matrix is symmetric, so
    # a softmax over either axis gives the same numbers. Every other case with a choice catches it.
    expected = {c.case_id for c in _cases() if _has_a_choice(c)} - {"mhsa/tiny_hand"}
    assert set(failing) == expected
    assert all("attn_weights" in names or "out" in names for names in failing.values())
    assert all("out" in names for names in failing.values())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_ignored_mask_fails_every_case_with_a_masked_entry(dtype: str) -> None:
    failing = _failing(run_conformance(_adapter(mask_ignored), components=ATTENTION, dtype=dtype))
    assert set(failing) == {c.case_id for c in _cases() if _has_masked_entries(c)}
    assert all("out" in names for names in failing.values())


def test_transposed_param_gradient_fails_on_that_gradient_alone() -> None:
    failing = _failing(run_conformance(_adapter(lambda c: transposed_grad(c, "d_Wq")), components=ATTENTION))

    def asymmetric(case: GoldenCase) -> bool:
        d_wq = case.load(next(t for t in case.tensors if t.name == "d_Wq"))
        return not np.allclose(d_wq, d_wq.T, rtol=1e-7, atol=1e-9)

    assert set(failing) == {c.case_id for c in _cases() if asymmetric(c)}
    assert len(failing) >= 10
    assert all(names == ["d_Wq"] for names in failing.values())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_output_off_by_1e_4_relative_fails_on_the_output_alone(dtype: str) -> None:
    factor = 1 + 1e-4
    failing = _failing(run_conformance(_adapter(lambda c: scaled_output(c, factor)), components=ATTENTION, dtype=dtype))
    expected = {c.case_id for c in _cases() if _outside_tolerance(c, "out", factor, dtype)}
    assert set(failing) == expected
    assert all(names == ["out"] for names in failing.values())
    # Even the measured float32 tolerances (loosest for the large-logit cases) are tighter than 1e-4
    # relative on some element of every case's output.
    assert expected == {c.case_id for c in _cases()}


def test_scaled_kernel_gradient_bug_is_named_in_the_report_text() -> None:
    """A bug in a backward only: the text names the gradient, its worst element and the tolerance."""
    report = run_conformance(_adapter(lambda c: transposed_grad(c, "d_Wq")), cases=["mhsa/realistic"])
    (result,) = report.results
    assert not report.ok and result.status == "fail"
    assert "d_Wq" in result.text and "mhsa/realistic" in result.text


MASK_IGNORED = _adapter(mask_ignored)


def test_the_command_exits_non_zero_and_names_the_case() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    command = [
        sys.executable,
        "-m",
        "refimpl.cli",
        "conform",
        "--component",
        "target_attention",
        "--adapter",
        "test_conformance_controls:MASK_IGNORED",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert finished.returncode != 0, finished.stdout + finished.stderr
    assert "target_attention/small" in finished.stdout
    assert "FAIL" in finished.stdout.upper()


def test_expected_sets_are_not_trivial() -> None:
    """The case selections above must single out some cases and spare others, or they prove little."""
    cases = _cases()
    assert 0 < sum(_has_masked_entries(c) for c in cases) < len(cases)
    assert 0 < sum(_has_a_choice(c) for c in cases) < len(cases)
    assert math.isclose(1 + 1e-4, 1.0001)
