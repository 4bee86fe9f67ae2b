"""Negative controls of the cases added for independent ports (issue 11, items 7-8).

Each broken adapter is the NumPy reference with ONE realistic port bug. It must fail the new case
made for it, on the tensor the case is about, and (where the point is that older cases could not
tell) pass the older cases of the same component.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from refimpl.cases import all_cases
from refimpl.cases._base import Tensors
from refimpl.conformance import reference_adapter, run_conformance
from refimpl.conformance.runner import AdapterFn, Report
from refimpl.nn.attention import AttentionParams
from refimpl.nn.linear_attention import (
    LinearAttentionConfig,
    _merge_heads,
    linear_attention_forward,
    project_output,
)

REFERENCE = reference_adapter()
ROOT = Path(__file__).resolve().parents[1]
NEW_COMPONENTS = ("category_history", "category_subsequence", "top_k_categories", "cascade_exact",
                  "top_n_metrics", "auc", "pointer_generator_serving")
Array = np.ndarray[Any, Any]


def _run(component: str, fn: AdapterFn, dtype: str = "float64") -> Report:
    return run_conformance({component: fn}, components=(component,), dtype=dtype)


def _failing(report: Report) -> dict[str, list[str]]:
    assert all(r.status in ("pass", "fail") for r in report.results), [r.text for r in report.results]
    return {r.case_id.split("/")[1]: r.failing_names for r in report.results if r.status == "fail"}


def _patched(component: str, patch: Callable[[Tensors, dict[str, Any], dict[str, Any]], dict[str, Any]]) -> AdapterFn:
    """The reference whose returned tensors are replaced by `patch(inputs, config, returned)`."""
    def run(inputs: Tensors, params: Tensors, config: dict[str, Any], upstream: Tensors) -> dict[str, Any]:
        returned = dict(REFERENCE[component](inputs, params, config, upstream))
        return returned | patch(inputs, config, returned)

    return run


# --- every new case links to a heading that exists ------------------------------------------------


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than - and _ dropped, spaces to -."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def _broken_links(sections: dict[str, str]) -> list[str]:
    """The cases (case id -> spec_section) whose page or heading does not exist."""
    broken = []
    for case_id, section in sections.items():
        page, _, anchor = section.partition("#")
        path = ROOT / page
        if not path.is_file() or anchor not in _anchors(path):
            broken.append(f"{case_id}: {section}")
    return broken


NEW_CASE_IDS = {c.case_id for c in all_cases() if c.component in NEW_COMPONENTS} | {
    "linear_attention/masked_queries", "linear_attention_explicit/masked_queries",
    "ifa/softplus_threshold", "ifa/saturated_logits", "user_guided_attention/relu_at_zero",
    "interest_refinement/relu_at_zero",
}


def test_new_cases_link_to_existing_headings() -> None:
    sections = {c.case_id: c.spec_section for c in all_cases() if c.case_id in NEW_CASE_IDS}
    assert len(sections) == 18
    assert _broken_links(sections) == []


def test_link_check_catches_a_missing_heading_or_page() -> None:
    assert _broken_links({"a": "spec/ifa.md#the-loss-and-softplus"}) == []
    assert _broken_links({"b": "spec/ifa.md#no-such-heading", "c": "spec/nosuch.md#the-model"}) == [
        "b: spec/ifa.md#no-such-heading", "c: spec/nosuch.md#the-model"]


def test_the_reference_passes_the_new_cases_at_both_precisions() -> None:
    components = tuple(sorted({case_id.split("/")[0] for case_id in NEW_CASE_IDS}))
    for dtype in ("float64", "float32"):
        report = run_conformance(REFERENCE, components=components, dtype=dtype)
        assert report.ok, [r.text for r in report.results if r.status != "pass"]
        assert NEW_CASE_IDS <= {r.case_id for r in report.results}


def test_integer_cases_have_zero_tolerances_and_compare_exactly() -> None:
    exact = [c for c in all_cases() if c.component in NEW_COMPONENTS[:4]]
    assert exact and all(c.rtol == 0.0 and c.atol == 0.0 for c in exact)

    def off_by_one(inputs: Tensors, config: dict[str, Any], returned: dict[str, Any]) -> dict[str, Any]:
        history = returned["history"].copy()
        history[0, 0] += 1
        return {"history": history}

    for dtype in ("float64", "float32"):  # an int output is exact at float32 too
        failing = _failing(_run("category_history", _patched("category_history", off_by_one), dtype))
        assert failing == {"dedup_order_truncation": ["history"], "timestamps_and_ties": ["history"]}


# --- item 7: the masked-row rule and the context intermediate of linear attention -----------------


def _linear_attention_bug(component: str, bug: str) -> AdapterFn:
    """The reference forward with one bug in the normalization step: `no_degree` leaves out the
    division by the degree, `eps` uses eps = 1e-4 instead of 1e-6. Gradients stay the reference's."""
    def run(inputs: Tensors, params: Tensors, config: dict[str, Any], upstream: Tensors) -> dict[str, Any]:
        returned = dict(REFERENCE[component](inputs, params, config, upstream))
        cfg = LinearAttentionConfig(config["num_heads"], config.get("phi", "softplus"), config.get("eps", 1e-6))
        _, cache = linear_attention_forward(AttentionParams(**params), inputs["q_in"], inputs["kv_in"],
                                            inputs["key_mask"], cfg, query_mask=inputs["query_mask"])
        proj = cache.proj
        numerator = proj.phi_q @ cache.kv_summary
        denominator = np.ones_like(cache.degree) if bug == "no_degree" else cache.degree + 1e-4
        per_head = numerator / denominator[..., None] * proj.row_valid[:, None, :, None]
        context = _merge_heads(per_head)
        return returned | {"context": context, "out": project_output(proj, context)}

    return run


@pytest.mark.parametrize("bug", ["no_degree", "eps"])
def test_a_normalization_bug_is_localised_at_the_context(bug: str) -> None:
    report = _run("linear_attention", _linear_attention_bug("linear_attention", bug))
    failed = [r for r in report.results if r.status == "fail"]
    assert len(failed) >= 5
    for result in failed:
        assert result.first_divergent_intermediate == "context"
        assert set(result.failing_names) == {"context", "out"}


def test_weights_at_masked_queries_fail_the_masked_queries_case() -> None:
    """The explicit form before the rule: normalized weights kept at masked query rows."""
    def every_row(inputs: Tensors, config: dict[str, Any], returned: dict[str, Any]) -> dict[str, Any]:
        weights = returned["attn_weights"]
        degree = returned["degree"]
        eps = config.get("eps", 1e-6)
        affinity = returned["phi_q"] @ returned["phi_k"].transpose(0, 1, 3, 2)
        kept = np.where(weights.sum(axis=-1, keepdims=True) == 0, affinity / (degree[..., None] + eps), weights)
        return {"attn_weights": kept}

    failing = _failing(_run("linear_attention_explicit", _patched("linear_attention_explicit", every_row)))
    assert failing == {"masked_queries": ["attn_weights"], "softplus_multihead": ["attn_weights"]}


# --- item 7: softplus threshold and item 8: probability-space BCE in IFA --------------------------


def _esmm_bug(per_candidate: Callable[[Array, Array, Array, Array], Array]) -> AdapterFn:
    """The reference IFA with its loss and per-candidate loss recomputed from the logits by a
    different formula (the gradients stay the reference's)."""
    def patch(inputs: Tensors, config: dict[str, Any], returned: dict[str, Any]) -> dict[str, Any]:
        a, c = returned["impression_logit"], returned["click_logit"]
        mask = inputs["cand_mask"]
        per = np.where(mask, per_candidate(a, c, inputs["impression"], inputs["click"]), 0.0).astype(a.dtype)
        return {"per_candidate_loss": per, "loss": np.asarray(per.sum() / max(int(mask.sum()), 1), dtype=a.dtype)}

    return _patched("ifa", patch)


def _threshold_softplus(x: Array) -> Array:
    """torch.nn.functional.softplus with its default threshold 20."""
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))


def _per_candidate_threshold(a: Array, c: Array, y_imp: Array, y_clk: Array) -> Array:
    terms = np.stack([-a, -c, -a - c])
    top = terms.max(axis=0)
    lse = top + np.log(np.exp(terms - top).sum(axis=0))
    sp = _threshold_softplus
    return (sp(a) - y_imp * a) + (sp(-a) + sp(-c) - (1 - y_clk) * lse)


def _bce(p: Array, y: Array) -> Array:
    """torch.nn.BCELoss: logs clamped at -100 (log 0 = -inf is clamped, silently)."""
    with np.errstate(divide="ignore"):
        return -(y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p), -100))


def _per_candidate_probability_space(a: Array, c: Array, y_imp: Array, y_clk: Array) -> Array:
    p_imp, p_clk = 1 / (1 + np.exp(-a)), 1 / (1 + np.exp(-c))
    return _bce(p_imp, y_imp) + _bce(p_imp * p_clk, y_clk)


def _share_of_allowed(report: Report, case: str, name: str) -> float:
    result = next(r for r in report.results if r.case_id == f"ifa/{case}")
    return next(c.share_of_allowed for c in result.comparisons if c.name == name)


def test_a_threshold_softplus_fails_the_threshold_case_by_orders_of_magnitude() -> None:
    report = _run("ifa", _esmm_bug(_per_candidate_threshold))
    failing = _failing(report)
    assert "softplus_threshold" in failing and "small_softplus" not in failing
    assert {"loss", "per_candidate_loss"} <= set(failing["softplus_threshold"])
    assert _share_of_allowed(report, "softplus_threshold", "per_candidate_loss") > 100


def test_a_probability_space_bce_fails_the_saturated_case_at_float64() -> None:
    report = _run("ifa", _esmm_bug(_per_candidate_probability_space))
    failing = _failing(report)
    assert "saturated_logits" in failing and "small_softplus" not in failing
    assert {"loss", "per_candidate_loss"} <= set(failing["saturated_logits"])
    assert _share_of_allowed(report, "saturated_logits", "loss") > 10


def test_the_esmm_controls_reproduce_the_reference_formula_when_fixed() -> None:
    """Guards the two controls: with the threshold raised out of reach, the same code passes."""
    def exact_softplus_per_candidate(a: Array, c: Array, y_imp: Array, y_clk: Array) -> Array:
        terms = np.stack([-a, -c, -a - c])
        top = terms.max(axis=0)
        lse = top + np.log(np.exp(terms - top).sum(axis=0))
        sp = lambda x: np.logaddexp(0, x)  # noqa: E731
        return (sp(a) - y_imp * a) + (sp(-a) + sp(-c) - (1 - y_clk) * lse)

    assert _run("ifa", _esmm_bug(exact_softplus_per_candidate)).ok


# --- item 7: a swapped gate fails tiny_hand through the gate's gradients ---------------------------


def _see_et_al_gate(inputs: Tensors, params: Tensors, config: dict[str, Any], upstream: Tensors) -> dict[str, Any]:
    """A port with See et al.'s convention (the gate weighs the generator), forward and backward:
    y = s(a) y_gen + (1 - s(a)) y_poi is the reference at (-gate_w, -gate_b), with the gate's
    gradients negated back."""
    flipped = {**params, "gate_w": -params["gate_w"], "gate_b": -params["gate_b"]}
    returned = dict(REFERENCE["pointer_generator"](inputs, flipped, config, upstream))
    return returned | {"d_gate_w": -returned["d_gate_w"], "d_gate_b": -returned["d_gate_b"],
                       "P_poi": 1 - returned["P_poi"]}


def test_a_swapped_gate_fails_tiny_hand_on_the_gate_gradients() -> None:
    failing = _failing(_run("pointer_generator", _see_et_al_gate))
    assert set(failing["tiny_hand"]) == {"d_gate_w", "d_gate_b"}
    assert "y" in failing["small"]
    assert "one_category" not in failing


# --- item 8: integer cases -------------------------------------------------------------------------


def test_a_serving_path_without_the_pointer_fails() -> None:
    def generator_only(inputs: Tensors, config: dict[str, Any], returned: dict[str, Any]) -> dict[str, Any]:
        return {"y": returned["y_gen"]}

    assert _failing(_run("pointer_generator_serving", _patched("pointer_generator_serving", generator_only))) == {
        "no_label": ["y"]}


def test_history_keeping_first_occurrences_or_oldest_categories_fails() -> None:
    def first_occurrence(inputs: Tensors, config: dict[str, Any], returned: dict[str, Any]) -> dict[str, Any]:
        history = np.full_like(returned["history"], config["pad_id"])
        mask = np.zeros_like(returned["history_mask"])
        for row in range(history.shape[0]):
            merged = np.concatenate([inputs["long_categories"][row][inputs["long_mask"][row]],
                                     inputs["short_categories"][row][inputs["short_mask"][row]]])
            kept = list(dict.fromkeys(merged.tolist()))[: config["max_history"]]  # first seen, oldest P
            history[row, : len(kept)] = kept
            mask[row, : len(kept)] = True
        return {"history": history, "history_mask": mask}

    failing = _failing(_run("category_history", _patched("category_history", first_occurrence)))
    assert "history" in failing["dedup_order_truncation"]


def test_subsequences_truncated_to_the_oldest_fail() -> None:
    def oldest(inputs: Tensors, config: dict[str, Any], returned: dict[str, Any]) -> dict[str, Any]:
        out = np.full_like(returned["subsequence"], config["pad_id"])
        for row in range(out.shape[0]):
            for slot, category in enumerate(inputs["categories"][row]):
                chosen = inputs["items"][row][inputs["mask"][row] & (inputs["item_categories"][row] == category)]
                kept = chosen[: config["max_length"]]
                out[row, slot, : kept.size] = kept
        return {"subsequence": out}

    failing = _failing(_run("category_subsequence", _patched("category_subsequence", oldest)))
    assert failing == {"hand_truncation": ["subsequence"], "random": ["subsequence"]}


def test_top_k_ties_to_the_higher_id_fail() -> None:
    def higher_id_first(inputs: Tensors, config: dict[str, Any], returned: dict[str, Any]) -> dict[str, Any]:
        y = inputs["y"][:, ::-1]
        top = y.shape[1] - 1 - np.argsort(-y, axis=1, kind="stable")[:, : config["k"]]
        return {"top_categories": top.astype(np.int64)}

    report = _run("top_k_categories", _patched("top_k_categories", higher_id_first))
    assert _failing(report) == {"ties": ["top_categories"]}
    result = report.results[0]
    assert next(c for c in result.comparisons if c.name == "top_categories").mismatched >= 5


def test_a_cascade_merge_with_ties_to_the_higher_id_fails() -> None:
    def higher_id_first(inputs: Tensors, config: dict[str, Any], returned: dict[str, Any]) -> dict[str, Any]:
        ids, scores, routes = (returned[k].copy() for k in ("ids", "scores", "routes"))
        for row in range(ids.shape[0]):
            order = np.lexsort((-ids[row], -scores[row]))
            ids[row], scores[row], routes[row] = ids[row, order], scores[row, order], routes[row, order]
        return {"ids": ids, "scores": scores, "routes": routes}

    failing = _failing(_run("cascade_exact", _patched("cascade_exact", higher_id_first)))
    assert set(failing) == {"worked_example", "small_category_and_ties"}
    assert all("ids" in names for names in failing.values())


def test_any_hit_under_the_hit_rate_label_and_ties_as_losses_fail_the_metrics() -> None:
    def any_hit(inputs: Tensors, config: dict[str, Any], returned: dict[str, Any]) -> dict[str, Any]:
        return {"hit_rate_at_n": returned["hr_at_n"]}

    assert _failing(_run("top_n_metrics", _patched("top_n_metrics", any_hit))) == {
        "hand_example": ["hit_rate_at_n"], "edge_cases": ["hit_rate_at_n"]}

    def ties_lose(inputs: Tensors, config: dict[str, Any], returned: dict[str, Any]) -> dict[str, Any]:
        scores, labels = inputs["scores"][inputs["mask"]], inputs["labels"][inputs["mask"]]
        pos, neg = scores[labels == 1], scores[labels == 0]
        value = (pos[:, None] > neg[None, :]).mean()
        return {"auc": np.asarray(value, dtype=scores.dtype)}

    assert _failing(_run("auc", _patched("auc", ties_lose))) == {
        "hand_example": ["auc"], "masked_ties": ["auc"]}


# --- item 8: ReLU at exactly 0 -----------------------------------------------------------------------


def _relu_prime_one_at_zero(component: str, biases: tuple[str, ...]) -> AdapterFn:
    """A port with relu'(0) = 1: on these cases it is the reference with the hidden biases raised
    by one ulp, which turns every exact-0 pre-activation positive and moves the forward values by
    round-off only."""
    def run(inputs: Tensors, params: Tensors, config: dict[str, Any], upstream: Tensors) -> dict[str, Any]:
        nudged = {k: np.nextafter(v, np.inf) if k in biases else v for k, v in params.items()}
        return dict(REFERENCE[component](inputs, nudged, config, upstream))

    return run


@pytest.mark.parametrize(
    ("component", "biases"),
    [("user_guided_attention", ("b1",)), ("interest_refinement", ("bd1", "ba"))],
)
def test_relu_prime_one_at_zero_fails_only_the_relu_at_zero_case(component: str, biases: tuple[str, ...]) -> None:
    failing = _failing(_run(component, _relu_prime_one_at_zero(component, biases)))
    assert set(failing) == {"relu_at_zero"}
    assert all(name.startswith("d_") for name in failing["relu_at_zero"])
