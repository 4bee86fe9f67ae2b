"""IFA's degree-normalized linear attention: the linear form equals the explicit definition, rows are
convex combinations of valid values, permutation symmetry, finite-difference gradients, goldens.

Every property has a negative control: a deliberately broken variant that the same check rejects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refimpl.cases import linear_attention as cases
from refimpl.cases._base import CaseTensors, Result, Tensors
from refimpl.conformance import reference_adapter, run_conformance
from refimpl.gradcheck import assert_gradients_match, check_component
from refimpl.nn import linear_attention_fast
from refimpl.nn.attention import PARAM_NAMES, AttentionParams
from refimpl.nn.linear_attention import (
    PHI_CHOICES,
    LinearAttentionConfig,
    Projection,
    attend_explicit,
    attend_linear,
    feature_map,
    linear_attention_backward,
    linear_attention_explicit_forward,
    linear_attention_forward,
    linear_self_attention_backward,
    linear_self_attention_forward,
    log1p,
    one_minus_exp_neg,
    project,
    project_output,
)
from refimpl.nn.linear_attention_fast import linear_attention_fast_backward, linear_attention_fast_forward

Forward = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Example:
    inputs: Tensors
    params: Tensors
    config: dict[str, Any]
    upstream: Tensors

    @property
    def attention_params(self) -> AttentionParams:
        return AttentionParams(**self.params)

    @property
    def cfg(self) -> LinearAttentionConfig:
        return cases.linear_attention_config(self.config)

    def args(self) -> tuple[Any, ...]:
        i = self.inputs
        return (self.attention_params, i["q_in"], i["kv_in"], i["key_mask"], self.cfg, i["query_mask"])


@st.composite
def examples(draw: st.DrawFn, phis: tuple[str, ...] = PHI_CHOICES) -> Example:
    b = draw(st.integers(1, 3))
    q = draw(st.integers(1, 5))
    length = draw(st.integers(1, 6))
    heads = draw(st.integers(1, 3))
    d = heads * draw(st.integers(1, 3))
    phi = draw(st.sampled_from(phis))
    scale = draw(st.sampled_from([0.3, 1.0, 3.0]))
    key_mask = draw(hnp.arrays(np.bool_, (b, length)))
    query_mask = draw(hnp.arrays(np.bool_, (b, q)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return Example(
        inputs={
            "q_in": rng.standard_normal((b, q, d)),
            "kv_in": rng.standard_normal((b, length, d)),
            "key_mask": key_mask,
            "query_mask": query_mask,
        },
        params=cases.random_params(rng, d, scale),
        config={"num_heads": heads, "phi": phi},
        upstream={"d_out": rng.standard_normal((b, q, d))},
    )


def fixed_example(phi: str = "softplus") -> Example:
    """Softplus, a masked key in every row, masked value rows pushed far out."""
    rng = np.random.default_rng(7)
    kv_in = rng.standard_normal((2, 5, 4))
    key_mask = np.array([[True, False, True, True, False], [False, True, True, False, True]])
    kv_in[~key_mask] *= 50.0
    return Example(
        inputs={
            "q_in": rng.standard_normal((2, 3, 4)),
            "kv_in": kv_in,
            "key_mask": key_mask,
            "query_mask": np.ones((2, 3), dtype=bool),
        },
        params=cases.random_params(rng, 4),
        config={"num_heads": 2, "phi": phi},
        upstream={"d_out": rng.standard_normal((2, 3, 4))},
    )


# --- broken variants for the negative controls -------------------------------------------------


def mask_before_phi(proj: Projection) -> Projection:
    """The classic bug: zero the masked keys BEFORE phi (phi(0) = log 2 for softplus)."""
    k = _split(proj.kv_in @ proj.params.Wk + proj.params.bk, proj.heads)
    k = np.where(proj.key_mask[:, None, :, None], k, 0)
    return replace(proj, phi_k=feature_map(proj.phi, k))


def run_linear(example: Example, transform: Callable[[Projection], Projection] = lambda p: p) -> Result:
    """The linear form's adapter, optionally with a broken projection."""
    proj, eps = project(*example.args())
    out, cache = attend_linear(transform(proj), eps)
    grads, d_q_in, d_kv_in = linear_attention_backward(cache, example.upstream["d_out"])
    return Result(
        outputs={"out": out},
        grads={"d_q_in": d_q_in, "d_kv_in": d_kv_in, **{f"d_{n}": getattr(grads, n) for n in PARAM_NAMES}},
        intermediates={"phi_q": cache.proj.phi_q, "phi_k": cache.proj.phi_k, "degree": cache.degree},
    )


def run_unnormalized(example: Example) -> Result:
    """The other classic bug: forget the degree normalization D^-1."""
    proj, eps = project(*example.args())
    _, cache = attend_linear(proj, eps)
    head_width = proj.v.shape[-1]
    denominator = np.repeat(cache.denominator.transpose(0, 2, 1), head_width, axis=-1)
    return Result(outputs={"out": project_output(proj, cache.context * denominator)}, grads={})


def run_explicit(example: Example) -> Result:
    return cases.linear_attention_explicit_reference(
        example.inputs, example.params, example.config, example.upstream
    )


def form_mismatches(actual: Result, expected: Result) -> list[str]:
    """Tensors present in both results that differ beyond float64 round-off (relative to the
    tensor's own scale, since the two forms sum in different orders)."""
    a, e = actual.flat(), expected.flat()
    problems = []
    for name in sorted(set(a) & set(e)):
        tolerance = 1e-10 * max(1.0, float(np.max(np.abs(e[name]), initial=0.0)))
        if a[name].shape != e[name].shape or not np.allclose(a[name], e[name], rtol=1e-9, atol=tolerance):
            problems.append(name)
    return problems


# --- linear form == explicit form --------------------------------------------------------------


@given(examples())
def test_linear_form_equals_explicit_form(example: Example) -> None:
    assert form_mismatches(run_linear(example), run_explicit(example)) == []


def test_equality_check_catches_masking_keys_before_phi() -> None:
    example = fixed_example()
    assert form_mismatches(run_linear(example), run_explicit(example)) == []
    assert "out" in form_mismatches(run_linear(example, mask_before_phi), run_explicit(example))


def test_equality_check_catches_missing_degree_normalization() -> None:
    example = fixed_example()
    assert form_mismatches(run_unnormalized(example), run_explicit(example)) == ["out"]


# --- the tuned path == the plain definition ---------------------------------------------------


def run_fast(example: Example) -> Result:
    out, cache = linear_attention_fast_forward(*example.args())
    grads, d_q_in, d_kv_in = linear_attention_fast_backward(cache, example.upstream["d_out"])
    return Result(
        outputs={"out": out},
        grads={"d_q_in": d_q_in, "d_kv_in": d_kv_in, **{f"d_{n}": getattr(grads, n) for n in PARAM_NAMES}},
        intermediates={"phi_q": cache.proj.phi_q, "phi_k": cache.proj.phi_k, "degree": cache.degree},
    )


@given(examples())
def test_fast_path_equals_plain_definition(example: Example) -> None:
    fast, plain = run_fast(example), run_linear(example)
    assert set(fast.flat()) == set(plain.flat())
    assert form_mismatches(fast, plain) == []


def test_fast_path_check_catches_a_broken_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:

    example = fixed_example()
    assert form_mismatches(run_fast(example), run_linear(example)) == []
    monkeypatch.setattr(linear_attention_fast, "_feature_map_derivative", lambda name, phi: np.ones_like(phi))
    assert "d_Wq" in form_mismatches(run_fast(example), run_linear(example))


# --- rows are convex combinations of the valid value rows --------------------------------------


def convexity_problems(
    context: np.ndarray, weights: np.ndarray, proj: Projection, denominator: np.ndarray, eps: float
) -> list[str]:
    """context (B, H, Q, D_h) must be weights @ v with weights >= 0, zero on masked keys and on
    invalid rows (masked queries, batch elements without a valid key), and valid rows summing to 1
    up to eps: sum = degree / (degree + eps), so sum * denominator = denominator - eps. Each
    coordinate then lies in the range of the valid value rows."""
    problems = []
    valid_key = proj.key_mask[:, None, None, :]
    if (weights < 0).any():
        problems.append("negative weight")
    if (np.where(valid_key, 0, weights) != 0).any():
        problems.append("weight on a masked key")
    valid_row = np.broadcast_to(proj.row_valid[:, None, :], denominator.shape)
    if (weights[~valid_row] != 0).any():
        problems.append("weight on an invalid row")
    sums = weights.sum(axis=-1)[valid_row]
    scaled = sums * denominator[valid_row]
    if (sums > 1 + 1e-12).any() or not np.allclose(scaled, denominator[valid_row] - eps, rtol=1e-12, atol=1e-15):
        problems.append("weights do not sum to 1 up to eps")
    if not np.allclose(context, weights @ proj.v, rtol=1e-9, atol=1e-12):
        problems.append("context is not weights @ v")
    valid_value = proj.key_mask[:, None, :, None]
    high = np.max(np.where(valid_value, proj.v, -np.inf), axis=2, keepdims=True)
    low = np.min(np.where(valid_value, proj.v, np.inf), axis=2, keepdims=True)
    # the eps share of each row's weight goes to 0, not to a value row
    slack = (1 - weights.sum(axis=-1, keepdims=True)) * np.abs(proj.v).max(initial=0.0) + 1e-9
    outside = (context > high + slack) | (context < low - slack)
    if (proj.row_valid[:, None, :, None] & outside).any():
        problems.append("context outside the range of the valid values")
    return problems


def _split(context: np.ndarray, heads: int) -> np.ndarray:
    b, q, d = context.shape
    return context.reshape(b, q, heads, d // heads).transpose(0, 2, 1, 3)


def convexity_of(example: Example, transform: Callable[[Projection], Projection] = lambda p: p) -> list[str]:
    proj, eps = project(*example.args())
    proj = transform(proj)
    _, linear = attend_linear(proj, eps)
    _, explicit = attend_explicit(proj, eps)
    context = _split(linear.context, proj.heads)
    return convexity_problems(context, explicit.weights, proj, explicit.denominator, eps)


@given(examples(phis=("softplus", "elu+1")))
def test_rows_are_convex_combinations_of_valid_values(example: Example) -> None:
    assert convexity_of(example) == []


def test_convexity_check_catches_masking_before_phi_and_missing_normalization() -> None:
    example = fixed_example()
    assert convexity_of(example) == []
    assert "weight on a masked key" in convexity_of(example, mask_before_phi)
    proj, eps = project(*example.args())
    _, explicit = attend_explicit(proj, eps)
    unnormalized = explicit.weights * explicit.denominator[..., None]
    problems = convexity_problems(unnormalized @ proj.v, unnormalized, proj, explicit.denominator, eps)
    assert "weights do not sum to 1 up to eps" in problems


def test_convexity_check_catches_weights_at_masked_queries() -> None:
    """The explicit form before the masked-row rule: weights computed for every query row."""
    example = fixed_example()
    example.inputs["query_mask"][0, 1] = False
    assert convexity_of(example) == []
    proj, eps = project(*example.args())
    _, explicit = attend_explicit(proj, eps)
    every_row = proj.phi_q @ proj.phi_k.transpose(0, 1, 3, 2) / explicit.denominator[..., None]
    problems = convexity_problems(every_row @ proj.v, every_row, proj, explicit.denominator, eps)
    assert problems == ["weight on an invalid row"]


# --- permutation symmetry ----------------------------------------------------------------------


def symmetry_errors(forward: Forward, example: Example, seed: int) -> tuple[float, float]:
    """(change of out under a permutation of the sequence, deviation from equivariance under a
    permutation of the candidates)."""
    params, q_in, kv_in, key_mask, cfg, query_mask = example.args()
    rng = np.random.default_rng(seed)
    out = forward(params, q_in, kv_in, key_mask, cfg, query_mask)
    seq = rng.permutation(kv_in.shape[1])
    cand = rng.permutation(q_in.shape[1])
    out_seq = forward(params, q_in, kv_in[:, seq], key_mask[:, seq], cfg, query_mask)
    out_cand = forward(params, q_in[:, cand], kv_in, key_mask, cfg, query_mask[:, cand])
    return float(np.max(np.abs(out_seq - out))), float(np.max(np.abs(out_cand - out[:, cand])))


def linear_out(*args: Any) -> np.ndarray:
    return linear_attention_forward(*args)[0]


def positional(forward: Forward, axis: str) -> Forward:
    """A broken variant that lets position leak in (a ramp over keys or over queries)."""

    def run(params: AttentionParams, q_in: np.ndarray, kv_in: np.ndarray, *rest: Any) -> np.ndarray:
        if axis == "keys":
            kv_in = kv_in * np.linspace(0.5, 1.5, kv_in.shape[1])[None, :, None]
        else:
            q_in = q_in * np.linspace(0.5, 1.5, q_in.shape[1])[None, :, None]
        return forward(params, q_in, kv_in, *rest)

    return run


@given(examples(), st.integers(0, 1000))
def test_sequence_permutation_invariance_and_candidate_equivariance(example: Example, seed: int) -> None:
    seq_error, cand_error = symmetry_errors(linear_out, example, seed)
    assert seq_error < 1e-12 and cand_error < 1e-12


def test_symmetry_check_catches_positional_leaks() -> None:
    example = fixed_example()
    assert max(symmetry_errors(linear_out, example, 0)) < 1e-12
    assert symmetry_errors(positional(linear_out, "keys"), example, 0)[0] > 1e-6
    assert symmetry_errors(positional(linear_out, "queries"), example, 0)[1] > 1e-6


# --- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases.CASES, ids=lambda c: c.case_id)
def test_gradients_match_finite_differences(case: Any) -> None:
    problems = check_component(
        cases.COMPONENTS[case.component], case.draw(), case.config, max_full_elements=24, directions=2
    )
    assert_gradients_match(problems)


def test_gradient_check_catches_a_missing_denominator_term() -> None:
    """Backward without the d(denominator) path (key_sum zeroed in the cache) is rejected."""
    case = next(c for c in cases.CASES if c.case_id == "linear_attention/softplus_multihead")

    def broken(inputs: Tensors, params: Tensors, config: Any, upstream: Tensors) -> Result:
        example = Example(inputs, params, dict(config), upstream)
        out, cache = linear_attention_forward(*example.args())
        cache = replace(cache, key_sum=np.zeros_like(cache.key_sum))
        grads, d_q_in, d_kv_in = linear_attention_backward(cache, upstream["d_out"])
        named = {f"d_{n}": getattr(grads, n) for n in PARAM_NAMES}
        return Result(outputs={"out": out}, grads={"d_q_in": d_q_in, "d_kv_in": d_kv_in, **named})

    problems = check_component(broken, case.draw(), case.config, max_full_elements=24, directions=2)
    assert any(p.startswith(("q_in", "Wq", "bq")) for p in problems)


def test_self_attention_gradient_sums_both_paths() -> None:
    rng = np.random.default_rng(3)
    params = AttentionParams(**cases.random_params(rng, 4))
    x = rng.standard_normal((2, 3, 4))
    mask = np.array([[True, True, False], [True, False, True]])
    d_out = rng.standard_normal((2, 3, 4))
    cfg = LinearAttentionConfig(num_heads=2)

    def f(at: Tensors) -> float:
        return float(np.sum(d_out * linear_self_attention_forward(params, at["x"], mask, cfg)[0]))

    _, cache = linear_self_attention_forward(params, x, mask, cfg)
    _, d_x = linear_self_attention_backward(cache, d_out)
    from refimpl.gradcheck import check_gradients

    assert_gradients_match(check_gradients(f, {"x": x}, {"x": d_x}))


# --- goldens, worked example, conformance negative control -------------------------------------


def test_worked_example_numbers() -> None:
    case = next(c for c in cases.CASES if c.case_id == "linear_attention/hand_checkable")
    t = case.draw()
    result = cases.linear_attention_reference(t.inputs, t.params, case.config, t.upstream)
    eps = 1e-6
    np.testing.assert_allclose(result.intermediates["kv_summary"][0, 0], [[5.0, -1.0], [1.0, 1.0]])
    np.testing.assert_allclose(result.intermediates["key_sum"][0, 0], [3.0, 1.0])
    np.testing.assert_allclose(result.intermediates["degree"][0, 0], [3.0, 2.0])
    expected = [[5 / (3 + eps), -1 / (3 + eps)], [2 / (2 + eps), 2 / (2 + eps)]]
    np.testing.assert_allclose(result.outputs["out"][0], expected, rtol=1e-15)


def test_conformance_runner_rejects_masking_keys_before_phi() -> None:
    adapter = dict(reference_adapter())

    def broken(inputs: Tensors, params: Tensors, config: Any, upstream: Tensors) -> dict[str, Any]:
        return run_linear(Example(inputs, params, dict(config), upstream), mask_before_phi).flat()

    adapter["linear_attention"] = broken
    report = run_conformance(adapter, components=["linear_attention"])
    assert not report.ok
    by_case = {r.case_id: r for r in report.results}
    failed = by_case["linear_attention/softplus_multihead"]
    assert failed.status == "fail"
    assert "out" in failed.failing_names
    assert failed.first_divergent_intermediate == "phi_k"
    # relu maps a zeroed key to 0, so the bug is invisible there: the case passes.
    assert by_case["linear_attention/hand_checkable"].status == "pass"


# --- dtype and validation ----------------------------------------------------------------------


def test_float32_in_float32_out_and_close_to_float64() -> None:
    example = fixed_example()
    cast = {k: v.astype(np.float32) for k, v in example.params.items()}
    inputs32 = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in example.inputs.items()}
    example32 = Example(inputs32, cast, example.config, example.upstream)
    out32, cache32 = linear_attention_forward(*example32.args())
    grads32, d_q32, d_kv32 = linear_attention_backward(cache32, example.upstream["d_out"].astype(np.float32))
    assert out32.dtype == d_q32.dtype == d_kv32.dtype == grads32.Wq.dtype == np.float32
    out64, _ = linear_attention_forward(*example.args())
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-4)
    out32_explicit, _ = linear_attention_explicit_forward(*example32.args())
    assert out32_explicit.dtype == np.float32


@pytest.mark.parametrize(
    ("change", "error", "needle"),
    [
        ({"phi": "gelu"}, ValueError, "cfg.phi"),
        ({"eps": 0.0}, ValueError, "cfg.eps"),
        ({"num_heads": 3}, ValueError, "cfg.num_heads"),
    ],
)
def test_bad_config_is_refused(change: dict[str, Any], error: type[Exception], needle: str) -> None:
    example = fixed_example()
    args = list(example.args())
    args[4] = replace(example.cfg, **change)
    with pytest.raises(error, match=needle):
        linear_attention_forward(*args)


def test_bad_shapes_and_dtypes_are_refused() -> None:
    example = fixed_example()
    params, q_in, kv_in, key_mask, cfg, query_mask = example.args()
    with pytest.raises(ValueError, match="kv_in"):
        linear_attention_forward(params, q_in, kv_in[:, :, :3], key_mask, cfg, query_mask)
    with pytest.raises(ValueError, match="key_mask"):
        linear_attention_forward(params, q_in, kv_in, key_mask[:, :2], cfg, query_mask)
    with pytest.raises(TypeError, match="kv_in"):
        linear_attention_forward(params, q_in, kv_in.astype(np.float32), key_mask, cfg, query_mask)
    with pytest.raises(TypeError, match="key_mask"):
        linear_attention_forward(params, q_in, kv_in, key_mask.astype(int), cfg, query_mask)


def test_edge_cases_are_finite_and_zero_where_specified() -> None:
    for case in cases.CASES:
        t: CaseTensors = case.draw()
        result = cases.COMPONENTS[case.component](t.inputs, t.params, case.config, t.upstream)
        for name, value in result.flat().items():
            assert np.isfinite(value).all(), f"{case.case_id}: {name} is not finite"
        no_key = ~t.inputs["key_mask"].any(axis=1)
        assert (result.outputs["out"][no_key] == 0).all()
        assert (result.outputs["out"][~t.inputs["query_mask"]] == 0).all()
    zero = next(c for c in cases.CASES if c.case_id == "linear_attention/relu_zero_degree")
    t = zero.draw()
    result = cases.linear_attention_reference(t.inputs, t.params, zero.config, t.upstream)
    assert (result.intermediates["degree"][0, :, :2] == 0).all()


def test_negative_control_self_attention_gradient_check_catches_a_half_gradient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken backward whose d_x is off by a factor 1/2 (e.g. averaging the query and key/value
    paths instead of summing them): the same finite-difference check fails."""
    real = linear_self_attention_backward

    def halves_d_x(cache: Any, d_out: Any) -> Any:
        grads, d_x = real(cache, d_out)
        return grads, 0.5 * d_x

    monkeypatch.setitem(globals(), "linear_self_attention_backward", halves_d_x)
    with pytest.raises(AssertionError):
        test_self_attention_gradient_sums_both_paths()


def test_negative_control_edge_case_check_catches_outputs_at_masked_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken component that computes every query row, masked ones included."""
    for name, real in list(cases.COMPONENTS.items()):

        def ignores_query_mask(inputs: Tensors, params: Tensors, config: Any, upstream: Tensors,
                               real: Any = real) -> Any:
            return real({**inputs, "query_mask": np.ones_like(inputs["query_mask"])}, params, config, upstream)

        monkeypatch.setitem(cases.COMPONENTS, name, ignores_query_mask)
    with pytest.raises(AssertionError):
        test_edge_cases_are_finite_and_zero_where_specified()


# --- float32 log1p and expm1 from numpy's vectorized log and exp --------------------------------


def ulp_error(fast: Callable[[Any], Any], exact: Callable[[Any], Any], values: Any) -> float:
    """Greatest error of a float32 function against its float64 value, in float32 ulps (relative)."""
    x = values.astype(np.float32)
    reference = exact(x.astype(np.float64))
    scale = np.maximum(np.abs(reference), np.finfo(np.float32).tiny)
    return float(np.max(np.abs(fast(x.copy()).astype(np.float64) - reference) / scale) / np.finfo(np.float32).eps)


FLOAT32_SPANS = st.sampled_from([(-45.0, 0.0), (-8.0, 0.0), (-1.0, 0.3), (0.0, 2.0)])  # log10 ranges


@given(span=FLOAT32_SPANS, seed=st.integers(0, 2**32 - 1))
def test_float32_log1p_and_expm1_stay_within_three_ulps(span: tuple[float, float], seed: int) -> None:
    values = 10.0 ** np.random.default_rng(seed).uniform(*span, size=2000)
    values[:2] = 0.0, 1e-45
    small = np.minimum(values, 1.0)  # log1p is used on e^-|x| in [0, 1]
    assert ulp_error(log1p, np.log1p, small) < 3
    assert ulp_error(one_minus_exp_neg, lambda p: -np.expm1(-p), values) < 3


def test_negative_control_ulp_check_catches_the_cancelling_formulas() -> None:
    values = 10.0 ** np.random.default_rng(0).uniform(-8, 0, size=2000)
    assert ulp_error(lambda t: np.log(1 + t), np.log1p, values) > 100
    assert ulp_error(lambda p: 1 - np.exp(-p), lambda p: -np.expm1(-p), values) > 100
