"""The conformance runner: feed each golden case to an implementation, compare, explain.

Two ways in, one report:
- a Python adapter: a mapping from component name to `fn(inputs, params, config, upstream)` that
  returns a dict of outputs, intermediates and gradients by the names the case uses (raising
  NotImplementedError, or a missing component, marks the case unsupported);
- a results folder `DIR/<component>/<case>/<name>.npy`, written by any program in any language.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from refimpl.cases import reference_components
from refimpl.cases._base import Tensors
from refimpl.conformance.expectations import Expectations
from refimpl.golden import default_golden_root
from refimpl.golden.compare import Comparison, compare_arrays
from refimpl.golden.format import GoldenCase, find_cases, npy_bytes, read_case

AdapterFn = Callable[[Tensors, Tensors, dict[str, Any], Tensors], Mapping[str, Any]]
Adapter = Mapping[str, AdapterFn]
Producer = Callable[[GoldenCase, Tensors, Tensors, dict[str, Any], Tensors], Mapping[str, Any]]

DTYPES = ("float64", "float32")
FAILING = ("fail", "error", "xpass")


@dataclass
class CaseResult:
    case_id: str
    component: str
    status: str  # pass, fail, error, unsupported, skip, xfail, xpass
    comparisons: list[Comparison] = field(default_factory=list)
    reason: str = ""
    first_divergent_intermediate: str | None = None
    loosened: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def failing_names(self) -> list[str]:
        return [c.name for c in self.comparisons if not c.passed]

    @property
    def worst_share(self) -> float:
        return max((c.share_of_allowed for c in self.comparisons if not c.problem), default=0.0)

    @property
    def text(self) -> str:
        """Everything a person needs to find the divergence."""
        lines = [f"{self.case_id}: {self.status.upper()}" + (f" ({self.reason})" if self.reason else "")]
        failing = [c for c in self.comparisons if not c.passed]
        for comparison in sorted(failing, key=lambda c: not c.problem):
            lines.append("  " + comparison.describe())
        if self.first_divergent_intermediate:
            lines.append(f"  first divergent intermediate: {self.first_divergent_intermediate}")
        lines += [f"  tolerance loosened: {note}" for note in self.loosened]
        if self.ignored:
            lines.append(f"  returned but not in the case (ignored): {', '.join(self.ignored)}")
        return "\n".join(lines)


@dataclass
class Report:
    results: list[CaseResult]
    dtype: str
    source: str
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(r.status in FAILING for r in self.results)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result.status] = counts.get(result.status, 0) + 1
        return counts


def reference_adapter() -> dict[str, AdapterFn]:
    """The NumPy reference as an adapter (what the goldens were generated with)."""
    def wrap(name: str) -> AdapterFn:
        component = reference_components()[name]

        def run(inputs: Tensors, params: Tensors, config: dict[str, Any], upstream: Tensors) -> dict[str, Any]:
            return component(inputs, params, config, upstream).flat()

        return run

    return {name: wrap(name) for name in reference_components()}


def adapter_producer(adapter: Adapter) -> Producer:
    def produce(case: GoldenCase, inputs: Tensors, params: Tensors, config: dict[str, Any],
                upstream: Tensors) -> Mapping[str, Any]:
        if case.component not in adapter:
            raise NotImplementedError(f"the adapter has no component {case.component!r}")
        return adapter[case.component](inputs, params, config, upstream)

    return produce


def results_producer(results_dir: Path) -> Producer:
    """Read an implementation's outputs from `results_dir/<component>/<case>/<name>.npy`."""
    def produce(case: GoldenCase, inputs: Tensors, params: Tensors, config: dict[str, Any],
                upstream: Tensors) -> Mapping[str, Any]:
        folder = results_dir / case.case_id
        if not folder.is_dir():
            raise NotImplementedError(f"no results folder {folder}")
        found: dict[str, Any] = {}
        for path in sorted(folder.glob("*.npy")):
            try:
                found[path.stem] = np.load(path, allow_pickle=False)
            except ValueError as error:
                raise ValueError(f"{path}: not a readable npy file ({error})") from None
        return found

    return produce


def select_cases(golden_root: Path, components: Sequence[str] = (), cases: Sequence[str] = ()) -> list[GoldenCase]:
    """The golden cases under `golden_root`, filtered by component names and case-id patterns."""
    selected = []
    for folder in find_cases(golden_root):
        case = read_case(folder)
        if components and case.component not in components:
            continue
        if cases and not any(fnmatchcase(case.case_id, p) for p in cases):
            continue
        selected.append(case)
    return selected


def run_conformance(
    adapter: Adapter,
    golden_root: Path | None = None,
    components: Sequence[str] = (),
    cases: Sequence[str] = (),
    dtype: str = "float64",
    expectations: Expectations | None = None,
) -> Report:
    """Check a Python adapter against the goldens."""
    return run_producer(adapter_producer(adapter), "adapter", golden_root, components, cases,
                        dtype, expectations)


def run_results(
    results_dir: Path,
    golden_root: Path | None = None,
    components: Sequence[str] = (),
    cases: Sequence[str] = (),
    dtype: str = "float64",
    expectations: Expectations | None = None,
) -> Report:
    """Check a folder of results written by any implementation against the goldens."""
    if not results_dir.is_dir():
        raise ValueError(f"results_dir: {results_dir} is not a folder")
    return run_producer(results_producer(results_dir), str(results_dir), golden_root, components,
                        cases, dtype, expectations)


def run_producer(
    produce: Producer,
    source: str,
    golden_root: Path | None,
    components: Sequence[str],
    cases: Sequence[str],
    dtype: str,
    expectations: Expectations | None,
) -> Report:
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
    root = default_golden_root() if golden_root is None else golden_root
    selected = select_cases(root, components, cases)
    expectations = expectations or Expectations()
    report = Report(results=[], dtype=dtype, source=source)
    report.warnings += expectations.unmatched([c.case_id for c in selected])
    if not selected:
        report.warnings.append(f"no golden case under {root} matches the filters")
    for case in selected:
        report.results.append(run_case(produce, case, dtype, expectations))
    return report


def case_arguments(case: GoldenCase, dtype: str) -> tuple[Tensors, Tensors, dict[str, Any], Tensors]:
    """inputs, params, config, upstream of a case, floats cast to `dtype`."""
    def cast(tensors: Tensors) -> Tensors:
        return {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in tensors.items()}

    return (cast(case.load_role("input")), cast(case.load_role("param")), dict(case.config),
            cast(case.load_role("upstream_grad")))


def run_case(produce: Producer, case: GoldenCase, dtype: str, expectations: Expectations) -> CaseResult:
    """Run one case and compare everything it returns."""
    expectation = expectations.status_for(case.case_id)
    if expectation is not None and expectation.kind == "skip":
        return CaseResult(case.case_id, case.component, "skip", reason=expectation.reason)
    inputs, params, config, upstream = case_arguments(case, dtype)
    try:
        returned = produce(case, inputs, params, config, upstream)
    except NotImplementedError as error:
        return CaseResult(case.case_id, case.component, "unsupported", reason=str(error) or "not implemented")
    except Exception as error:  # the implementation under test crashed: report it, keep going
        result = CaseResult(case.case_id, case.component, "error",
                            reason=f"{type(error).__name__}: {error}")
        return _apply_xfail(result, expectation)
    if not isinstance(returned, Mapping):
        result = CaseResult(case.case_id, case.component, "error",
                            reason=f"returned {type(returned).__name__}, expected a dict of arrays")
        return _apply_xfail(result, expectation)
    result = CaseResult(case.case_id, case.component, "pass")
    expected_names = {t.name for t in case.tensors}
    result.ignored = sorted(set(returned) - expected_names)
    for entry in case.tensors:
        if entry.float64 is None or entry.float32 is None:
            continue
        if entry.name not in returned:
            if entry.role != "intermediate":
                result.comparisons.append(Comparison(entry.name, False, f"missing ({entry.role})"))
            continue
        rtol, atol = (entry.float64.rtol, entry.float64.atol) if dtype == "float64" else (
            entry.float32.rtol, entry.float32.atol)
        override = expectations.tolerance_for(case.case_id, entry.name)
        if override is not None:
            result.loosened.append(
                f"{entry.name}: rtol {rtol:.3g} -> {override.rtol:.3g}, atol {atol:.3g} -> "
                f"{override.atol:.3g} ({override.reason})"
            )
            rtol, atol = override.rtol, override.atol
        expected = case.load(entry)
        want = np.dtype(dtype) if expected.dtype.kind == "f" else expected.dtype
        actual = returned[entry.name]
        if isinstance(actual, np.generic):
            actual = np.asarray(actual)
        comparison = compare_arrays(entry.name, actual, expected, rtol, atol, want)
        result.comparisons.append(comparison)
        if not comparison.passed and entry.role == "intermediate" and result.first_divergent_intermediate is None:
            result.first_divergent_intermediate = entry.name
    if result.failing_names:
        result.status = "fail"
    return _apply_xfail(result, expectation)


def _apply_xfail(result: CaseResult, expectation: Any) -> CaseResult:
    if expectation is None or expectation.kind != "xfail":
        return result
    result.status = "xfail" if result.status in ("fail", "error") else "xpass"
    result.reason = expectation.reason if result.status == "xfail" else (
        f"expected to fail ({expectation.reason}) but passed: remove the xfail entry")
    return result


def export_results(adapter: Adapter, out_dir: Path, golden_root: Path | None = None,
                   components: Sequence[str] = (), dtype: str = "float64") -> list[str]:
    """Write an adapter's outputs as a results folder (the language-neutral layout)."""
    written = []
    for case in select_cases(default_golden_root() if golden_root is None else golden_root, components):
        if case.component not in adapter:
            continue
        inputs, params, config, upstream = case_arguments(case, dtype)
        returned = adapter[case.component](inputs, params, config, upstream)
        folder = out_dir / case.case_id
        folder.mkdir(parents=True, exist_ok=True)
        for name, value in returned.items():
            array: NDArray[Any] = np.asarray(value)
            (folder / f"{name}.npy").write_bytes(npy_bytes(array))
        written.append(case.case_id)
    return written

