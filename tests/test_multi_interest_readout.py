"""multi_interest_readout: gradients, K = 1 reduction, harder >= standard, ties, conformance.

Every property has a negative control: a deliberately broken variant the same check catches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from refimpl.cases import multi_interest_readout as cases
from refimpl.cases._base import Tensors
from refimpl.cases.sampled_softmax import ScoredShape, draw_ids
from refimpl.conformance import reference_adapter, run_conformance
from refimpl.gradcheck import assert_gradients_match, check_component
from refimpl.nn.multi_interest_readout import (
    ReadoutConfig,
    interest_scores,
    multi_interest_readout_backward,
    multi_interest_readout_forward,
)
from refimpl.nn.sampled_softmax import (
    SampledSoftmaxConfig,
    sampled_softmax_backward,
    sampled_softmax_forward,
)

REFERENCE = cases.multi_interest_readout_reference
Arr = np.ndarray[Any, Any]
COMPONENT = "multi_interest_readout"


def _draw(seed: int, b: int, k: int, n: int, d: int, shared: bool, hit: bool = False,
          dtype: Any = np.float64) -> dict[str, Arr]:
    rng = np.random.Generator(np.random.PCG64(seed))
    positive_ids, negative_ids = draw_ids(rng, b, n, shared, ((0, 0),) if hit else ())
    return {
        "interests": rng.standard_normal((b, k, d)).astype(dtype),
        "positive": rng.standard_normal((b, d)).astype(dtype),
        "negatives": rng.standard_normal((n, d) if shared else (b, n, d)).astype(dtype),
        "positive_ids": positive_ids,
        "negative_ids": negative_ids,
    }


def _readout(x: Mapping[str, Arr], mode: str, loss: SampledSoftmaxConfig | None = None,
             **q: Arr) -> tuple[Arr, Any]:
    cfg = ReadoutConfig(mode=mode, loss=loss or SampledSoftmaxConfig())
    return multi_interest_readout_forward(
        x["interests"], x["positive"], x["negatives"], x["positive_ids"], x["negative_ids"], cfg,
        **q,
    )


def _min_gap(x: Mapping[str, Arr]) -> float:
    """The smallest gap between the best and second-best interest of any item (inf if K = 1)."""
    scores = np.concatenate([
        np.einsum("bkd,bd->bk", x["interests"], x["positive"])[:, None, :],
        interest_scores(x["interests"], x["negatives"]),
    ], axis=1)
    if scores.shape[-1] == 1:
        return float("inf")
    top2 = np.sort(scores, axis=-1)[..., -2:]
    return float(np.min(top2[..., 1] - top2[..., 0]))


NON_TIE_CASES = [c for c in cases.CASES if not c.name.startswith("ties")]


@pytest.mark.parametrize("case", NON_TIE_CASES, ids=lambda c: c.name)
def test_gradients_match_finite_differences_on_golden_cases(case: Any) -> None:
    assert_gradients_match(check_component(REFERENCE, case.draw(), case.config))


@given(mode=st.sampled_from(["standard", "harder_negatives"]), shared=st.booleans(),
       denominator=st.sampled_from(["with_positive", "negatives_only"]),
       logq=st.booleans(), seed=st.integers(0, 2**32 - 1), k=st.integers(1, 3))
def test_gradients_match_for_every_option_away_from_ties(
    mode: str, shared: bool, denominator: str, logq: bool, seed: int, k: int
) -> None:
    config = {"mode": mode, "temperature": 0.7, "denominator": denominator,
              "remove_accidental_hits": True, "logq_correction": logq}
    shape = ScoredShape(batch=3, interests=k, negatives=4, d=5, shared=shared, hits=((1, 2),), logq=logq)
    tensors = shape.build(np.random.Generator(np.random.PCG64(seed)))
    assume(_min_gap(tensors.inputs) > 1e-4)  # finite differences of eps 1e-6 stay on one side
    assert_gradients_match(check_component(REFERENCE, tensors, config))


@pytest.mark.parametrize("mode", ["standard", "harder_negatives"])
@given(seed=st.integers(0, 2**32 - 1), shared=st.booleans(), logq=st.booleans(),
       denominator=st.sampled_from(["with_positive", "negatives_only"]))
def test_one_interest_equals_plain_sampled_softmax(
    mode: str, seed: int, shared: bool, logq: bool, denominator: str
) -> None:
    x = _draw(seed, 3, 1, 4, 5, shared, hit=True)
    q: dict[str, Arr] = {}
    if logq:
        rng = np.random.Generator(np.random.PCG64(seed))
        q = {"positive_q": rng.uniform(0.01, 1, 3),
             "negative_q": rng.uniform(0.01, 1, (4,) if shared else (3, 4))}
    loss_cfg = SampledSoftmaxConfig(temperature=0.5, denominator=denominator)
    loss, cache = _readout(x, mode, loss_cfg, **q)
    plain, plain_cache = sampled_softmax_forward(
        x["interests"][:, 0], x["positive"], x["negatives"], x["positive_ids"], x["negative_ids"],
        loss_cfg, **q,
    )
    np.testing.assert_allclose(loss, plain, rtol=1e-13)
    grads = multi_interest_readout_backward(cache, np.asarray(0.9))
    plain_grads = sampled_softmax_backward(plain_cache, np.asarray(0.9))
    for ours, theirs in ((grads.interests[:, 0], plain_grads.user),
                         (grads.positive, plain_grads.positive),
                         (grads.negatives, plain_grads.negatives)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


def _harder_at_least_standard(
    x: Mapping[str, Arr], loss_cfg: SampledSoftmaxConfig, harder: Any = None
) -> bool:
    standard, _ = _readout(x, "standard", loss_cfg)
    hard = _readout(x, "harder_negatives", loss_cfg)[0] if harder is None else harder(x, loss_cfg)
    return bool(hard >= standard - 1e-12 * max(1.0, abs(float(standard))))


@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 4), n=st.integers(1, 5),
       shared=st.booleans(), hit=st.booleans(),
       denominator=st.sampled_from(["with_positive", "negatives_only"]),
       temperature=st.sampled_from([0.1, 1.0, 3.0]))
def test_harder_negatives_loss_is_at_least_the_standard_loss(
    seed: int, k: int, n: int, shared: bool, hit: bool, denominator: str, temperature: float
) -> None:
    x = _draw(seed, 3, k, n, 4, shared, hit=hit)
    cfg = SampledSoftmaxConfig(temperature=temperature, denominator=denominator)
    assert _harder_at_least_standard(x, cfg)


def _argmin_readout(x: Mapping[str, Arr], cfg: SampledSoftmaxConfig) -> Arr:
    """Broken: each negative picks its LEAST relevant interest (its score is then <= standard)."""
    scores = interest_scores(x["interests"], x["negatives"]).min(axis=2)
    positive = np.einsum("bkd,bd->bk", x["interests"], x["positive"]).max(axis=1)
    logits = np.concatenate([positive[:, None], scores], axis=1) / cfg.temperature
    shift = logits.max(axis=1, keepdims=True)
    lse = shift[:, 0] + np.log(np.exp(logits - shift).sum(axis=1))
    result: Arr = np.mean(lse - logits[:, 0])
    return result


def test_harder_property_catches_an_argmin_readout() -> None:
    """Negative control: the property fails for a readout that picks the worst interest."""
    x = _draw(1, 4, 3, 5, 4, True)
    assert not _harder_at_least_standard(x, SampledSoftmaxConfig(), harder=_argmin_readout)


@pytest.mark.parametrize("mode", ["standard", "harder_negatives"])
def test_ties_break_to_the_lowest_interest_index(mode: str) -> None:
    case = next(c for c in cases.CASES if c.name == ("ties_standard" if mode == "standard"
                                                       else "ties_harder"))
    t = case.draw()
    _, cache = _readout(t.inputs, mode)
    assert cache.positive_interest.tolist() == [1, 0]
    assert cache.positive_interest.dtype == np.int64 and cache.negative_interests.dtype == np.int64
    expected = [[1, 1, 1], [0, 0, 0]] if mode == "standard" else [[0, 0, 1], [0, 0, 0]]
    assert cache.negative_interests.tolist() == expected


@given(seed=st.integers(0, 2**32 - 1), shared=st.booleans(),
       mode=st.sampled_from(["standard", "harder_negatives"]))
def test_gradient_reaches_only_the_chosen_interests(seed: int, shared: bool, mode: str) -> None:
    x = _draw(seed, 3, 4, 2, 5, shared)
    _, cache = _readout(x, mode)
    grads = multi_interest_readout_backward(cache, np.asarray(1.0))
    chosen = np.zeros((3, 4), dtype=bool)
    chosen[np.arange(3), cache.positive_interest] = True
    for b in range(3):
        chosen[b, cache.negative_interests[b]] = True
    assert np.all(grads.interests[~chosen] == 0)
    assert np.all(np.abs(grads.interests[chosen]).sum(axis=-1) > 0)


@pytest.mark.parametrize("case", cases.CASES, ids=lambda c: c.name)
def test_float32_chooses_the_same_interests_as_float64(case: Any) -> None:
    """The goldens' integer intermediates hold for float32 implementations too."""
    t = case.draw()
    as32 = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in t.inputs.items()}
    r64 = REFERENCE(t.inputs, {}, case.config, t.upstream)
    up32 = {k: v.astype(np.float32) for k, v in t.upstream.items()}  # an upstream grad has the forward's dtype
    r32 = REFERENCE(as32, {}, case.config, up32)
    for name in ("positive_interest", "negative_interests"):
        assert np.array_equal(r64.intermediates[name], r32.intermediates[name])
    assert r32.outputs["loss"].dtype == np.float32


def _positive_interest_for_negatives(
    inputs: Tensors, params: Tensors, config: Any, upstream: Tensors
) -> Mapping[str, Any]:
    """Broken: under harder_negatives the negatives still use the positive's interest."""
    if config["mode"] == "harder_negatives":
        config = dict(config, mode="standard")
    return REFERENCE(inputs, params, config, upstream).flat()


def test_conformance_catches_the_positive_interest_for_negatives() -> None:
    adapter = reference_adapter()
    adapter[COMPONENT] = _positive_interest_for_negatives
    report = run_conformance(adapter, components=[COMPONENT])
    assert not report.ok
    failed = {r.case_id: r for r in report.results if r.status == "fail"}
    harder = {f"{COMPONENT}/{c.name}" for c in cases.CASES
              if c.config["mode"] == "harder_negatives"}
    # K = 1 has a single interest to choose: there the two readouts coincide.
    assert set(failed) == harder - {f"{COMPONENT}/one_interest_harder"}
    realistic = failed[f"{COMPONENT}/realistic_harder"]
    assert "negative_interests" in realistic.failing_names and "loss" in realistic.failing_names
    assert realistic.first_divergent_intermediate == "negative_interests"


def test_reference_passes_its_own_goldens() -> None:
    assert run_conformance(reference_adapter(), components=[COMPONENT]).ok


@pytest.mark.parametrize("mutate, error, words", [
    (lambda x: x.update(interests=x["interests"][:, :, :3]), ValueError, "positive"),
    (lambda x: x.update(interests=x["interests"][0]), ValueError, "interests"),
    (lambda x: x.update(negatives=x["negatives"].astype(np.float32)), TypeError, "negatives"),
    (lambda x: x.update(negative_ids=x["negative_ids"][None]), ValueError, "negative_ids"),
    (lambda x: x.update(interests=x["interests"][:, :0]), ValueError, "interests: expected at least one"),
])
def test_bad_inputs_are_refused_by_name(mutate: Any, error: type, words: str) -> None:
    x = _draw(0, 3, 2, 4, 5, True)
    mutate(x)
    with pytest.raises(error, match=words):
        _readout(x, "standard")


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="cfg.mode"):
        _readout(_draw(0, 3, 2, 4, 5, True), "hardest")


# --- negative controls for the two properties above without one ----------------------------


def test_negative_control_one_interest_check_catches_a_readout_ignoring_the_temperature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken readout that scores with temperature 1 whatever the config: the comparison with
    the plain sampled softmax (temperature 0.5) fails."""
    real = _readout

    def ignores_temperature(x: Mapping[str, Arr], mode: str, loss: SampledSoftmaxConfig | None = None,
                            **q: Arr) -> Any:
        return real(x, mode, replace(loss or SampledSoftmaxConfig(), temperature=1.0), **q)

    monkeypatch.setitem(globals(), "_readout", ignores_temperature)
    check = test_one_interest_equals_plain_sampled_softmax.hypothesis.inner_test
    with pytest.raises(AssertionError):
        check("standard", seed=0, shared=False, logq=False, denominator="with_positive")


def test_negative_control_chosen_interest_check_catches_a_gradient_spread_over_every_interest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken backward that leaks a share of the gradient to every interest."""
    real = multi_interest_readout_backward

    def spreads(cache: Any, d_loss: Any) -> Any:
        grads = real(cache, d_loss)
        leak = grads.interests.mean(axis=1, keepdims=True)
        return replace(grads, interests=grads.interests + 0.1 * leak)

    monkeypatch.setitem(globals(), "multi_interest_readout_backward", spreads)
    check = test_gradient_reaches_only_the_chosen_interests.hypothesis.inner_test  # type: ignore[attr-defined]
    with pytest.raises(AssertionError):
        check(seed=0, shared=True, mode="standard")


def _per_row(x: Mapping[str, Arr], negatives: Arr) -> dict[str, Arr]:
    """`x` with `negatives` (N, D) repeated for every row: the per-row path on the same items."""
    b = x["interests"].shape[0]
    return {**x, "negatives": np.broadcast_to(negatives, (b, *negatives.shape)).copy(),
            "negative_ids": np.broadcast_to(x["negative_ids"], (b, x["negative_ids"].shape[0])).copy()}


@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 4), n=st.integers(1, 6), hit=st.booleans(),
       mode=st.sampled_from(["standard", "harder_negatives"]), dtype=st.sampled_from([np.float32, np.float64]))
def test_shared_negatives_equal_the_per_row_path(seed: int, k: int, n: int, hit: bool, mode: str,
                                                 dtype: Any) -> None:
    """Shared negatives (N, D) score and back-propagate by matrix products; the per-row path (B, N, D)
    by element-wise sums: the same loss and gradients (d_negatives summed over the rows) to round-off.
    Negative control: the per-row path on other items (the negatives rolled by one) differs."""
    x = _draw(seed, 5, k, n, 4, shared=True, hit=hit, dtype=dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12

    def run(inputs: Mapping[str, Arr]) -> tuple[Arr, ...]:
        loss, cache = _readout(inputs, mode)
        grads = multi_interest_readout_backward(cache, np.ones((), dtype=dtype))
        d_negatives = grads.negatives if grads.negatives.ndim == 2 else grads.negatives.sum(axis=0)
        return loss, grads.interests, grads.positive, d_negatives

    for shared_value, per_row_value in zip(run(x), run(_per_row(x, x["negatives"])), strict=True):
        np.testing.assert_allclose(shared_value, per_row_value, rtol=tol, atol=tol)
    assume(n > 1 and not np.allclose(x["negatives"], np.roll(x["negatives"], 1, axis=0)))
    rolled = run(_per_row(x, np.roll(x["negatives"], 1, axis=0)))
    assert not all(np.allclose(a, b, rtol=tol, atol=tol) for a, b in zip(run(x), rolled, strict=True))
