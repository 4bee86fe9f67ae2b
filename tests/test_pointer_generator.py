"""PGIN's pointer-generator gating (refimpl.nn.pointer_generator): y is a distribution, the pointer's
mass lies on the history, forced gates give exactly one side, gradients match finite differences,
and the goldens catch a dropping scatter and a swapped gate through the conformance runner."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refimpl.nn.pointer_generator as pg
from refimpl.cases.pointer_generator import COMPONENTS, pointer_generator_reference
from refimpl.cases.pointer_generator import TRAINING_CASES as CASES
from refimpl.conformance import reference_adapter, run_conformance
from refimpl.gradcheck import assert_gradients_match, check_component
from refimpl.nn.attention import PARAM_NAMES, AttentionParams
from refimpl.nn.pointer_generator import (
    PointerGeneratorConfig,
    PointerGeneratorOutput,
    PointerGeneratorParams,
    pointer_generator_backward,
    pointer_generator_forward,
)

COMPONENT = ["pointer_generator"]
SCATTER = pg.scatter_to_categories


@dataclass(frozen=True)
class Draw:
    """One random call of the component."""

    params: PointerGeneratorParams
    args: tuple[Any, Any, Any, Any, Any, Any, Any]  # query, history_emb, history, history_mask, logits, hidden, label
    cfg: PointerGeneratorConfig

    def run(self) -> PointerGeneratorOutput:
        return pointer_generator_forward(self.params, *self.args, self.cfg)[0]


def make_draw(
    seed: int, b: int, p: int, d: int, c: int, g: int, heads: int, *, duplicates: bool,
    gate: str = "learned", gate_bias: float = 0.0, dtype: Any = np.float64, empty_rows: int = 0,
) -> Draw:
    rng = np.random.Generator(np.random.PCG64(seed))
    attention = AttentionParams(
        **{n: rng.standard_normal((d, d) if n.startswith("W") else d).astype(dtype) for n in PARAM_NAMES}
    )
    params = PointerGeneratorParams(
        attention, rng.standard_normal(d + g).astype(dtype), np.array([gate_bias], dtype=dtype)
    )
    high = min(c, 2) if duplicates else c
    history = rng.integers(0, high, size=(b, p))
    mask = rng.random((b, p)) < 0.7
    mask[:, 0] = True
    mask[:empty_rows] = False
    history = np.where(mask, history, -1)  # padded ids are ignored, whatever they are
    args = (
        rng.standard_normal((b, d)).astype(dtype),
        rng.standard_normal((b, p, d)).astype(dtype),
        history,
        mask,
        (3 * rng.standard_normal((b, c))).astype(dtype),
        rng.standard_normal((b, g)).astype(dtype),
        rng.integers(0, c, size=b),
    )
    return Draw(params, args, PointerGeneratorConfig(heads, gate))


@st.composite
def draws(draw: st.DrawFn) -> Draw:
    heads = draw(st.sampled_from([1, 2]))
    return make_draw(
        draw(st.integers(0, 2**32 - 1)),
        b=draw(st.integers(1, 4)),
        p=draw(st.integers(1, 6)),
        d=heads * draw(st.integers(1, 3)),
        c=draw(st.integers(1, 9)),
        g=draw(st.integers(1, 3)),
        heads=heads,
        duplicates=draw(st.booleans()),
        gate=draw(st.sampled_from(pg.GATE_MODES)),
        gate_bias=draw(st.sampled_from([0.0, 3.0, -40.0, 40.0])),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        empty_rows=draw(st.integers(0, 1)),
    )


# --- invariants, each a checker that a broken variant must trip ------------------------------


def distribution_problems(out: PointerGeneratorOutput, history: Any, mask: Any) -> list[str]:
    """y non-negative and summing to 1; y_poi's mass only on the row's valid history categories,
    summing to 1 on a row with a history and to 0 on an empty one."""
    tol = 1e-5 if out.y.dtype == np.float32 else 1e-12
    problems = []
    if (out.y < 0).any():
        problems.append("y has negative entries")
    if not np.allclose(out.y.sum(axis=1), 1, rtol=0, atol=tol):
        problems.append(f"y rows sum to {out.y.sum(axis=1)}")
    for row in range(out.y.shape[0]):
        outside = np.ones(out.y.shape[1], dtype=bool)
        outside[history[row, mask[row]]] = False
        if (out.y_poi[row, outside] != 0).any():
            problems.append(f"row {row}: pointer mass outside the history")
        if not np.isclose(out.y_poi[row].sum(), float(mask[row].any()), rtol=0, atol=tol):
            problems.append(f"row {row}: pointer mass {out.y_poi[row].sum()}")
    return problems


@given(draws())
def test_y_is_a_distribution_and_the_pointer_stays_on_the_history(d: Draw) -> None:
    out = d.run()
    assert out.y.dtype == d.args[0].dtype
    assert distribution_problems(out, d.args[2], d.args[3]) == []


def _fancy_index_scatter(weights: Any, history: Any, mask: Any, num_categories: int) -> Any:
    """Broken: `y[rows, ids] += w` keeps one of the duplicates."""
    y_poi = np.zeros((weights.shape[0], num_categories), dtype=weights.dtype)
    rows = np.broadcast_to(np.arange(weights.shape[0])[:, None], history.shape)
    y_poi[rows[mask], history[mask]] += weights[mask]
    return y_poi


def _shifted_scatter(weights: Any, history: Any, mask: Any, num_categories: int) -> Any:
    """Broken: scatters onto the NEXT category id (an off-by-one in the ids)."""
    return SCATTER(weights, (history + 1) % num_categories, mask, num_categories)


@pytest.mark.parametrize("broken", [_fancy_index_scatter, _shifted_scatter])
def test_negative_control_broken_scatters_break_the_invariant(
    broken: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make_draw(3, b=3, p=6, d=2, c=5, g=1, heads=1, duplicates=True)
    assert distribution_problems(d.run(), d.args[2], d.args[3]) == []
    monkeypatch.setattr(pg, "scatter_to_categories", broken)
    assert distribution_problems(d.run(), d.args[2], d.args[3]) != []


def forced_gate_problems(d: Draw) -> list[str]:
    """Gate forced to 1 gives exactly y_poi and forced to 0 exactly y_gen, by the config and by a
    saturated learned gate (rows with a history)."""
    problems = []
    rows = d.args[3].any(axis=1)
    for gate, bias, side in (("pointer", 0.0, "y_poi"), ("learned", 1e3, "y_poi"),
                             ("generator", 0.0, "y_gen"), ("learned", -1e3, "y_gen")):
        params = PointerGeneratorParams(
            d.params.attention, d.params.gate_w, np.full(1, bias, dtype=d.params.gate_b.dtype)
        )
        out = pointer_generator_forward(params, *d.args, PointerGeneratorConfig(d.cfg.num_heads, gate))[0]
        if not np.array_equal(out.y[rows], getattr(out, side)[rows]):
            problems.append(f"gate {gate} (bias {bias}): y differs from {side}")
    return problems


@given(draws())
def test_forced_gates_give_exactly_one_side(d: Draw) -> None:
    assert forced_gate_problems(d) == []


def _swapped(gate: Any, y_poi: Any, y_gen: Any) -> Any:
    """Broken: the gate weighs the generator (See et al.'s p_gen convention)."""
    return gate[:, None] * y_gen + (1 - gate[:, None]) * y_poi


def test_negative_control_swapped_gate_breaks_forced_gates(monkeypatch: pytest.MonkeyPatch) -> None:
    d = make_draw(5, b=3, p=4, d=2, c=6, g=2, heads=1, duplicates=False)
    assert forced_gate_problems(d) == []
    monkeypatch.setattr(pg, "mix_distributions", _swapped)
    assert forced_gate_problems(d) != []


def test_empty_history_row_uses_the_generator_only() -> None:
    d = make_draw(7, b=3, p=4, d=2, c=5, g=1, heads=1, duplicates=False, gate="pointer", empty_rows=1)
    out = d.run()
    assert out.P_poi[0] == 0 and np.array_equal(out.y[0], out.y_gen[0])
    assert np.all(out.P_poi[1:] == 1)


# --- the worked example, gradients, dtypes, errors ------------------------------------------


def test_tiny_hand_case_matches_the_spec_numbers() -> None:
    case = next(c for c in CASES if c.name == "tiny_hand")
    t = case.draw()
    result = pointer_generator_reference(t.inputs, t.params, case.config, t.upstream)
    np.testing.assert_allclose(result.intermediates["pointer_weights"], [[0.25, 0.25, 0.5]], atol=1e-15)
    np.testing.assert_allclose(result.intermediates["y_poi"], [[0.25, 0, 0.75, 0]], atol=1e-15)
    np.testing.assert_allclose(result.outputs["y"], [[0.25, 0.125, 0.5, 0.125]], atol=1e-15)
    np.testing.assert_allclose(result.outputs["loss"], -np.log(0.125 + 1e-12), rtol=1e-15)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_gradients_match_finite_differences(case: Any) -> None:
    fn = COMPONENTS[case.component]
    assert_gradients_match(check_component(fn, case.draw(), case.config, max_full_elements=24))



def test_negative_control_gradient_check_catches_a_dropped_gate_bias_gradient() -> None:
    """A backward that drops the gate bias's gradient is caught by the same check."""
    case = next(c for c in CASES if c.name == "small")

    def drops_gate_bias(inputs: Any, params: Any, config: Any, upstream: Any) -> Any:
        result = COMPONENTS[case.component](inputs, params, config, upstream)
        return replace(result, grads={**result.grads, "d_gate_b": np.zeros_like(result.grads["d_gate_b"])})

    problems = check_component(drops_gate_bias, case.draw(), case.config, max_full_elements=24)
    assert any("gate_b" in p for p in problems)
    with pytest.raises(AssertionError):
        assert_gradients_match(problems)

def test_float32_in_float32_out_and_inputs_untouched() -> None:
    d = make_draw(11, b=2, p=4, d=4, c=5, g=2, heads=2, duplicates=True, dtype=np.float32)
    before = [np.copy(a) for a in d.args]
    out, cache = pointer_generator_forward(d.params, *d.args, d.cfg)
    grads = pointer_generator_backward(cache, np.ones_like(out.y), np.array(0.5, dtype=np.float32))
    assert out.y.dtype == np.float32 and out.loss is not None and out.loss.dtype == np.float32
    assert grads.query.dtype == np.float32 and grads.params.gate_w.dtype == np.float32
    for a, b in zip(before, d.args, strict=True):
        np.testing.assert_array_equal(a, b)


def test_serving_without_labels_has_no_loss() -> None:
    d = make_draw(13, b=2, p=3, d=2, c=4, g=1, heads=1, duplicates=False)
    out, cache = pointer_generator_forward(d.params, *d.args[:6], None, d.cfg)
    assert out.loss is None and out.row_loss is None
    pointer_generator_backward(cache, np.ones_like(out.y), None)
    with pytest.raises(ValueError, match="d_loss"):
        pointer_generator_backward(cache, None, 1.0)
    with pytest.raises(ValueError, match="d_y"):
        pointer_generator_backward(cache, np.ones((2, 5)), None)
    with pytest.raises(TypeError, match="d_y"):
        pointer_generator_backward(cache, np.ones(out.y.shape, dtype=np.float32), None)
    labelled = pointer_generator_forward(d.params, *d.args, d.cfg)[1]
    with pytest.raises(ValueError, match="d_loss"):
        pointer_generator_backward(labelled, None, np.ones(2))


@pytest.mark.parametrize(
    ("index", "value", "error", "match"),
    [
        (2, np.array([[0, 9, 1], [1, 1, 1]]), ValueError, "history: id 9"),
        (6, np.array([0, 4]), ValueError, "label: id 4"),
        (6, np.array([0.0, 1.0]), TypeError, "label"),
        (1, np.zeros((2, 3, 3)), ValueError, "history_emb"),
        (4, np.zeros((2, 4), dtype=np.float32), TypeError, "generator_logits"),
        (3, np.ones((2, 3), dtype=np.int64), TypeError, "history_mask"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(index: int, value: Any, error: type, match: str) -> None:
    d = make_draw(17, b=2, p=3, d=2, c=4, g=1, heads=1, duplicates=False)
    args = list(d.args)
    args[3] = np.ones((2, 3), dtype=bool)
    args[2] = np.zeros((2, 3), dtype=np.int64)
    args[index] = value
    query, history_emb, history, history_mask, logits, hidden, label = args
    with pytest.raises(error, match=match):
        pointer_generator_forward(d.params, query, history_emb, history, history_mask, logits, hidden, label, d.cfg)


def test_bad_gate_params_and_mode_are_refused() -> None:
    d = make_draw(19, b=2, p=3, d=2, c=4, g=1, heads=1, duplicates=False)
    short_w = PointerGeneratorParams(d.params.attention, d.params.gate_w[:2], d.params.gate_b)
    with pytest.raises(ValueError, match="gate_w"):
        pointer_generator_forward(short_w, *d.args, d.cfg)
    with pytest.raises(ValueError, match="cfg.gate"):
        pointer_generator_forward(d.params, *d.args, PointerGeneratorConfig(1, "p_gen"))


# --- negative controls through the conformance runner on the committed goldens ---------------


def test_reference_passes_its_goldens() -> None:
    report = run_conformance(reference_adapter(), components=COMPONENT)
    assert report.ok and len(report.results) == len(CASES)


def test_negative_control_fancy_index_scatter_fails_the_duplicate_goldens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pg, "scatter_to_categories", _fancy_index_scatter)
    report = run_conformance(reference_adapter(), components=COMPONENT)
    failing = {r.case_id.split("/")[1]: r for r in report.results if r.status == "fail"}
    assert {"duplicates", "tiny_hand"} <= set(failing)
    assert all(r.first_divergent_intermediate == "y_poi" for r in failing.values())
    assert "y" in failing["duplicates"].failing_names
    passing = {r.case_id.split("/")[1] for r in report.results if r.status == "pass"}
    assert {"small", "label_absent"} <= passing  # deduplicated histories cannot tell


def test_negative_control_swapped_gate_fails_naming_y(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg, "mix_distributions", _swapped)
    report = run_conformance(reference_adapter(), components=COMPONENT)
    failing = {r.case_id.split("/")[1]: r for r in report.results if r.status == "fail"}
    assert {"gate_near_one", "gate_near_zero", "gate_pointer", "gate_generator"} <= set(failing)
    for result in failing.values():
        assert "y" in result.failing_names and "P_poi" not in result.failing_names
        assert result.first_divergent_intermediate == "row_loss"
    passing = {r.case_id.split("/")[1] for r in report.results if r.status == "pass"}
    assert passing == {"tiny_hand", "one_category"}  # forward only: a gate of 0.5, and y = [1], are blind
