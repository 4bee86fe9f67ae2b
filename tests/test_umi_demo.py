"""`refimpl demo umi`: --quick runs end to end, --data reads tiny MovieLens-1M files, the pipeline's
serving excludes seen items and its config is validated (spec/umi.md, "Demo")."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from refimpl.cli import main as cli_main
from refimpl.data.synthetic_profiles import PROFILE_QUICK_CONFIG, generate_profile_data
from refimpl.demos.umi import DEFAULT, LONGEST_FIRST, QUICK, _parser, config_for, run, scaled_cutoffs
from refimpl.models.umi import umi_init
from refimpl.optim import AdamConfig, adam_init, adam_step
from refimpl.pipelines.umi import (
    MODEL_NAMES,
    POPULARITY,
    UMIPipelineConfig,
    evaluate,
    non_learned_scores,
    prepare,
    train_model,
    validate_pipeline_config,
)
from refimpl.pipelines.umi import _umi_config as umi_config
from refimpl.train import TrainConfig, fit


def write_tiny_ml1m(root: Path, users: int = 40, movies: int = 30, per_user: int = 8) -> None:
    """ml-1m's three files (`::`-separated) with a small seeded log: every user rates `per_user` movies."""
    rng = np.random.default_rng(0)
    genres = ("Comedy", "Drama|Romance", "Action|Thriller")
    ratings = []
    for user in range(1, users + 1):
        for t, movie in enumerate(rng.choice(np.arange(1, movies + 1), size=per_user, replace=False)):
            ratings.append(f"{user}::{movie}::{1 + t % 5}::{978300000 + 100 * t}")
    (root / "ratings.dat").write_text("\n".join(ratings) + "\n")
    (root / "movies.dat").write_text("".join(f"{m}::Movie {m} (1999)::{genres[m % 3]}\n" for m in range(1, movies + 1)))
    (root / "users.dat").write_text("".join(f"{u}::{'FM'[u % 2]}::{(1, 18, 25)[u % 3]}::{u % 7}::00000\n"
                                            for u in range(1, users + 1)))


def test_quick_demo_runs_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "umi.json"
    assert cli_main(["demo", "umi", "--quick", "--out", str(out), "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    for title in ("Table 2", "Table 3", "Table 5", "learned nothing", "global popularity", "seen items excluded"):
        assert title in printed
    result = json.loads(out.read_text())
    table2 = result["seeds"][0]["tables"]["Table 2"]
    assert {"MIND", "MIND+HN", "UMI", "YouTube DNN", POPULARITY} <= set(table2)
    assert set(result["seeds"][0]["tables"]["Table 3"]) == {"UMI", "UMI w/o DAR", "UMI w/o IR", "UMI w/o HN"}


def test_demo_on_tiny_movielens_1m_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tiny_ml1m(tmp_path)
    out = tmp_path / "ml.json"
    assert cli_main(["demo", "umi", "--quick", "--data", str(tmp_path), "--format", "movielens-1m",
                     "--out", str(out), "--jobs", "1"]) == 0
    data = json.loads(out.read_text())["seeds"][0]["data"]
    assert data["source"].startswith("movielens-1m") and data["users"] == 40 and data["items"] == 30
    assert data["profile_fields"] == ["gender", "age", "occupation"]
    assert data["cutoffs"] == list(scaled_cutoffs(30))
    assert "movielens-1m" in capsys.readouterr().out


def test_data_needs_a_file_format(tmp_path: Path) -> None:
    assert cli_main(["demo", "umi", "--quick", "--data", str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2


def test_scaled_cutoffs_keep_the_papers_share() -> None:
    assert scaled_cutoffs(3_706) == (10, 50, 300)
    assert scaled_cutoffs(800) == (2, 11, 65)
    with pytest.raises(ValueError, match="num_items"):
        scaled_cutoffs(0)


def test_serving_never_returns_a_seen_item_and_the_negative_control_does() -> None:
    log = generate_profile_data(replace(PROFILE_QUICK_CONFIG, num_users=100)).interactions
    # N = 300 of 600 items: a barely trained model ranks a row's seen target there about half the time
    cfg = replace(QUICK.pipeline, steps=2, cutoffs=(300,))
    prepared = prepare(log, cfg)
    model = train_model("MIND", prepared, cfg, stream=None)
    # a seen item as the only target: excluded serving can never hit it, kept serving can
    test = prepared.split.test
    seen_target = log.items[test.history_end - 1]
    split = replace(prepared.split, test=replace(test, target_offsets=np.arange(test.num_rows + 1),
                                                 targets=seen_target))
    rigged = replace(prepared, split=split)
    assert evaluate(model, rigged, cfg).hit_rate[300] == 0.0
    assert non_learned_scores(POPULARITY, rigged, cfg).hit_rate[300] == 0.0
    assert evaluate(model, rigged, replace(cfg, seen="kept")).hit_rate[300] > 0.0


@pytest.mark.parametrize(("field", "value"), [("num_interests", 0), ("lr", 0.0), ("cutoffs", ()),
                                              ("seen", "dropped"), ("max_length", 2.5), ("seed", -1),
                                              ("attention_hold", -1), ("lr_cuts", -1), ("lr_factor", 1.0),
                                              ("dtype", "float16"), ("dtype", np.float32)])
def test_pipeline_config_is_validated(field: str, value: object) -> None:
    with pytest.raises((ValueError, TypeError), match=f"cfg.{field}"):
        validate_pipeline_config(replace(UMIPipelineConfig(), **{field: value}))


def test_a_log_without_profiles_is_refused() -> None:
    log = generate_profile_data(replace(PROFILE_QUICK_CONFIG, num_users=50)).interactions
    with pytest.raises(ValueError, match="profile"):
        prepare(replace(log, profile={}, profile_values={}), UMIPipelineConfig())


@pytest.mark.parametrize("hold", [3, 0])
def test_the_attention_is_held_at_its_init_for_the_first_steps(hold: int) -> None:
    # spec/umi.md, "Attention collapse": UGANet's params get no update in the first attention_hold
    # steps; with no hold (the negative control) the same run moves them
    log = generate_profile_data(replace(PROFILE_QUICK_CONFIG, num_users=100)).interactions
    cfg = replace(QUICK.pipeline, steps=3, eval_every=1, patience=5, min_improvement=0.0, lr=0.05,
                  attention_hold=hold)
    prepared = prepare(log, cfg)
    trained = train_model("UMI", prepared, cfg, stream=None)
    assert trained.curve.best_step > 0  # the returned params are trained ones, not the init
    init = umi_init(np.random.Generator(np.random.PCG64(cfg.seed)), umi_config("UMI", prepared, cfg))
    # the pipeline draws in float64 and casts to cfg.dtype (the demo's float32)
    held = all(np.array_equal(trained.params[name], init[name].astype(cfg.dtype))
               for name in init if name.startswith("uga_"))
    assert held == (hold >= trained.curve.best_step)
    assert not np.array_equal(trained.params["item_table"], init["item_table"])


def _held_run(held: tuple[str, ...], hold_steps: int) -> dict[str, np.ndarray]:
    """fit on two params whose gradient is always +1, 8 steps at lr 0.1, validation loss always falling
    (so the last params are kept)."""
    losses = iter(range(100, 0, -1))
    params, _ = fit("fake", {"free": np.zeros(1), "gate": np.zeros(1)},
                    lambda p, _: (0.0, {"free": np.ones(1), "gate": np.ones(1)}), lambda p: float(next(losses)),
                    1.0, TrainConfig(steps=8, eval_every=1, patience=3, lr=0.1), 8, np.random.default_rng(0),
                    stream=None, held=held, hold_steps=hold_steps)
    return params


def test_held_params_start_their_own_adam_state_at_the_release() -> None:
    # UMI's gate hold (spec/umi.md, "Convergence"): a constant gradient moves a fresh Adam state by
    # exactly lr per step, so the gate, held for 5 of 8 steps, moves by 3 lr; the free param by 8 lr
    params = _held_run(("gate",), 5)
    assert np.allclose(params["free"], -0.8, atol=1e-6)
    assert np.allclose(params["gate"], -0.3, atol=1e-6)
    # negative control: the hold as a zeroed gradient under the shared step count (the old way)
    # bias-corrects the gate's fresh moments as if they were 6-8 steps old, a different distance
    state, shared = adam_init({"gate": np.zeros(1)}), {"gate": np.zeros(1)}
    for step in range(1, 9):
        shared, state = adam_step(shared, {"gate": np.full(1, float(step > 5))}, state, AdamConfig(lr=0.1))
    assert abs(float(shared["gate"][0]) + 0.3) > 0.05
    # nothing held, or no hold: both params move alike
    assert np.allclose(_held_run((), 5)["gate"], -0.8, atol=1e-6)
    assert np.allclose(_held_run(("gate",), 0)["gate"], -0.8, atol=1e-6)


@pytest.mark.parametrize(("held", "hold_steps", "error"), [(("nope",), 2, ValueError), ("gate", 2, TypeError),
                                                           (("gate",), -1, ValueError)])
def test_fit_refuses_a_bad_hold(held: object, hold_steps: int, error: type[Exception]) -> None:
    with pytest.raises(error, match="held|hold_steps"):
        fit("fake", {"gate": np.zeros(1)}, lambda p, _: (0.0, {"gate": np.ones(1)}), lambda p: 0.0, 1.0,
            TrainConfig(steps=2), 2, np.random.default_rng(0), stream=None, held=held,  # type: ignore[arg-type]
            hold_steps=hold_steps)


@pytest.mark.parametrize(("held", "error", "match"), [
    (None, TypeError, "held: expected a collection of param names, got None"),
    (3, TypeError, "held: expected a collection of param names, got 3"),
    ((name for name in ["nope"]), ValueError, r"held: expected names of params \(\['gate'\]\), got unknown \['nope'\]"),
])
def test_fit_refuses_a_held_that_is_not_names_of_params(held: object, error: type[Exception], match: str) -> None:
    # a generator of names is read once: the check must not consume what the run then reads
    with pytest.raises(error, match=match):
        fit("fake", {"gate": np.zeros(1)}, lambda p, _: (0.0, {"gate": np.ones(1)}), lambda p: 0.0, 1.0,
            TrainConfig(steps=2), 2, np.random.default_rng(0), stream=None, held=held,  # type: ignore[arg-type]
            hold_steps=1)


def test_a_generator_of_held_names_holds_them() -> None:
    losses = iter(range(100, 0, -1))  # falling: the last params are kept
    params, _ = fit("fake", {"free": np.zeros(1), "gate": np.zeros(1)},
                    lambda p, _: (0.0, {"free": np.ones(1), "gate": np.ones(1)}), lambda p: float(next(losses)),
                    1.0, TrainConfig(steps=2, eval_every=1, lr=0.1), 2, np.random.default_rng(0), stream=None,
                    held=(name for name in ["gate"]), hold_steps=5)
    assert params["gate"][0] == 0.0 and params["free"][0] != 0.0


@pytest.mark.parametrize(("params", "step_loss", "error", "match"), [
    ([np.zeros(1)], 0.0, TypeError, "params: expected a dict of arrays, got list"),
    ({"gate": np.zeros(1)}, float("nan"), ValueError, "step_fn: expected a finite loss at step 1, got nan"),
    ({"gate": np.zeros(1)}, "0.5", TypeError, "step_fn: expected a real loss at step 1, got '0.5'"),
    ({"gate": np.zeros(1)}, 0.5, None, None),  # the control
])
def test_fit_refuses_bad_params_and_losses_by_name(params: object, step_loss: object, error: type[Exception] | None,
                                                   match: str | None) -> None:
    def run() -> None:
        fit("fake", params, lambda p, _: (step_loss, {"gate": np.ones(1)}),  # type: ignore[arg-type, return-value]
            lambda p: 0.0, 1.0, TrainConfig(steps=2, eval_every=2), 2, np.random.default_rng(0), stream=None)

    if error is None:
        run()
        return
    with pytest.raises(error, match=match):
        run()


@pytest.mark.parametrize(("flags", "message"), [
    (["--seeds", "0"], "--seeds: expected a positive integer, got 0"),
    (["--seeds", "-1"], "--seeds: expected a positive integer, got -1"),
    (["--jobs", "0"], "--jobs: expected a positive integer, got 0"),
    (["--steps", "0"], "--steps: expected a positive integer, got 0"),
    (["--negatives", "-2"], "--negatives: expected a positive integer, got -2"),
    (["--out", "{tmp}/no/such/folder/x.json"], "--out: no folder {tmp}/no/such/folder to write into"),
    (["--plot", "{tmp}/no/x.png"], "--plot: no folder {tmp}/no to write into"),
    (["--out", "{tmp}"], "--out: expected a file to write, got '{tmp}'"),
    (["--out", ""], "--out: expected a file to write, got ''"),
    (["--data", "{tmp}", "--format", "movielens-1m"], "--data: {tmp}/ratings.dat: no such file"),
])
def test_bad_flags_are_refused_by_name_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        flags: list[str], message: str) -> None:
    argv = ["demo", "umi", "--quick", "--quiet", "--out", str(tmp_path / "x.json"),
            *(flag.replace("{tmp}", str(tmp_path)) for flag in flags)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert f"refimpl: error: {message.replace('{tmp}', str(tmp_path))}" in err
    assert "seed 0:" not in err  # refused before the data is generated
    assert not (tmp_path / "x.json").exists()


def test_run_refuses_no_seeds_and_bad_jobs() -> None:
    with pytest.raises(ValueError, match=r"cfg.seeds: expected at least one seed, got \(\)"):
        run(replace(QUICK, seeds=()), stream=None)
    with pytest.raises(ValueError, match="jobs: expected a positive integer, got 0"):
        run(QUICK, stream=None, jobs=0)


def test_dtype_flag_overrides_the_float32_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert DEFAULT.pipeline.dtype == "float32"
    assert config_for(_parser().parse_args([])).pipeline.dtype == "float32"
    assert config_for(_parser().parse_args(["--dtype", "float64"])).pipeline.dtype == "float64"
    with pytest.raises(SystemExit) as refused:
        _parser().parse_args(["--dtype", "float16"])
    assert refused.value.code == 2
    assert "argument --dtype: invalid choice: 'float16'" in capsys.readouterr().err


def test_the_pool_order_names_every_model_once() -> None:
    assert sorted(LONGEST_FIRST) == sorted(MODEL_NAMES)


def test_two_processes_report_what_one_does() -> None:
    """The pool is handed the trainings longest first; the report keeps the seeds' and models' order
    and every number (each job is deterministic alone). Negative control: another seed differs."""
    cfg = replace(QUICK, seeds=(0, 1), models=("DSSM", "MIND", "UMI"))
    # the pool's order differs from the report's, so a report in the pool's order would fail below
    assert sorted(cfg.models, key=LONGEST_FIRST.index) != list(cfg.models)

    def numbers(result: Any) -> list[Any]:
        return [(s.seed, [(table, list(rows.items())) for table, rows in s.tables.items()],
                 [(n, {k: v for k, v in r.items() if k != "seconds"}) for n, r in s.training.items()])
                for s in result.seeds]  # lists: the order is compared too

    alone = numbers(run(cfg, stream=None, jobs=1))
    assert numbers(run(cfg, stream=None, jobs=2)) == alone
    assert numbers(run(replace(cfg, seeds=(0, 2)), stream=None, jobs=1)) != alone
