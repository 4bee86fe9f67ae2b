"""sampled_softmax: gradients, bounds, accidental hits, the negatives_only variant, validation.

Every property has a negative control: a deliberately broken variant the same check catches.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl.cases import sampled_softmax as cases
from refimpl.cases._base import CaseTensors
from refimpl.golden.alternatives import logsumexp_softmax
from refimpl.gradcheck import assert_gradients_match, check_component
from refimpl.nn import sampled_softmax as sampled_softmax_module
from refimpl.nn.sampled_softmax import (
    SampledSoftmaxConfig,
    sampled_softmax_backward,
    sampled_softmax_forward,
)

REFERENCE = cases.sampled_softmax_reference
Arr = np.ndarray[Any, Any]


def _draw(seed: int, b: int, n: int, d: int, shared: bool, scale: float = 1.0,
          dtype: Any = np.float64) -> dict[str, Arr]:
    rng = np.random.Generator(np.random.PCG64(seed))
    positive_ids, negative_ids = cases.draw_ids(rng, b, n, shared, ())
    neg_shape = (n, d) if shared else (b, n, d)
    return {
        "user": (scale * rng.standard_normal((b, d))).astype(dtype),
        "positive": rng.standard_normal((b, d)).astype(dtype),
        "negatives": rng.standard_normal(neg_shape).astype(dtype),
        "positive_ids": positive_ids,
        "negative_ids": negative_ids,
    }


def _loss(x: dict[str, Arr], cfg: SampledSoftmaxConfig, **q: Arr) -> tuple[Arr, Any]:
    return sampled_softmax_forward(
        x["user"], x["positive"], x["negatives"], x["positive_ids"], x["negative_ids"], cfg, **q
    )


@pytest.mark.parametrize("case", cases.CASES, ids=lambda c: c.name)
def test_gradients_match_finite_differences_on_every_golden_case(case: Any) -> None:
    assert_gradients_match(check_component(REFERENCE, case.draw(), case.config))


configs = st.fixed_dictionaries({
    "temperature": st.sampled_from([1.0, 0.3, 2.0]),
    "denominator": st.sampled_from(["with_positive", "negatives_only"]),
    "remove_accidental_hits": st.booleans(),
    "logq_correction": st.booleans(),
})


@given(config=configs, shared=st.booleans(), seed=st.integers(0, 2**32 - 1),
       n=st.integers(1, 4), hit=st.booleans())
def test_gradients_match_for_every_option(
    config: dict[str, Any], shared: bool, seed: int, n: int, hit: bool
) -> None:
    b, d = 3, 4
    shape = cases.ScoredShape(batch=b, negatives=n, d=d, shared=shared, hits=((1, 0),) if hit else (),
                              logq=config["logq_correction"])
    tensors: CaseTensors = shape.build(np.random.Generator(np.random.PCG64(seed)))
    assert_gradients_match(check_component(REFERENCE, tensors, config))


def _one_pass_matches_logsumexp_form(tensors: CaseTensors, config: dict[str, Any]) -> None:
    """The reference (p = e / Z from the logsumexp's own exponentials) against the two-pass form
    (p = exp(s - logsumexp(s)), as torch's autograd computes it), every tensor both return."""
    args = (tensors.inputs, tensors.params, config, tensors.upstream)
    ours, two_pass = REFERENCE(*args).flat(), logsumexp_softmax(REFERENCE, *args)
    for name, expected in two_pass.items():
        scale = float(np.max(np.abs(expected), initial=1.0))
        np.testing.assert_allclose(ours[name], expected, rtol=1e-10, atol=1e-13 * scale, err_msg=name)


@given(config=configs, shared=st.booleans(), seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6),
       hit_rows=st.lists(st.integers(0, 3), max_size=3), every_negative_a_hit=st.booleans(),
       scale=st.sampled_from([1.0, 30.0, 300.0]))
def test_one_pass_softmax_equals_the_logsumexp_form(
    config: dict[str, Any], shared: bool, seed: int, n: int, hit_rows: list[int],
    every_negative_a_hit: bool, scale: float,
) -> None:
    """Accidental hits (kept or removed), logQ, temperature, both denominators, a row whose
    negatives are all removed, and logits in the thousands (scale 300)."""
    if every_negative_a_hit:
        hits = tuple((0, neg) for neg in range(n))
    else:  # a shared slot holds one row's positive id
        hits = tuple({row % n if shared else row: (row, row % n) for row in hit_rows}.values())
    shape = cases.ScoredShape(batch=4, negatives=n, d=5, shared=shared, hits=hits,
                              logq=config["logq_correction"], scale=scale)
    _one_pass_matches_logsumexp_form(shape.build(np.random.Generator(np.random.PCG64(seed))), config)


def test_negative_control_logsumexp_form_check_catches_probabilities_without_the_positive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken one-pass softmax whose negative probabilities are normalised by the negatives'
    exponentials alone (Z without the positive's e): the equality with the two-pass form fails."""
    real = sampled_softmax_module.softmax_loss_forward

    def forgets_the_positive(*args: Any) -> Any:
        result = real(*args)
        without = result.cache.negative_probs / (1 - result.cache.positive_probs)[:, None]
        return replace(result, cache=replace(result.cache, negative_probs=without))

    shape = cases.ScoredShape(batch=4, negatives=3, d=5)
    tensors = shape.build(np.random.Generator(np.random.PCG64(0)))
    config = {"temperature": 1.0, "denominator": "with_positive", "remove_accidental_hits": True}
    _one_pass_matches_logsumexp_form(tensors, config)
    monkeypatch.setattr(sampled_softmax_module, "softmax_loss_forward", forgets_the_positive)
    with pytest.raises(AssertionError, match="d_user"):
        _one_pass_matches_logsumexp_form(tensors, config)


def test_gradient_check_catches_a_broken_backward() -> None:
    """Negative control: a backward that forgets the temperature is caught."""
    case = next(c for c in cases.CASES if c.name == "logq_temperature")

    def forgets_temperature(inputs: Any, params: Any, config: Any, upstream: Any) -> Any:
        result = REFERENCE(inputs, params, config, upstream)
        result.grads["d_user"] = result.grads["d_user"] * config["temperature"]
        return result

    assert check_component(forgets_temperature, case.draw(), case.config)


def test_tiny_case_matches_the_worked_example_of_the_spec() -> None:
    case = next(c for c in cases.CASES if c.name == "tiny")
    t = case.draw()
    result = REFERENCE(t.inputs, t.params, case.config, t.upstream)
    row0 = np.log(1 + np.exp(-1) + np.exp(-2))  # logits (2 | 0, 1)
    row1 = np.log(2 + np.exp(-1))  # logits (1 | 1, 0)
    np.testing.assert_allclose(result.intermediates["row_losses"], [row0, row1], rtol=1e-15)
    np.testing.assert_allclose(result.outputs["loss"], (row0 + row1) / 2, rtol=1e-15)
    assert round(float(row0), 4) == 0.4076 and round(float(row1), 4) == 0.862


def _is_finite_nonnegative(loss: Arr, grads: Any) -> bool:
    arrays = [loss, grads.user, grads.positive, grads.negatives]
    return bool(loss >= 0) and all(np.isfinite(a).all() for a in arrays)


@given(seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([1.0, 1e2, 1e4]),
       shared=st.booleans(), dtype=st.sampled_from([np.float64, np.float32]))
def test_loss_is_finite_and_nonnegative_for_extreme_logits(
    seed: int, scale: float, shared: bool, dtype: Any
) -> None:
    """Scores reach |s| ~ 1e4 * sqrt(D): exp would overflow without the max shift."""
    x = _draw(seed, 4, 5, 3, shared, scale=scale, dtype=dtype)
    loss, cache = _loss(x, SampledSoftmaxConfig())
    grads = sampled_softmax_backward(cache, np.asarray(0.7, dtype=dtype))
    assert _is_finite_nonnegative(loss, grads)
    assert loss.dtype == dtype and grads.negatives.dtype == dtype


def test_finiteness_check_catches_an_unshifted_logsumexp() -> None:
    """Negative control: log(sum(exp(s))) without the max shift overflows at scores of 1e4."""
    x = _draw(0, 4, 5, 3, True, scale=1e4)
    logits = np.concatenate(
        [np.sum(x["user"] * x["positive"], 1)[:, None], x["user"] @ x["negatives"].T], axis=1
    )
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        naive = np.mean(np.log(np.exp(logits).sum(1)) - logits[:, 0])
    assert not np.isfinite(naive)


def _row_without(
    x: dict[str, Arr], row: int, drop: int, cfg: SampledSoftmaxConfig
) -> tuple[float, Arr]:
    """Row `row` alone with negative `drop` deleted: its loss and d_user (d_loss = 1)."""
    keep = [j for j in range(x["negatives"].shape[0]) if j != drop]
    single = {
        "user": x["user"][row : row + 1], "positive": x["positive"][row : row + 1],
        "negatives": x["negatives"][keep], "positive_ids": x["positive_ids"][row : row + 1],
        "negative_ids": x["negative_ids"][keep],
    }
    loss, cache = _loss(single, cfg)
    return float(loss), sampled_softmax_backward(cache, np.asarray(1.0)).user[0]


@pytest.mark.parametrize("denominator", ["with_positive", "negatives_only"])
@given(seed=st.integers(0, 2**32 - 1), row=st.integers(0, 3), drop=st.integers(0, 4))
def test_removing_an_accidental_hit_equals_dropping_that_negative(
    denominator: str, seed: int, row: int, drop: int
) -> None:
    x = _draw(seed, 4, 5, 6, True)
    x["negative_ids"][drop] = x["positive_ids"][row]
    cfg = SampledSoftmaxConfig(denominator=denominator)
    _, cache = _loss(x, cfg)
    expected_loss, expected_d_user = _row_without(x, row, drop, cfg)
    np.testing.assert_allclose(cache.logit_loss.row_losses[row], expected_loss, rtol=1e-12)
    grads = sampled_softmax_backward(cache, np.asarray(1.0))
    np.testing.assert_allclose(4 * grads.user[row], expected_d_user, rtol=1e-10, atol=1e-14)


def test_hit_equality_catches_keeping_the_hit() -> None:
    """Negative control: with the hit kept the row's loss differs from the dropped-negative loss."""
    x = _draw(3, 4, 5, 6, True)
    x["negative_ids"][2] = x["positive_ids"][1]
    _, cache = _loss(x, SampledSoftmaxConfig(remove_accidental_hits=False))
    expected_loss, _ = _row_without(x, 1, 2, SampledSoftmaxConfig())
    assert abs(cache.logit_loss.row_losses[1] - expected_loss) > 1e-6


def test_removed_hit_passes_no_gradient_to_its_row() -> None:
    x = _draw(5, 3, 4, 5, False)
    x["negative_ids"][1, 2] = x["positive_ids"][1]
    _, cache = _loss(x, SampledSoftmaxConfig())
    grads = sampled_softmax_backward(cache, np.asarray(1.3))
    assert np.all(grads.negatives[1, 2] == 0) and np.any(grads.negatives[1, 1] != 0)
    assert np.isfinite(cache.negative_logits).all()


def test_negatives_only_row_with_every_negative_removed_is_not_counted() -> None:
    x = _draw(7, 3, 2, 4, True)
    x["negative_ids"][:] = x["positive_ids"][0]
    cfg = SampledSoftmaxConfig(denominator="negatives_only")
    loss, cache = _loss(x, cfg)
    ll = cache.logit_loss
    assert ll.row_counted.tolist() == [False, True, True] and ll.row_losses[0] == 0
    np.testing.assert_allclose(loss, ll.row_losses[1:].mean(), rtol=1e-15)
    grads = sampled_softmax_backward(cache, np.asarray(1.0))
    assert np.all(grads.user[0] == 0) and np.all(grads.positive[0] == 0)
    assert all(np.isfinite(a).all() for a in (grads.user, grads.positive, grads.negatives))
    rest = {k: v[1:] if k in ("user", "positive", "positive_ids") else v for k, v in x.items()}
    np.testing.assert_allclose(loss, _loss(rest, cfg)[0], rtol=1e-15)


def test_negatives_only_with_no_counted_row_is_zero_without_nan() -> None:
    x = _draw(8, 2, 3, 4, True)
    x["positive_ids"][:] = 5
    x["negative_ids"][:] = 5
    loss, cache = _loss(x, SampledSoftmaxConfig(denominator="negatives_only"))
    grads = sampled_softmax_backward(cache, np.asarray(1.0))
    assert loss == 0 and not cache.logit_loss.row_counted.any()
    assert all(np.all(a == 0) for a in (grads.user, grads.positive, grads.negatives))


def test_with_positive_row_with_every_negative_removed_has_loss_zero() -> None:
    x = _draw(7, 3, 2, 4, True)
    x["negative_ids"][:] = x["positive_ids"][0]
    _, cache = _loss(x, SampledSoftmaxConfig())
    assert cache.logit_loss.row_counted.all() and cache.logit_loss.row_losses[0] == 0


def test_negatives_only_is_unbounded_below_and_with_positive_is_not() -> None:
    x = _draw(9, 3, 4, 5, True)
    x["positive"] = x["user"].copy()
    for scale, bound in ((10.0, -50.0), (100.0, -5000.0)):
        scaled = dict(x, user=scale * x["user"], positive=scale * x["positive"])
        only, _ = _loss(scaled, SampledSoftmaxConfig(denominator="negatives_only"))
        with_pos, _ = _loss(scaled, SampledSoftmaxConfig())
        assert only < bound and with_pos >= 0


@given(seed=st.integers(0, 2**32 - 1), logq=st.booleans())
def test_shared_negatives_equal_the_same_negatives_per_row(seed: int, logq: bool) -> None:
    x = _draw(seed, 3, 4, 5, True)
    q: dict[str, Arr] = {}
    per_row_q: dict[str, Arr] = {}
    if logq:
        q = {"positive_q": np.full(3, 0.2), "negative_q": np.array([0.1, 0.3, 0.05, 0.5])}
        per_row_q = dict(q, negative_q=np.tile(q["negative_q"], (3, 1)))
    per_row = dict(x, negatives=np.tile(x["negatives"], (3, 1, 1)),
                   negative_ids=np.tile(x["negative_ids"], (3, 1)))
    loss_s, cache_s = _loss(x, SampledSoftmaxConfig(), **q)
    loss_r, cache_r = _loss(per_row, SampledSoftmaxConfig(), **per_row_q)
    np.testing.assert_allclose(loss_s, loss_r, rtol=1e-13)
    g_s = sampled_softmax_backward(cache_s, np.asarray(1.0))
    g_r = sampled_softmax_backward(cache_r, np.asarray(1.0))
    np.testing.assert_allclose(g_s.negatives, g_r.negatives.sum(0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g_s.user, g_r.user, rtol=1e-12, atol=1e-15)


def test_uniform_logq_changes_nothing_under_with_positive() -> None:
    """A constant correction shifts every logit of a row alike: the softmax ignores it."""
    x = _draw(4, 3, 4, 5, True)
    plain, _ = _loss(x, SampledSoftmaxConfig())
    corrected, _ = _loss(x, SampledSoftmaxConfig(), positive_q=np.full(3, 0.1),
                         negative_q=np.full(4, 0.1))
    np.testing.assert_allclose(plain, corrected, rtol=1e-13)


@pytest.mark.parametrize("mutate, error, words", [
    (lambda x: x.update(user=x["user"][:, :3]), ValueError, "positive"),
    (lambda x: x.update(negatives=x["negatives"][None, None]), ValueError, "negatives"),
    (lambda x: x.update(negative_ids=x["negative_ids"][:3]), ValueError, "negative_ids"),
    (lambda x: x.update(positive_ids=x["positive_ids"].astype(float)), TypeError, "positive_ids"),
    (lambda x: x.update(positive=x["positive"].astype(np.float32)), TypeError, "positive"),
])
def test_bad_inputs_are_refused_by_name(mutate: Any, error: type, words: str) -> None:
    x = _draw(0, 3, 4, 5, True)
    mutate(x)
    with pytest.raises(error, match=words):
        _loss(x, SampledSoftmaxConfig())


@pytest.mark.parametrize("cfg, q, words", [
    (SampledSoftmaxConfig(temperature=0.0), {}, "temperature"),
    (SampledSoftmaxConfig(temperature=float("nan")), {}, "temperature"),
    (SampledSoftmaxConfig(denominator="negatives"), {}, "denominator"),
    (SampledSoftmaxConfig(), {"positive_q": np.full(3, 0.1)}, "negative_q"),
    (SampledSoftmaxConfig(), {"positive_q": np.full(3, 0.1), "negative_q": np.zeros(4)},
     "negative_q"),
    (SampledSoftmaxConfig(), {"positive_q": np.full(3, 1.5), "negative_q": np.full(4, 0.1)},
     "positive_q"),
])
def test_bad_config_and_q_are_refused_by_name(
    cfg: SampledSoftmaxConfig, q: dict[str, Arr], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        _loss(_draw(0, 3, 4, 5, True), cfg, **q)


def test_a_flag_that_is_not_a_bool_is_a_type_error() -> None:
    cfg = SampledSoftmaxConfig(remove_accidental_hits=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cfg.remove_accidental_hits"):
        _loss(_draw(0, 3, 4, 5, True), cfg)


def test_an_upstream_gradient_that_is_not_a_scalar_is_refused() -> None:
    _, cache = _loss(_draw(0, 3, 4, 5, True), SampledSoftmaxConfig())
    sampled_softmax_backward(cache, np.float64(0.5))
    with pytest.raises(ValueError, match=r"d_loss: expected a scalar"):
        sampled_softmax_backward(cache, np.ones(3))


def test_negative_control_shared_negative_check_catches_an_averaged_shared_gradient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken backward that averages the shared negatives' gradient over the rows instead of
    summing it: the shared-vs-per-row comparison fails."""
    real = sampled_softmax_backward

    def averages_shared(cache: Any, d_loss: Any) -> Any:
        grads = real(cache, d_loss)
        if grads.negatives.ndim == 2:
            return replace(grads, negatives=grads.negatives / grads.user.shape[0])
        return grads

    monkeypatch.setitem(globals(), "sampled_softmax_backward", averages_shared)
    check = test_shared_negatives_equal_the_same_negatives_per_row.hypothesis.inner_test  # type: ignore[attr-defined]
    with pytest.raises(AssertionError):
        check(seed=0, logq=False)


def test_negative_control_removed_hit_check_catches_a_loss_keeping_the_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken loss that keeps accidental hits: the hit's slot receives a gradient."""
    real = _loss

    def keeps_hits(x: dict[str, Arr], cfg: SampledSoftmaxConfig, **q: Arr) -> tuple[Arr, Any]:
        return real(x, replace(cfg, remove_accidental_hits=False), **q)

    monkeypatch.setitem(globals(), "_loss", keeps_hits)
    with pytest.raises(AssertionError):
        test_removed_hit_passes_no_gradient_to_its_row()


def test_negative_control_uniform_logq_check_catches_a_correction_of_the_negatives_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken correction that leaves the positive's logit uncorrected (q = 1 for it)."""
    real = _loss

    def negatives_only_correction(x: dict[str, Arr], cfg: SampledSoftmaxConfig, **q: Arr) -> tuple[Arr, Any]:
        if "positive_q" in q:
            q = {**q, "positive_q": np.ones_like(q["positive_q"])}
        return real(x, cfg, **q)

    monkeypatch.setitem(globals(), "_loss", negatives_only_correction)
    with pytest.raises(AssertionError):
        test_uniform_logq_changes_nothing_under_with_positive()
