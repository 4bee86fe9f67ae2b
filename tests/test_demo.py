"""`refimpl demo` end to end at a tiny size (spec/demo.md)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

import refimpl.demo as demo
from refimpl.data.synthetic import SyntheticConfig
from refimpl.train import SequenceConfig, TrainConfig

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
        steps=3, batch_size=8, num_negatives=4, dim=8, num_heads=2, num_interests=2,
        pgin_steps=3, pgin_dim=8,
    ),
    cutoffs=(5, 10, 20),
    num_routes=2,
    k_values=(1, 2, 8),
    backend="hnsw",
)

MODELS_1 = {"YouTube DNN", "MIND", "ULIM"}
MODELS_2 = {"ULIM", "ULIM-half-sequence", "ULIM-self-attention"}


def test_the_whole_pipeline_runs_at_a_tiny_size() -> None:
    result = demo.run(TINY, stream=None)
    assert set(result.table1) == MODELS_1
    assert set(result.given_category) == MODELS_2
    assert set(result.table2) == MODELS_2 | {"ULIM-half-sequence (ULIM's routes)"}
    assert set(result.hr_vs_k) == {"1", "2", "8"}
    for table in (result.table1, result.table2, result.given_category, result.hr_vs_k):
        for row in table.values():
            assert list(row) == ["5", "10", "20"]
            assert all(0.0 <= value <= 100.0 for value in row.values())
    assert result.table1["ULIM"] == result.table2["ULIM"]
    assert set(result.training) == MODELS_1 | MODELS_2 | {"PGIN"}
    report = demo.format_report(result)
    for title in ("Table 1", "Table 2", "against K", "paper's Table 1"):
        assert title in report
    json.dumps(asdict(result))


def test_main_writes_json_and_reports_the_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "QUICK", replace(TINY, backend="exact"))
    out, plot = tmp_path / "results.json", tmp_path / "k.png"
    status = demo.main(["--quick", "--out", str(out), "--plot", str(plot), "--seed", "2"])
    assert status == 0
    saved = json.loads(out.read_text())
    assert saved["config"]["data"]["seed"] == 2
    assert saved["config"]["backend"] == "exact"
    assert set(saved["table1"]) == MODELS_1
    captured = capsys.readouterr()
    assert "Table 1" in captured.out
    if importlib.util.find_spec("matplotlib") is None:
        assert "plot skipped" in captured.err and not plot.exists()
    else:
        assert plot.exists()


def test_command_line_overrides_reach_the_config() -> None:
    args = demo._parser().parse_args(["--users", "7", "--items", "300", "--steps", "9"])
    cfg = demo.config_for(args)
    assert (cfg.data.num_users, cfg.data.num_items, cfg.train.steps) == (7, 300, 9)
    assert demo.config_for(demo._parser().parse_args(["--quick"])) == demo.QUICK
