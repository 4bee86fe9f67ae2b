"""`refimpl demo` end to end at a tiny size (spec/demo.md)."""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import asdict, replace
from pathlib import Path

import pytest

import refimpl.demos.ulim as demo
from refimpl import cli
from refimpl.data.synthetic import SyntheticConfig
from refimpl.pipelines.pgin import PGINTrainConfig
from refimpl.pipelines.ulim import SequenceConfig
from refimpl.train import TrainConfig

TINY = demo.DemoConfig(
    data=SyntheticConfig(
        num_categories=6, num_items=120, num_users=30, min_length=60, max_length=80,
        mean_visit_length=8.0, min_interests=2, max_interests=3,
    ),
    seq=SequenceConfig(
        short_length=10, long_length=80, max_subsequence=16, mind_length=16,
        pgin_long_length=16, pgin_short_length=8, pgin_history=6,
    ),
    train=TrainConfig(
        steps=3, eval_every=2, validation_rows=8, batch_size=8, num_negatives=4, dim=8,
        num_heads=2, num_interests=2,
    ),
    pgin=PGINTrainConfig(dim=8, batch_size=8, max_steps=3, eval_every=2),
    cutoffs=(5, 10, 20),
    num_routes=2,
    k_values=(1, 2, 8),
    backend="hnsw",
    seeds=(0, 1, 2),
)

MODELS_1 = {"YouTube DNN", "MIND", "ULIM", demo.POPULARITY, demo.FREQUENCY, demo.FREQUENCY_RECENT}
MODELS_2 = {"ULIM", "ULIM-half-sequence", "ULIM-self-attention"}


def test_the_whole_pipeline_runs_at_a_tiny_size() -> None:
    result = demo.run(TINY, stream=None)
    assert [seed.seed for seed in result.seeds] == [0, 1, 2]
    tables = result.seeds[0].tables
    assert set(tables[demo.TABLE_1]) == MODELS_1
    assert set(tables[demo.GIVEN]) == MODELS_2 | {"in-category popularity", demo.CATALOGUE_SHORT}
    assert set(tables[demo.TABLE_2]) == MODELS_2 | {"ULIM-half-sequence (ULIM's routes)",
                                                    demo.CATALOGUE_SHORT}
    assert set(tables[demo.SHORT_ALONE]) == {"ULIM", demo.CATALOGUE_SHORT}
    assert {row.split("K = ")[1] for row in tables[demo.HR_VS_K]} == {"1", "2", "8"}
    for name in (demo.TABLE_1, demo.TABLE_2, demo.GIVEN, demo.HR_VS_K, demo.SPLITS):
        for row in tables[name].values():
            assert list(row) == ["5", "10", "20"]
            assert all(0.0 <= value <= 100.0 for value in row.values())
    assert tables[demo.TABLE_1]["ULIM"] == tables[demo.TABLE_2]["ULIM"]
    assert set(result.seeds[0].training) == MODELS_2 | {"PGIN", "YouTube DNN", "MIND",
                                                        demo.CATALOGUE_SHORT}
    assert len(result.values(demo.TABLE_1, "ULIM", "5")) == 3
    assert {claim["verdict"] for claim in result.claims} <= {
        "reproduced", "reversed", "not beyond the spread"}
    report = demo.format_report(result)
    for title in ("Table 1", "Table 2", "against K", "paper's Table 1", "learned-nothing", " +- "):
        assert title in report
    json.dumps(asdict(result))


def test_seeds_in_processes_give_the_same_numbers() -> None:
    cfg = replace(TINY, seeds=(0, 1), backend="exact")
    alone = demo.run(cfg, stream=None)
    together = demo.run(cfg, stream=None, jobs=2)
    assert [s.tables for s in alone.seeds] == [s.tables for s in together.seeds]


def test_main_writes_json_and_reports_the_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "QUICK", replace(TINY, backend="exact"))
    out, plot = tmp_path / "results.json", tmp_path / "k.png"
    status = demo.main(["--quick", "--out", str(out), "--plot", str(plot), "--seeds", "1",
                        "--jobs", "1"])
    assert status == 0
    saved = json.loads(out.read_text())
    assert saved["config"]["seeds"] == [0]
    assert saved["config"]["backend"] == "exact"
    assert set(saved["seeds"][0]["tables"]["Table 1"]) == MODELS_1
    captured = capsys.readouterr()
    assert "Table 1" in captured.out
    if importlib.util.find_spec("matplotlib") is None:
        assert "plot skipped" in captured.err and not plot.exists()
    else:
        assert plot.exists()


def test_command_line_overrides_reach_the_config() -> None:
    args = demo._parser().parse_args(["--users", "7", "--items", "300", "--steps", "9",
                                      "--seeds", "4"])
    cfg = demo.config_for(args)
    assert (cfg.data.num_users, cfg.data.num_items, cfg.train.steps) == (7, 300, 9)
    assert cfg.seeds == (0, 1, 2, 3)
    assert demo.config_for(demo._parser().parse_args(["--quick"])) == demo.QUICK
    assert demo.config_for(demo._parser().parse_args(["--quick", "--seen", "excluded"])).seen == "excluded"


def test_one_seed_claims_no_ordering_and_counts_print_as_integers() -> None:
    result = demo.run(replace(TINY, seeds=(0,), backend="exact"), stream=None)
    assert {claim["verdict"] for claim in result.claims} == {demo.FEW_SEEDS.format(seeds=1)}
    report = demo.format_report(result)
    assert "not beyond the spread" not in report
    users = re.search(r"taste agreement users (\S+)", report)
    assert users is not None and users.group(1).rstrip(";").isdigit(), report


GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi")


def write_movielens_1m(root: Path, users: int = 24, movies: int = 90, per_user: int = 36) -> None:
    """Tiny files in the ml-1m format: `users` users rating `per_user` of `movies` movies each, in
    time order, each movie of one or two of six genres (the first listed is its category)."""
    import numpy as np

    rng = np.random.default_rng(0)
    root.mkdir()
    (root / "movies.dat").write_text("".join(
        f"{m}::Movie {m} (2000)::{GENRES[m % 6]}{'|' + GENRES[(m + 1) % 6] if m % 3 == 0 else ''}\n"
        for m in range(1, movies + 1)), encoding="latin-1")
    (root / "users.dat").write_text("".join(
        f"{u}::{'FM'[u % 2]}::{(18, 25, 35)[u % 3]}::{u % 5}::0000{u}\n" for u in range(1, users + 1)))
    lines = []
    for u in range(1, users + 1):
        liked = rng.permutation(6)[:2]  # two genres most of a user's ratings come from
        pool = [m for m in range(1, movies + 1) if m % 6 in liked]
        others = [m for m in range(1, movies + 1) if m % 6 not in liked]
        chosen = rng.choice(pool, size=per_user * 2 // 3, replace=False).tolist() + rng.choice(
            others, size=per_user - per_user * 2 // 3, replace=False).tolist()
        for t, m in enumerate(rng.permutation(chosen)):
            lines.append(f"{u}::{m}::{int(rng.integers(1, 6))}::{978300000 + 100 * t}\n")
    (root / "ratings.dat").write_text("".join(lines))


ON_FILES = replace(
    TINY, seeds=(0,), backend="exact",
    seq=replace(TINY.seq, min_position=5),
    train=replace(TINY.train, validation_rows=16),
    pgin=replace(TINY.pgin, validation_rows=8),
)


def test_demo_ulim_runs_on_movielens_1m_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`refimpl demo ulim --data DIR --format movielens-1m` on generated files prints its tables (the
    --quick size made tiny), with the log's source and the seen-item policy used."""
    write_movielens_1m(tmp_path / "ml-1m")
    monkeypatch.setattr(demo, "QUICK", ON_FILES)
    out = tmp_path / "results.json"
    status = cli.main(["demo", "ulim", "--quick", "--data", str(tmp_path / "ml-1m"), "--format",
                       "movielens-1m", "--seen", "excluded", "--out", str(out)])
    assert status == 0
    captured = capsys.readouterr().out
    for title in ("Table 1", "Table 2", "against K", "top-K accuracy", "learned-nothing"):
        assert title in captured
    assert "24 users, 90 items, 6 categories" in captured
    assert "leave-last-out" in captured and "seen items excluded" in captured
    assert "Planted-truth" not in captured  # no planted truth in a user's log
    saved = json.loads(out.read_text())
    assert saved["config"]["data_format"] == "movielens-1m"
    assert set(saved["seeds"][0]["tables"]["Table 1"]) == MODELS_1


def test_demo_dispatch_defaults_to_ulim_and_names_the_demos(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(demo, "main", lambda argv: calls.append(argv) or 0)
    assert cli.main(["demo", "--quick"]) == 0
    assert cli.main(["demo", "ulim", "--seeds", "1"]) == 0
    assert calls == [["--quick"], ["--seeds", "1"]]
    assert cli.main(["demo", "nonesuch", "--quick"]) == 2
    assert "no demo named 'nonesuch'; the demos are ulim" in capsys.readouterr().err
    assert calls == [["--quick"], ["--seeds", "1"]]  # negative control: nothing ran


def test_data_and_format_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        demo.main(["--data", "somewhere"])
    assert "--data and --format go together" in capsys.readouterr().err


def test_without_ablations_table_2_and_its_claims_are_omitted_and_table_1_is_whole() -> None:
    result = demo.run(replace(TINY, ablations=False, backend="exact"), stream=None)
    tables = result.seeds[0].tables
    assert demo.TABLE_2 not in tables and set(tables[demo.TABLE_1]) == MODELS_1
    assert set(result.seeds[0].training) == {"PGIN", "YouTube DNN", "MIND", "ULIM"}
    assert not any("Table 2" in claim["claim"] for claim in result.claims)
    assert any("Table 1" in claim["claim"] for claim in result.claims)
    assert "Table 2 (ablations): not run" in demo.format_report(result)
    assert demo.config_for(demo._parser().parse_args(["--ablations"])).ablations
    assert not demo.DEFAULT.ablations


@pytest.mark.parametrize(("demo_name", "flags", "message"), [
    ("ulim", ["--seeds", "0"], "--seeds: expected a positive integer, got 0"),
    ("ulim", ["--jobs", "0"], "--jobs: expected a positive integer, got 0"),
    ("ulim", ["--threads", "0"], "--threads: expected a positive integer, got 0"),
    ("ulim", ["--items", "-5"], "--items: expected a positive integer, got -5"),
    ("ulim", ["--out", "{tmp}/no/such/folder/x.json"], "--out: no folder {tmp}/no/such/folder to write into"),
    ("ulim", ["--plot", "{tmp}"], "--plot: expected a file to write, got '{tmp}'"),
    ("ifa", ["--seeds", "-1"], "--seeds: expected a positive integer, got -1"),
    ("ifa", ["--patience", "0"], "--patience: expected a positive integer, got 0"),
    ("ifa", ["--out", ""], "--out: expected a file to write, got ''"),
    ("ifa", ["--out", "{tmp}/no/x.json"], "--out: no folder {tmp}/no to write into"),
])
def test_bad_flags_are_refused_by_name_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        demo_name: str, flags: list[str], message: str) -> None:
    argv = ["demo", demo_name, "--quick", "--quiet", "--out", str(tmp_path / "x.json"),
            *(flag.replace("{tmp}", str(tmp_path)) for flag in flags)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"refimpl: error: {message.replace('{tmp}', str(tmp_path))}" in err
    assert not (tmp_path / "x.json").exists()  # refused before the run
