"""tools/umi_convergence.py and tools/bench_umi_step.py refuse bad options by name before any data is
generated or model trained (a bad `--set` value was a traceback from int() or a silently wrong tuple)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from refimpl.demos.umi import DEFAULT

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_set_reads_each_field_as_its_type() -> None:
    cfg = _tool("umi_convergence").overridden(DEFAULT.pipeline, ["steps=1500", "lr_factor=0.5", "cutoffs=5,20",
                                                                 "seen=kept", "dtype=float32", "batch_size=64"])
    assert (cfg.steps, cfg.lr_factor, cfg.cutoffs, cfg.seen, cfg.dtype, cfg.batch_size) == (1500, 0.5, (5, 20), "kept",
                                                                                             "float32", 64)


@pytest.mark.parametrize(("setting", "message"), [
    ("steps=2.5", "--set steps=2.5: expected an integer for steps"),
    ("lr_cuts", "--set: expected FIELD=VALUE, got 'lr_cuts'"),
    ("cutoffs=10,x", "--set cutoffs=10,x: expected comma-separated integers for cutoffs"),
    ("lr_factor=1.5", "--set: cfg.lr_factor: expected a factor in (0, 1), got 1.5"),
    ("attention_hold=-1", "--set: cfg.attention_hold: expected an integer >= 0, got -1"),
    ("nope=1", "--set: unknown field 'nope'"),
    ("dtype=float16", "--set: cfg.dtype: expected one of ('float64', 'float32'), got 'float16'"),
])
def test_bad_set_values_are_refused_by_name(setting: str, message: str) -> None:
    with pytest.raises(SystemExit, match=message.replace("(", r"\(").replace(")", r"\)")):
        _tool("umi_convergence").overridden(DEFAULT.pipeline, [setting])


@pytest.mark.parametrize(("tool", "argv", "message"), [
    ("umi_convergence", ["--models", "UMI,UMl"], "--models: unknown ['UMl']"),
    ("umi_convergence", ["--users", "0"], "--users: expected a positive integer, got 0"),
    ("umi_convergence", ["--set", "steps=x"], "--set steps=x: expected an integer for steps"),
    ("bench_umi_step", ["--repeats", "0"], "--repeats: expected an integer >= 1, got 0"),
    ("bench_umi_step", ["--profile-steps", "0"], "--profile-steps: expected an integer >= 1, got 0"),
    ("bench_umi_step", ["--curve", "-3"], "--curve: expected an integer >= 0, got -3"),
    ("bench_umi_step", ["--against", "no-such-rev"], "--against: no git revision 'no-such-rev' in this repository"),
    ("bench_umi_step", ["--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
    ("umi_cell_oracle", ["--seeds", "0", "-1"], "--seeds: expected seeds >= 0, got [0, -1]"),
])
def test_tools_refuse_bad_options_before_any_work(tool: str, argv: list[str], message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        _tool(tool).main(argv)
    assert message in capsys.readouterr().err + str(stop.value.code)
