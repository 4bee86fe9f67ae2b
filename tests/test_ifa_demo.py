"""IFA end to end: the planted request data, the Table 2/3 models' gradients, the learning check
(IFA beats DIN beyond the seed spread; another user's lifelong sequence erases the advantage) and
`refimpl demo ifa --quick` (spec/ifa.md#the-demo, spec/data.md#planted-request-data)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from refimpl.data.requests import RequestConfig, RequestData, generate_requests
from refimpl.gradcheck import numerical_gradient
from refimpl.pipelines import ifa as pipeline
from refimpl.spread import beyond_spread

ATTENTION_INITS = ("unit_variance", "fan_in")

TINY = RequestConfig(num_items=60, num_categories=5, num_users=12, lifelong_length=30, recent_length=6,
                     num_candidates=5, num_shown=2)


def test_generator_is_seeded_and_keeps_its_invariants() -> None:
    data = generate_requests(TINY)
    again = generate_requests(TINY)
    np.testing.assert_array_equal(data.sequence, again.sequence)
    np.testing.assert_array_equal(data.click, again.click)
    assert not np.array_equal(data.sequence, generate_requests(replace(TINY, seed=1)).sequence)
    assert data.sequence.shape == (12, 30) and data.candidates.shape == (12, 5)
    assert (data.impression.sum(axis=1) == TINY.num_shown).all()
    assert (data.click <= data.impression).all()
    assert (np.diff(data.timestamps, axis=1) < 0).all()  # days before the request, oldest first
    assert data.cross.max() < TINY.num_cross
    np.testing.assert_array_equal(data.recent(), data.sequence[:, -6:])


@pytest.mark.parametrize(("field", "value"), [
    ("num_items", 0), ("num_categories", 61), ("recent_length", 30), ("num_shown", 5),
    ("taste_share", 1.5), ("sharpness", float("nan")), ("seed", -1),
])
def test_request_config_refuses_bad_values_by_name(field: str, value: object) -> None:
    with pytest.raises((ValueError, TypeError), match=field):
        replace(TINY, **{field: value})


def test_lifelong_taste_carries_the_click_signal() -> None:
    """The planted truth behind the demo: the older behaviours' mean latent predicts clicks among
    the shown candidates far better than the recent window's (the case IFA makes)."""
    from refimpl.metrics import auc

    data = generate_requests(replace(RequestConfig(), num_users=600, lifelong_length=400))
    latent = data.item_latent
    shown = data.impression == 1
    recent = data.config.recent_length

    def reading(part: slice) -> float:
        mean = latent[data.sequence[:, part]].mean(axis=1)
        score = np.einsum("nmd,nd->nm", latent[data.candidates], mean)
        return auc(score, data.click, shown)

    older, window = reading(slice(0, -recent)), reading(slice(-recent, None))
    assert older > 0.7 and window < 0.6, (older, window)



def _readings(category_spread: float) -> dict[str, float]:
    """Click-among-shown AUCs of readings of the planted latents that learn nothing (spec/data.md,
    "What each model family can read"): the older behaviours' mean, the k = 64 behaviours nearest
    the candidate, and the non-learned category frequency of the demo."""
    from refimpl.metrics import auc

    data = generate_requests(replace(RequestConfig(), num_users=600, lifelong_length=400,
                                     category_spread=category_spread))
    latent, category, shown = data.item_latent, data.item_category, data.impression == 1
    cand, older = latent[data.candidates], data.sequence[:, :-data.config.recent_length]
    similarity = np.einsum("nmd,nld->nml", cand, latent[older])  # (N, M, L - R)
    nearest = -np.sort(-similarity, axis=2)[:, :, :64]
    frequency = (category[data.sequence][:, None, :] == category[data.candidates][:, :, None]).mean(axis=2)
    return {"older mean": auc(similarity.mean(axis=2), data.click, shown),
            "nearest k": auc(nearest.mean(axis=2), data.click, shown),
            "category frequency": auc(frequency, data.click, shown)}


def test_category_frequency_reads_the_taste_because_categories_locate_the_latent() -> None:
    """Why the non-learned category frequency is a strong row of the demo: at the default spread
    (0.8) a category is an arc of the latent circle, so counting it reads z_c . w_u at category
    resolution; with categories that do not locate the latent (spread 4, the control) the same
    count reads almost nothing while the older behaviours still carry the signal. The k behaviours
    nearest the candidate carry it at both spreads (their mean similarity is a density)."""
    tight, loose = _readings(0.8), _readings(4.0)
    assert tight["category frequency"] > 0.72 and loose["category frequency"] < 0.6, (tight, loose)
    for reading in (tight, loose):
        assert reading["older mean"] > 0.8 and reading["nearest k"] > 0.75, reading


def _initial_logit_std(attention_init: str) -> float:
    """The std of the FSM's initial attention logits q . k / sqrt(D_h) (one head) between embedded
    candidates and behaviours, at the demo's width E = 16."""
    data = generate_requests(replace(TINY, num_users=40))
    cfg = pipeline.RankerConfig(attention_init=attention_init, dtype="float64")
    params = pipeline.ranker_init(np.random.default_rng(0), pipeline.RANKERS["TWIN"], data, cfg)
    table, head = params["item_table"], cfg.width // cfg.num_heads
    q = (table[data.candidates] @ params["fsm_Wq"])[..., :head]  # (N, M, D_h)
    k = (table[data.sequence] @ params["fsm_Wk"])[..., :head]  # (N, L, D_h)
    return float(np.einsum("nmh,nlh->nml", q, k).std() / np.sqrt(head))


def test_unit_variance_init_starts_the_attention_away_from_average_pooling() -> None:
    """The demo's init (spec/ifa.md, "The plateau and the init"): the tables' rows have entries of
    variance 1/E, so Wq, Wk ~ N(0, 1) start the logits at about unit std; the fan-in init (the
    control) starts them at about 1/E, a uniform attention. Everything else is drawn the same."""
    unit, fan_in = _initial_logit_std("unit_variance"), _initial_logit_std("fan_in")
    assert 0.5 < unit < 2.0 and fan_in < 0.15, (unit, fan_in)
    data = generate_requests(TINY)
    scaled, plain = (pipeline.ranker_init(np.random.default_rng(3), pipeline.RANKERS["IFA"], data,
                                          pipeline.RankerConfig(attention_init=init)) for init in ATTENTION_INITS)
    for name in plain:
        factor = 4.0 if name[4:] in ("Wq", "Wk", "Wv") else 1.0  # sqrt(E), E = 16
        np.testing.assert_allclose(scaled[name], factor * plain[name], rtol=1e-6, err_msg=name)


RANKER = pipeline.RankerConfig(width=4, hidden=3, num_heads=2, subsequence_length=4, top_k=5, dtype="float64")


def _gradient_errors(name: str) -> float:
    data = generate_requests(replace(TINY, num_items=16, num_categories=4, num_segments=2))
    inputs = pipeline.prepare_inputs(data, RANKER.subsequence_length).take(np.arange(3))
    spec = pipeline.RANKERS[name]
    params = pipeline.ranker_init(np.random.default_rng(1), spec, data, RANKER)
    _, cache = pipeline.ranker_forward(params, inputs, spec, RANKER)
    grads = pipeline.ranker_backward(cache, np.array(0.7))
    assert set(grads) == set(params)

    def objective(point: dict[str, np.ndarray]) -> float:
        return 0.7 * float(pipeline.ranker_forward(point, inputs, spec, RANKER)[0].loss)

    worst = 0.0
    for key in params:
        numeric = numerical_gradient(objective, params, key)
        # the floor 1e-4: softmax attention's key bias bk has a gradient of exactly 0 (it adds one
        # constant to every logit of a query), so its central difference is round-off (~1e-10)
        worst = max(worst, float(np.abs(numeric - grads[key]).max()) / max(1e-4, float(np.abs(numeric).max())))
    return worst


@pytest.mark.parametrize("name", sorted(pipeline.RANKERS))
def test_every_model_backward_matches_finite_differences(name: str) -> None:
    assert _gradient_errors(name) < 1e-5


def test_gradient_check_catches_a_backward_that_forgets_the_query_path(monkeypatch: pytest.MonkeyPatch) -> None:
    real = pipeline._sequence_backward

    def forgetful(cache: object, d_out: np.ndarray, grads: dict[str, np.ndarray]) -> np.ndarray:
        real(cache, d_out, grads)  # type: ignore[arg-type]
        return np.zeros_like(d_out)

    monkeypatch.setattr(pipeline, "_sequence_backward", forgetful)
    assert _gradient_errors("DIN") > 1e-2


# ------------------------------------------------------------------------------- learning check

LEARNING_DATA = RequestConfig(num_items=200, num_categories=8, num_users=2_000, lifelong_length=120,
                              recent_length=20, num_candidates=10, num_shown=4, taste_share=0.7,
                              click_lifelong=6.0)
LEARNING_RANKER = pipeline.RankerConfig(width=8, hidden=32, subsequence_length=8, top_k=8, batch_size=64,
                                        steps=200, eval_every=25, patience=3, lr=0.02)


def _foreign_lifelong(data: RequestData, seed: int) -> RequestData:
    """Every user's behaviours before the recent window replaced by another user's (the window kept)."""
    perm = np.random.default_rng(seed).permutation(data.num_requests)
    recent = data.config.recent_length
    return replace(data, sequence=np.concatenate([data.sequence[perm, :-recent], data.sequence[:, -recent:]], axis=1))


def _click_auc(name: str, data: RequestData, seed: int) -> float:
    inputs = pipeline.prepare_inputs(data, LEARNING_RANKER.subsequence_length)
    split = pipeline.split_requests(data.num_requests, 0.15, 0.25, seed)
    model = pipeline.train_ranker(name, pipeline.RANKERS[name], data, inputs, split, LEARNING_RANKER, seed, None)
    return pipeline.evaluate(model, inputs, split, LEARNING_RANKER)["click_shown"]


def test_ifa_beats_din_beyond_the_seed_spread_and_a_foreign_lifelong_sequence_erases_it() -> None:
    """Measured (3 seeds, click AUC among the shown, the unit-variance attention init): IFA 0.91 /
    0.86 / 0.89, DIN 0.53 / 0.51 / 0.55, IFA on another user's lifelong sequence 0.51 / 0.54 / 0.54."""
    din, ifa, foreign = [], [], []
    for seed in range(3):
        data = generate_requests(replace(LEARNING_DATA, seed=seed))
        din.append(_click_auc("DIN", data, seed))
        ifa.append(_click_auc("IFA", data, seed))
        foreign.append(_click_auc("IFA", _foreign_lifelong(data, seed), seed))
    assert beyond_spread(ifa, din), (ifa, din)
    assert beyond_spread(ifa, foreign), (ifa, foreign)
    assert not beyond_spread(foreign, din), (foreign, din)  # the negative control: the advantage is gone


# ------------------------------------------------------------------------------------ the demo


def test_demo_quick_writes_both_tables_and_the_claims(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from refimpl.demos.ifa import main

    out = tmp_path / "ifa.json"
    assert main(["--quick", "--jobs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Table 2" in printed and "Table 3" in printed and "item popularity" in printed
    result = json.loads(out.read_text())
    assert len(result["seeds"]) == 3
    assert set(result["seeds"][0]["auc"]) == {*pipeline.RANKERS, "item popularity", "category frequency"}
    assert {c["verdict"] for c in result["claims"]} <= {"reproduced", "reversed", "not beyond the spread"}
    cpu = result["cpu_seconds"]
    assert 0 < cpu["busiest_process"] <= cpu["total"]
    cap = result["config"]["ranker"]["steps"]
    for seed in result["seeds"]:  # where each model stopped, and whether the rule or the cap did
        for t in seed["training"].values():
            assert t["best_step"] <= t["steps"] <= cap and t["stopped_early"] == (t["steps"] < cap)
    assert f"(cap {cap}; * = the cap, not the rule)" in printed


def test_cli_dispatches_demo_ifa(capsys: pytest.CaptureFixture[str]) -> None:
    from refimpl.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["demo", "ifa", "--help"])
    assert stop.value.code == 0
    assert "refimpl demo ifa" in capsys.readouterr().out


def test_command_line_overrides_reach_the_config() -> None:
    """The options that reproduce the earlier 4,000-user default of spec/ifa.md (where IFA stays on
    its plateau on seed 1) set the config; the defaults are untouched without them."""
    from refimpl.demos.ifa import DEFAULT, _parser, config_for

    assert (DEFAULT.data.num_users, DEFAULT.ranker.steps, DEFAULT.ranker.eval_every) == (8000, 3000, 80)
    cfg = config_for(_parser().parse_args(["--users", "4000", "--steps", "400", "--patience", "4"]))
    assert (cfg.data.num_users, cfg.ranker.steps, cfg.ranker.patience) == (4000, 400, 4)
    assert config_for(_parser().parse_args([])) == DEFAULT
    assert config_for(_parser().parse_args(["--valid-share", "0.05"])).valid_share == 0.05
    assert config_for(_parser().parse_args(["--attention-init", "fan_in"])).ranker.attention_init == "fan_in"


@pytest.mark.parametrize(("field", "value"), [
    ("lr_schedule", "step"), ("lr_cuts", -1), ("lr_cuts", 1.5), ("lr_factor", 1.0), ("lr_factor", 0.0),
    ("attention_init", "xavier"),
])
def test_ranker_config_refuses_bad_schedules_by_name(field: str, value: object) -> None:
    with pytest.raises((ValueError, TypeError), match=f"RankerConfig.{field}"):
        pipeline.RankerConfig(**{field: value})  # type: ignore[arg-type]


def test_the_schedule_reaches_fit_and_the_command_line_sets_it() -> None:
    """RankerConfig's schedule is what refimpl.train.fit trains by (a config that dropped a field
    would train at the constant default rate), and the demo's options set it."""
    from refimpl.demos.ifa import _parser, config_for

    ranker = pipeline.RankerConfig(lr=0.03, lr_schedule="cosine", lr_cuts=2, lr_factor=0.5)
    train = pipeline._train_config(ranker, seed=3)
    assert (train.lr, train.lr_schedule, train.lr_cuts, train.lr_factor, train.seed) == (0.03, "cosine", 2, 0.5, 3)
    default = pipeline._train_config(pipeline.RankerConfig(), seed=0)
    assert (default.lr_schedule, default.lr_cuts) == ("constant", 0)
    cfg = config_for(_parser().parse_args(["--lr", "0.03", "--lr-schedule", "cosine", "--lr-cuts", "2",
                                           "--lr-factor", "0.5"]))
    assert (cfg.ranker.lr, cfg.ranker.lr_schedule, cfg.ranker.lr_cuts, cfg.ranker.lr_factor) == (0.03, "cosine", 2, 0.5)


def _plateau_tool() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "tools" / "ifa_plateau.py"
    spec = importlib.util.spec_from_file_location("ifa_plateau", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model", ["TWIN", "IFA", "SIM-hard", "AvgPooling"])
def test_plateau_tool_prints_a_row_per_measurement(model: str, capsys: pytest.CaptureFixture[str]) -> None:
    """tools/ifa_plateau.py at a tiny size: a table row at step 1 and at every measurement, an
    attention entropy in (0, 1] where the model has an attention (nan for AvgPooling)."""
    argv = ["--model", model, "--users", "300", "--length", "60", "--steps", "4", "--every", "2"]
    assert _plateau_tool().main(argv) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[0] for row in rows] == ["| 1", "| 2", "| 4"]
    entropy = float(rows[0].split(" | ")[4])
    assert np.isnan(entropy) if model == "AvgPooling" else 0.0 < entropy <= 1.0, rows[0]


def test_plateau_tool_sees_the_fan_in_init_start_as_average_pooling() -> None:
    """The tool's entropy reads the cause of spec/ifa.md's plateau: TWIN's attention starts uniform
    (entropy / log n ~ 1) with the fan-in init and away from it with the unit-variance init."""
    tool = _plateau_tool()
    data = generate_requests(replace(TINY, num_users=40, lifelong_length=80, num_candidates=6))
    inputs = pipeline.prepare_inputs(data, 8)
    entropies = {}
    for init in ATTENTION_INITS:
        cfg = pipeline.RankerConfig(top_k=32, attention_init=init)
        params = pipeline.ranker_init(np.random.default_rng(0), pipeline.RANKERS["TWIN"], data, cfg)
        _, cache = pipeline.ranker_forward(params, inputs, pipeline.RANKERS["TWIN"], cfg)
        entropies[init] = tool.attention_spread(cache)[0]
    assert entropies["fan_in"] > 0.995 and entropies["unit_variance"] < 0.97, entropies
