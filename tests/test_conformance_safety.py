"""The runner as a tool in another project's CI (issue 11): never green by accident, a strict expectations
file, a report that says what happened, the results-folder contract. Every check has its negative control:
the same run with the mistake removed gives the opposite answer."""

from __future__ import annotations

import json
import shutil
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from refimpl import __version__
from refimpl.cli import main
from refimpl.conformance import export_results, load_expectations, reference_adapter, run_conformance, run_results
from refimpl.conformance.report import format_table, to_json, to_junit
from refimpl.conformance.runner import AdapterFn, UsageError, select_cases
from refimpl.golden import default_golden_root
from refimpl.golden.compare import compare_arrays
from refimpl.golden.manifest import check_manifest, write_manifest

REFERENCE = reference_adapter()
SOFTMAX_TINY = "sampled_softmax/tiny"  # scalar loss, bool intermediate negative_kept (2, 2)
MHSA_TINY = "mhsa/tiny_hand"  # intermediates attn_weights, context


def _changed(component: str, change: Any) -> AdapterFn:
    """The reference of `component` with `change(out_dict)` applied to what it returns."""
    reference = REFERENCE[component]

    def run(inputs: Any, params: Any, config: Any, upstream: Any) -> Mapping[str, Any]:
        out = dict(reference(inputs, params, config, upstream))
        change(out)
        return out

    return run


def _scaled(component: str, name: str, factor: float) -> AdapterFn:
    return _changed(component, lambda out: out.update({name: out[name] * factor}))


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> None:
    """A module `name` in a folder the CLI imports adapters from (the current folder)."""
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))


# --- never green by accident ---------------------------------------------------------------------------


def test_all_unsupported_exits_1_and_says_nothing_was_compared(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _module(tmp_path, monkeypatch, "partial_impl",
            "from refimpl.conformance import reference_adapter\n"
            "def todo(*args):\n    raise NotImplementedError('later')\n"
            "UNSUPPORTED = {'mhsa': todo}\n"
            "WORKING = {'mhsa': reference_adapter()['mhsa']}\n")
    code, out = _cli(["conform", "--adapter", "partial_impl:UNSUPPORTED", "--component", "mhsa"], capsys)
    assert code == 1 and "FAILED: no case was compared" in out
    code, out = _cli(["conform", "--adapter", "partial_impl:WORKING", "--component", "mhsa"], capsys)
    assert code == 0 and "OK:" in out


def test_empty_results_folder_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _cli(["conform", "--results", str(tmp_path), "--component", "mhsa"], capsys)
    assert code == 1 and "no case was compared" in out
    export_results(REFERENCE, tmp_path, components=["mhsa"])
    code, out = _cli(["conform", "--results", str(tmp_path), "--component", "mhsa"], capsys)
    assert code == 0, out


def test_misspelt_component_on_the_command_line_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _cli(["conform", "--component", "msha"], capsys)
    assert code == 2
    assert "'msha' (did you mean 'mhsa'?)" in out and "Golden components: adam, attention," in out
    assert _cli(["conform", "--component", "mhsa"], capsys)[0] == 0


def test_misspelt_component_in_an_adapter_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    _module(tmp_path, monkeypatch, "typo_impl",
            "from refimpl.conformance import reference_adapter\n"
            "TYPO = {'msha': reference_adapter()['mhsa']}\n"
            "RIGHT = {'mhsa': reference_adapter()['mhsa']}\n")
    code, out = _cli(["conform", "--adapter", "typo_impl:TYPO"], capsys)
    assert code == 2 and "adapter: not a golden component: 'msha' (did you mean 'mhsa'?)" in out
    assert _cli(["conform", "--adapter", "typo_impl:RIGHT", "--component", "mhsa"], capsys)[0] == 0
    with pytest.raises(UsageError, match="did you mean 'mhsa'"):
        run_conformance({"msha": REFERENCE["mhsa"]})


def test_strict_fails_on_an_unsupported_case() -> None:
    only_mhsa = {"mhsa": REFERENCE["mhsa"]}
    selection = {"components": ["mhsa", "target_attention"]}
    assert run_conformance(only_mhsa, **selection).ok
    strict = run_conformance(only_mhsa, strict=True, **selection)
    assert not strict.ok
    assert "(fails under --strict)" in format_table(strict)
    assert run_conformance(REFERENCE, strict=True, **selection).ok


def test_a_hanging_case_times_out_as_an_error_and_the_run_goes_on() -> None:
    release = threading.Event()
    reference = REFERENCE["mhsa"]

    def hangs_on_realistic(inputs: Any, params: Any, config: Any, upstream: Any) -> Mapping[str, Any]:
        if inputs["x"].shape[0] == 8:  # mhsa/realistic only (its batch of 8)
            release.wait()
        return reference(inputs, params, config, upstream)

    try:
        report = run_conformance({"mhsa": hangs_on_realistic}, components=["mhsa"], timeout=0.5)
    finally:
        release.set()
    statuses = {r.case_id: r.status for r in report.results}
    assert statuses["mhsa/realistic"] == "error" and not report.ok
    assert "timed out after 0.5 s" in next(r.reason for r in report.results if r.case_id == "mhsa/realistic")
    assert [s for c, s in statuses.items() if c != "mhsa/realistic"] == ["pass"] * (len(statuses) - 1)
    assert run_conformance({"mhsa": hangs_on_realistic}, components=["mhsa"], timeout=0.5).ok  # released: passes


def test_system_exit_from_an_adapter_is_an_error_of_that_case() -> None:
    reference = REFERENCE["mhsa"]

    def exits_on_realistic(inputs: Any, params: Any, config: Any, upstream: Any) -> Mapping[str, Any]:
        if inputs["x"].shape[0] == 8:  # mhsa/realistic only
            sys.exit(3)
        return reference(inputs, params, config, upstream)

    report = run_conformance({"mhsa": exits_on_realistic}, components=["mhsa"])
    exited = next(r for r in report.results if r.case_id == "mhsa/realistic")
    assert exited.status == "error" and exited.reason.startswith("SystemExit: 3")
    assert sum(r.status == "pass" for r in report.results) == len(report.results) - 1


def test_a_factory_that_raises_is_a_usage_error_with_its_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _module(tmp_path, monkeypatch, "factory_impl",
            "from refimpl.conformance import reference_adapter\n"
            "def BROKEN():\n    raise RuntimeError('no GPU found')\n"
            "def WORKING():\n    return {'mhsa': reference_adapter()['mhsa']}\n")
    code, out = _cli(["conform", "--adapter", "factory_impl:BROKEN"], capsys)
    assert code == 2
    assert "the factory factory_impl:BROKEN() raised RuntimeError: no GPU found (at " in out
    assert "factory_impl.py:3 in BROKEN" in out and "Traceback" not in out
    assert _cli(["conform", "--adapter", "factory_impl:WORKING", "--component", "mhsa"], capsys)[0] == 0


# --- a strict expectations file ------------------------------------------------------------------------


def _expectations(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "expect.toml"
    path.write_text(text)
    return path


def test_an_unknown_key_is_refused_naming_it_and_the_allowed_ones(tmp_path: Path) -> None:
    misspelt = '[[tolerance]]\ncase = "mhsa/*"\ntensors = "attn*"\nrtol = 0\natol = 1.0\nreason = "r"\n'
    with pytest.raises(ValueError, match=r"tolerance\[0\]: unknown key 'tensors' \(allowed: case, tensor, rtol, "
                                         r"atol, reason\)"):
        load_expectations(_expectations(tmp_path, misspelt))
    assert load_expectations(_expectations(tmp_path, misspelt.replace("tensors", "tensor"))).tolerances
    with pytest.raises(ValueError, match=r"unknown table 'xfails' \(allowed: \[\[skip\]\], \[\[xfail\]\]"):
        load_expectations(_expectations(tmp_path, '[[xfails]]\ncase = "mhsa/*"\nreason = "r"\n'))


def test_a_tolerance_needs_a_tensor_and_applies_only_to_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a 'tensor' pattern"):
        load_expectations(_expectations(tmp_path, '[[tolerance]]\ncase = "*"\nrtol = 0\natol = 1\nreason = "r"\n'))
    scaled_out = {"mhsa": _scaled("mhsa", "out", 1.01)}

    def run(tensor: str) -> bool:
        entry = f'[[tolerance]]\ncase = "mhsa/*"\ntensor = "{tensor}"\nrtol = 0.05\natol = 0\nreason = "loose"\n'
        expectations = load_expectations(_expectations(tmp_path, entry))
        return run_conformance(scaled_out, components=["mhsa"], expectations=expectations).ok

    assert not run("attn*")  # loosening the attention weights leaves the output's tolerance alone
    assert run("out")


def test_the_cli_refuses_a_bad_expectations_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _expectations(tmp_path, '[[skip]]\ncase = "mhsa/*"\nreson = "typo"\n')
    code, out = _cli(["conform", "--component", "mhsa", "--expectations", str(path)], capsys)
    assert code == 2 and "unknown key 'reson'" in out


# --- a report that says what happened ------------------------------------------------------------------


def test_shape_failure_is_named_as_such_without_a_worst_value() -> None:
    adapter = {"sampled_softmax": _changed("sampled_softmax", lambda out: out.update(loss=out["loss"].reshape(1)))}
    report = run_conformance(adapter, cases=[SOFTMAX_TINY])
    row = next(line for line in format_table(report).splitlines() if line.startswith(SOFTMAX_TINY))
    assert row.split()[1:4] == ["FAIL", "-", "shape:"], row
    assert "loss: shape (1,), expected (); scalars have shape ()" in report.results[0].text
    assert "diverges" not in format_table(report)
    assert json.loads(to_json(report))["cases"][0]["failures"] == {"shape": ["loss"]}
    assert 'message="fail: shape: loss"' in to_junit(report)
    assert run_conformance({"sampled_softmax": REFERENCE["sampled_softmax"]}, cases=[SOFTMAX_TINY]).ok


def test_bool_failure_counts_elements_and_names_the_first() -> None:
    def flip(out: dict[str, Any]) -> None:
        kept = out["negative_kept"].copy()
        kept[1, 0] = not kept[1, 0]
        out["negative_kept"] = kept

    report = run_conformance({"sampled_softmax": _changed("sampled_softmax", flip)}, cases=[SOFTMAX_TINY])
    text = report.results[0].text
    case = select_cases(default_golden_root(), cases=[SOFTMAX_TINY])[0]
    expected = bool(case.load(next(t for t in case.tensors if t.name == "negative_kept"))[1, 0])
    assert f"negative_kept: 1 of 4 elements differ; first at [1, 0]: {not expected} where {expected} expected" in text
    assert "max |diff|" not in text and "rel diff" not in text
    assert "first divergent intermediate: negative_kept" in text
    row = next(line for line in format_table(report).splitlines() if line.startswith(SOFTMAX_TINY))
    assert "values: negative_kept" in row


def test_relative_difference_only_where_the_expected_value_is_not_zero() -> None:
    expected = np.array([0.0, 2.0])
    only_at_zero = compare_arrays("y", np.array([1e-3, 2.0]), expected, 1e-7, 1e-9)
    text = only_at_zero.describe()
    assert not only_at_zero.passed and "rel diff" not in text and "inf" not in text
    at_nonzero = compare_arrays("y", np.array([0.0, 2.2]), expected, 1e-7, 1e-9)
    assert "max rel diff 0.1 at [1] (where expected != 0)" in at_nonzero.describe()


def test_an_error_names_the_adapter_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _module(tmp_path, monkeypatch, "crashing_impl",
            "import numpy as np\n"
            "def mhsa(inputs, params, config, upstream):\n"
            "    return {'out': np.reshape(inputs['x'], (2, 5, 1))}\n"
            "ADAPTER = {'mhsa': mhsa}\n")
    code, out = _cli(["conform", "--adapter", "crashing_impl:ADAPTER", "--case", MHSA_TINY], capsys)
    assert code == 1
    row = next(line for line in out.splitlines() if line.startswith(MHSA_TINY))
    assert "ERROR" in row and "ValueError: cannot reshape array" in row
    assert "crashing_impl.py:3 in mhsa" in row
    assert 'File "' not in out  # the traceback only with --verbose
    code, out = _cli(["conform", "--adapter", "crashing_impl:ADAPTER", "--case", MHSA_TINY, "--verbose"], capsys)
    assert f'File "{tmp_path / "crashing_impl.py"}", line 3, in mhsa' in out and "fromnumeric.py" in out


def test_misspelt_and_missing_intermediates_are_listed() -> None:
    def misspell(out: dict[str, Any]) -> None:
        out["attn_weight"] = out.pop("attn_weights")
        del out["context"]
        out["out"] = out["out"] * 1.01

    result = run_conformance({"mhsa": _changed("mhsa", misspell)}, cases=[MHSA_TINY]).results[0]
    assert "intermediates compared: 0 of the 2 stored; not returned: attn_weights, context" in result.text
    assert "'attn_weight' (did you mean 'attn_weights'?)" in result.text
    assert "no intermediate was returned: return attn_weights, context to locate the divergence" in result.text
    control = run_conformance({"mhsa": _scaled("mhsa", "out", 1.01)}, cases=[MHSA_TINY]).results[0]
    assert "intermediates compared: 2 of the 2 stored" in control.text and "not returned" not in control.text


def test_where_the_divergence_must_be() -> None:
    output_only = run_conformance({"mhsa": _scaled("mhsa", "out", 1.01)}, cases=[MHSA_TINY]).results[0]
    assert "every compared intermediate matches: the divergence is after the last matching intermediate, context" \
        in output_only.text
    weights = run_conformance({"mhsa": _scaled("mhsa", "attn_weights", 1.01)}, cases=[MHSA_TINY]).results[0]
    assert "first divergent intermediate: attn_weights" in weights.text and "every compared" not in weights.text
    grads_only = run_conformance({"mhsa": _scaled("mhsa", "d_Wq", 1.01)}, cases=[MHSA_TINY]).results[0]
    assert "forward outputs match, only gradients differ: check the backward" in grads_only.text
    assert "check the backward" not in output_only.text


def test_self_check_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = _cli(["conform", "--component", "linear"], capsys)
    assert code == 0 and "self-check: no --adapter or --results given" in out
    _module(tmp_path, monkeypatch, "linear_impl",
            "from refimpl.conformance import reference_adapter\nADAPTER = {'linear': reference_adapter()['linear']}\n")
    code, out = _cli(["conform", "--adapter", "linear_impl:ADAPTER", "--component", "linear"], capsys)
    assert code == 0 and "self-check" not in out


def test_help_shows_the_adapter_signature_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["conform", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "def my_mhsa(inputs: dict[str, np.ndarray], params: dict[str, np.ndarray]," in out
    assert "refimpl conform --adapter my_port.conformance:ADAPTER" in out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"refimpl {__version__}"


def test_every_report_names_version_and_suite() -> None:
    report = run_conformance(REFERENCE, components=["linear"])
    suite = check_manifest(default_golden_root())
    assert f"refimpl {__version__} conformance, golden suite {suite}: " in format_table(report)
    assert f'"refimpl_version": "{__version__}",\n  "suite_id": "{suite}"' in to_json(report)
    junit = to_junit(report)
    assert f'name="refimpl_version" value="{__version__}"' in junit and f'name="suite_id" value="{suite}"' in junit


# --- the results-folder contract -----------------------------------------------------------------------


def _results(tmp_path: Path, component: str, dtype: str = "float64") -> Path:
    export_results(REFERENCE, tmp_path, components=[component], dtype=dtype)
    return tmp_path


def test_float32_results_pass_under_dtype_float32_only(tmp_path: Path) -> None:
    results = _results(tmp_path, "linear", "float32")
    assert run_results(results, components=["linear"], dtype="float32").ok
    report = run_results(results, components=["linear"])
    assert not report.ok
    assert "dtype float32, expected float64: under --dtype float64 (the default)" in report.results[0].text


@pytest.mark.parametrize(("dtype", "message"), [
    ("int32", "dtype int32, expected int64: write ids as int64 (npy descr '<i8')"),
    (">i8", "dtype >i8 is big-endian, expected little-endian <i8"),
])
def test_wrong_integer_dtype_says_what_to_write(tmp_path: Path, dtype: str, message: str) -> None:
    case = "multi_interest_readout/harder_logq_temperature"
    results = _results(tmp_path, "multi_interest_readout")
    path = results / case / "positive_interest.npy"
    assert run_results(results, cases=[case]).ok
    np.save(path, np.load(path).astype(dtype))
    assert message in run_results(results, cases=[case]).results[0].text


def test_uint8_mask_says_write_bool(tmp_path: Path) -> None:
    results = _results(tmp_path, "sampled_softmax")
    path = results / SOFTMAX_TINY / "negative_kept.npy"
    np.save(path, np.load(path).astype(np.uint8))
    assert "expected bool: write masks as numpy bool (npy descr '|b1'" in run_results(
        results, cases=[SOFTMAX_TINY]).results[0].text


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty file"),
    (b"1.0 2.0 3.0\n", "not an npy file"),
    (None, "holds an object (pickled) array"),
])
def test_an_unreadable_file_is_an_error_naming_its_path(tmp_path: Path, content: bytes | None, message: str) -> None:
    results = _results(tmp_path, "sampled_softmax")
    path = results / SOFTMAX_TINY / "loss.npy"
    if content is None:
        np.save(path, np.array([1.0, None]), allow_pickle=True)
    else:
        path.write_bytes(content)
    result = run_results(results, cases=[SOFTMAX_TINY]).results[0]
    assert result.status == "error" and result.reason.startswith(f"{path}: {message}")


def test_extra_and_stray_files_are_listed(tmp_path: Path) -> None:
    results = _results(tmp_path, "linear")
    clean = run_results(results, components=["linear"])
    assert clean.ok and not clean.warnings and "match nothing" not in format_table(clean)
    case = clean.results[0].case_id
    (results / case / "notes.txt").write_text("float32 run")
    np.save(results / case / "d_xx.npy", np.zeros(1))
    (results / "linear" / "no_such_case").mkdir()
    report = run_results(results, components=["linear"])
    text = format_table(report)
    assert "files in the results folder that are not .npy tensors (not read): notes.txt" in text
    assert "'d_xx' (did you mean 'd_x'?)" in text
    assert any("linear/no_such_case: matches no golden case" in w for w in report.warnings)
    (results / "linaer").mkdir()
    with pytest.raises(UsageError, match="'linaer' \\(did you mean 'linear'\\?\\)"):
        run_results(results, components=["linear"])


# --- the golden manifest, checked before anything runs ------------------------------------------------


def test_conform_refuses_an_edited_case_json_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    golden = tmp_path / "golden"
    shutil.copytree(default_golden_root() / "linear", golden / "linear")
    write_manifest(golden)
    results = _results(tmp_path / "results", "linear")
    routes = [["--component", "linear"], ["--results", str(results)]]
    for route in routes:
        code, out = _cli(["conform", "--golden", str(golden), *route], capsys)
        assert code == 0 and f"golden suite {check_manifest(golden)}" in out
    case_json = sorted(golden.glob("linear/*/case.json"))[0]
    case_json.write_text(case_json.read_text().replace('"rtol": 1e-06', '"rtol": 1e+06', 1))
    for route in routes:
        code, out = _cli(["conform", "--golden", str(golden), *route], capsys)
        assert code == 2 and f"{case_json.relative_to(golden).as_posix()}: sha256" in out
