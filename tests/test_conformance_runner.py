"""The conformance runner: the reference passes, broken implementations fail with a precise report,
the results-folder route, expectations (skip/xfail/tolerance), report formats and the CLI."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from refimpl.cli import main
from refimpl.conformance import (
    export_results,
    load_expectations,
    reference_adapter,
    run_conformance,
    run_results,
)
from refimpl.conformance.report import format_table, to_json, to_junit
from refimpl.conformance.runner import AdapterFn, select_cases
from refimpl.golden import default_golden_root

MHSA = ["mhsa"]


def _small_mhsa_case() -> str:
    """An MHSA case that stores its attention weights (case names may change; roles do not)."""
    cases = select_cases(default_golden_root(), MHSA)
    return next(c.case_id for c in cases if c.entries("intermediate"))


SMALL = _small_mhsa_case()


def _perturbed(fn: AdapterFn, name: str, factor: float) -> AdapterFn:
    """The reference with one returned tensor scaled by `factor`."""
    def run(inputs: Any, params: Any, config: Any, upstream: Any) -> Mapping[str, Any]:
        out = dict(fn(inputs, params, config, upstream))
        out[name] = out[name] * factor
        return out

    return run


def _adapter_with(component: str, fn: AdapterFn) -> dict[str, AdapterFn]:
    adapter = reference_adapter()
    adapter[component] = fn
    return adapter


def test_reference_passes_every_case_float64() -> None:
    report = run_conformance(reference_adapter())
    assert report.ok, format_table(report)
    assert report.results and all(r.status == "pass" for r in report.results)


def test_reference_passes_every_case_float32() -> None:
    report = run_conformance(reference_adapter(), dtype="float32")
    assert report.ok, format_table(report)
    assert all(r.status == "pass" for r in report.results)


def test_relative_error_of_1e_minus_4_fails_naming_case_and_tensor() -> None:
    broken = _perturbed(reference_adapter()["mhsa"], "out", 1 + 1e-4)
    report = run_conformance(_adapter_with("mhsa", broken), components=MHSA)
    assert not report.ok
    failing = [r for r in report.results if r.status == "fail"]
    assert failing and all(r.failing_names == ["out"] for r in failing)
    text = failing[0].text
    assert "out:" in text and "outside atol" in text and "max |diff|" in text


def test_float32_output_under_float64_run_is_a_dtype_failure() -> None:
    reference = reference_adapter()["mhsa"]

    def as_float32(inputs: Any, params: Any, config: Any, upstream: Any) -> Mapping[str, Any]:
        return {k: v.astype(np.float32) for k, v in reference(inputs, params, config, upstream).items()}

    report = run_conformance(_adapter_with("mhsa", as_float32), components=MHSA)
    result = report.results[0]
    assert result.status == "fail"
    assert "dtype float32, expected float64" in result.text


def test_wrong_shape_reported_before_values() -> None:
    reference = reference_adapter()["mhsa"]

    def transposed(inputs: Any, params: Any, config: Any, upstream: Any) -> Mapping[str, Any]:
        out = dict(reference(inputs, params, config, upstream))
        out["d_x"] = np.swapaxes(out["d_x"], 0, 1)
        out["out"] = out["out"] * 2
        return out

    report = run_conformance(_adapter_with("mhsa", transposed), components=MHSA, cases=[SMALL])
    lines = report.results[0].text.splitlines()
    assert lines[1].startswith("  [shape] d_x: shape")
    assert lines[2].startswith("  [values] out:")


def test_first_divergent_intermediate_is_named() -> None:
    broken = _perturbed(reference_adapter()["mhsa"], "attn_weights", 1.01)
    report = run_conformance(_adapter_with("mhsa", broken), components=MHSA, cases=[SMALL])
    assert report.results[0].first_divergent_intermediate == "attn_weights"


def test_missing_output_and_missing_component() -> None:
    reference = reference_adapter()["mhsa"]

    def no_grads(inputs: Any, params: Any, config: Any, upstream: Any) -> Mapping[str, Any]:
        return {"out": reference(inputs, params, config, upstream)["out"]}

    report = run_conformance(_adapter_with("mhsa", no_grads), components=MHSA)
    assert all(r.status == "fail" and "d_x" in r.failing_names for r in report.results)
    assert "[missing] d_x: not returned (required grad)" in report.results[0].text
    assert "missing: d_x" in format_table(report)
    unsupported = run_conformance({}, components=MHSA)
    assert {r.status for r in unsupported.results} == {"unsupported"}
    assert not unsupported.ok and unsupported.compared == 0


def test_not_implemented_is_unsupported_and_crash_is_error() -> None:
    def not_implemented(*args: Any) -> Mapping[str, Any]:
        raise NotImplementedError("no masks yet")

    def crash(*args: Any) -> Mapping[str, Any]:
        raise RuntimeError("boom")

    report = run_conformance({"mhsa": not_implemented}, components=MHSA)
    assert {r.status for r in report.results} == {"unsupported"}
    assert report.results[0].reason == "no masks yet"
    report = run_conformance({"mhsa": crash}, components=MHSA)
    assert not report.ok and report.results[0].reason == "RuntimeError: boom"


def test_results_folder_route(tmp_path: Path) -> None:
    export_results(reference_adapter(), tmp_path, components=MHSA)
    assert run_results(tmp_path, components=MHSA).ok
    (tmp_path / SMALL / "d_Wq.npy").unlink()
    report = run_results(tmp_path, components=MHSA)
    broken = next(r for r in report.results if r.case_id == SMALL)
    assert broken.status == "fail" and broken.failing_names == ["d_Wq"]
    for folder in (tmp_path / "mhsa").iterdir():
        if f"mhsa/{folder.name}" != SMALL:
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()
    statuses = {r.case_id: r.status for r in run_results(tmp_path, components=MHSA).results}
    assert statuses["mhsa/realistic"] == "unsupported"


def test_expectations_skip_xfail_xpass_tolerance_and_unmatched(tmp_path: Path) -> None:
    path = tmp_path / "expect.toml"
    path.write_text(
        '[[skip]]\ncase = "mhsa/realistic"\nreason = "too big for us"\n'
        f'[[xfail]]\ncase = "{SMALL}"\nreason = "known bug #1"\n'
        '[[xfail]]\ncase = "mhsa/large_*"\nreason = "known bug #2"\n'
        '[[tolerance]]\ncase = "target_attention/*"\ntensor = "out"\nrtol = 1e-3\natol = 0\nreason = "tf32"\n'
        '[[skip]]\ncase = "nothing/*"\nreason = "stale"\n'
    )
    expectations = load_expectations(path)
    broken = _perturbed(reference_adapter()["mhsa"], "out", 1 + 1e-4)
    adapter = _adapter_with("mhsa", broken)
    adapter["target_attention"] = _perturbed(reference_adapter()["target_attention"], "out", 1 + 1e-4)
    report = run_conformance(adapter, components=["mhsa", "target_attention"], expectations=expectations)
    statuses = {r.case_id: r.status for r in report.results}
    assert statuses["mhsa/realistic"] == "skip"
    assert statuses[SMALL] == "xfail"
    assert all(s == "pass" for c, s in statuses.items() if c.startswith("target_attention"))
    loosened = next(r for r in report.results if r.case_id.startswith("target_attention"))
    assert "rtol 1e-07 -> 0.001" in loosened.loosened[0] and "tf32" in loosened.loosened[0]
    assert any("'nothing/*' matches no case" in w for w in report.warnings)
    assert "tolerance loosened" in format_table(report)
    xpass = run_conformance(reference_adapter(), components=MHSA, expectations=expectations)
    assert not xpass.ok
    assert {r.status for r in xpass.results if r.case_id == SMALL} == {"xpass"}


def test_expectations_file_errors_name_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[xfail]]\ncase = "mhsa/*"\n')
    with pytest.raises(ValueError, match=r"xfail\[0\] \('mhsa/\*'\) needs a non-empty 'reason'"):
        load_expectations(path)


def test_json_and_junit_reports() -> None:
    broken = _perturbed(reference_adapter()["mhsa"], "d_Wq", -1.0)
    report = run_conformance(_adapter_with("mhsa", broken), components=MHSA)
    document = json.loads(to_json(report))
    assert document["ok"] is False
    case = next(c for c in document["cases"] if c["case_id"] == SMALL)
    tensor = next(t for t in case["tensors"] if t["name"] == "d_Wq")
    assert tensor["passed"] is False and tensor["mismatched"] > 0
    suite = ET.fromstring(to_junit(report))
    assert suite.get("failures") == str(sum(r.status == "fail" for r in report.results))
    assert suite.find("testcase/failure") is not None


def test_cli_conform_reference_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conform", "--component", "mhsa"]) == 0
    out = capsys.readouterr().out
    assert SMALL in out and "PASS" in out and "OK:" in out


def test_cli_conform_broken_adapter_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "my_broken_impl.py").write_text(
        "from refimpl.conformance import reference_adapter\n"
        "def ADAPTER():\n"
        "    adapter = reference_adapter()\n"
        "    good = adapter['mhsa']\n"
        "    def bad(i, p, c, u):\n"
        "        out = dict(good(i, p, c, u))\n"
        "        out['d_x'] = out['d_x'] * 1.001\n"
        "        return out\n"
        "    adapter['mhsa'] = bad\n"
        "    return adapter\n"
    )
    monkeypatch.chdir(tmp_path)
    junit = tmp_path / "report.xml"
    code = main(["conform", "--adapter", "my_broken_impl:ADAPTER", "--component", "mhsa",
                 "--junit", str(junit), "--json", str(tmp_path / "report.json")])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL" in out and "values: d_x" in out and "FAILED:" in out
    assert ET.parse(junit).getroot().get("failures") != "0"


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conform", "--adapter", "no_colon_here"]) == 2
    assert "expected 'package.module:object'" in capsys.readouterr().err
    assert main(["conform", "--dtype", "float32", "--expectations", "/nonexistent.toml"]) == 2


def test_cli_no_case_selected_fails() -> None:
    assert main(["conform", "--case", "no/such/case"]) == 1


def test_cli_golden_verify_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["golden", "verify", "--component", "target_attention"]) == 0
    assert main(["golden", "list"]) == 0
    assert "mhsa/realistic" in capsys.readouterr().out
