"""The conformance runner: feed each golden case to an implementation, compare, explain.

Two ways in, one report:
- a Python adapter: a mapping from component name to `fn(inputs, params, config, upstream)` that
  returns a dict of outputs, intermediates and gradients by the names the case uses (raising
  NotImplementedError marks the case unsupported);
- a results folder `DIR/<component>/<case>/<name>.npy`, written by any program in any language.

Nothing here turns a mistake green: a component name that is not a golden component (in the selection,
in an adapter, or as a results folder) is a `UsageError` naming the closest real one; a run where no
case was compared is not ok; with `strict`, neither is an unsupported case.

Each adapter call runs in a worker thread and is abandoned after `timeout` seconds (an ERROR of that
case; the run goes on). A thread, not a process: the adapter may hold things a child process cannot
inherit or re-create cheaply (a CUDA context, a jitted function, a closure built by a test), and its
results come back without pickling. The price: Python cannot kill a thread, so the abandoned call keeps
running in the background until the process exits, and a call stuck in C code that never releases the
GIL cannot be timed out from inside the process at all (a CI job timeout is the backstop).
"""

from __future__ import annotations

import difflib
import os
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from refimpl import __version__
from refimpl.cases import reference_components
from refimpl.cases._base import Tensors
from refimpl.conformance.expectations import Expectation, Expectations
from refimpl.golden import default_golden_root
from refimpl.golden.compare import Comparison, compare_arrays
from refimpl.golden.format import GoldenCase, find_cases, npy_bytes, read_case
from refimpl.golden.manifest import check_manifest

AdapterFn = Callable[[Tensors, Tensors, dict[str, Any], Tensors], Mapping[str, Any]]
Adapter = Mapping[str, AdapterFn]
Produced = tuple[Mapping[str, Any], list[str]]  # returned tensors by name, files that are not tensors
Producer = Callable[[GoldenCase, Tensors, Tensors, dict[str, Any], Tensors], Produced]

DTYPES = ("float64", "float32")
FAILING = ("fail", "error", "xpass")
COMPARED = ("pass", "fail", "xfail", "xpass")
DEFAULT_TIMEOUT = 60.0  # seconds per case; the largest golden case takes well under a second in NumPy


class UsageError(ValueError):
    """The run was asked for something that does not exist (exit status 2 on the command line)."""


class ResultFileError(ValueError):
    """A file of a results folder that is not a readable npy array; the message names its path."""


@dataclass
class CaseResult:
    case_id: str
    component: str
    status: str  # pass, fail, error, unsupported, skip, xfail, xpass
    comparisons: list[Comparison] = field(default_factory=list)
    reason: str = ""
    location: str = ""  # file:line in the implementation where an ERROR was raised
    traceback: str = ""
    loosened: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # returned names matching no tensor, with a suggestion
    extra_files: list[str] = field(default_factory=list)  # files of a results folder that are not npy tensors
    intermediates_stored: list[str] = field(default_factory=list)
    intermediates_compared: list[str] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)  # role of every checked tensor of the case
    strict: bool = False

    @property
    def failing(self) -> bool:
        return self.status in FAILING or (self.strict and self.status == "unsupported")

    @property
    def failing_names(self) -> list[str]:
        return [c.name for c in self.comparisons if not c.passed]

    @property
    def first_divergent_intermediate(self) -> str | None:
        return next((c.name for c in self.comparisons if not c.passed and c.name in self.intermediates_stored), None)

    @property
    def intermediates_not_returned(self) -> list[str]:
        return [n for n in self.intermediates_stored if n not in self.intermediates_compared]

    @property
    def float_values_compared(self) -> bool:
        return any(c.values_compared and not c.exact for c in self.comparisons)

    @property
    def worst_share(self) -> float:
        """The largest share of the allowed error over float tensors whose values were compared (0 if none)."""
        return max((c.share_of_allowed for c in self.comparisons if c.values_compared and not c.exact), default=0.0)

    def failures_by_kind(self) -> dict[str, list[str]]:
        kinds: dict[str, list[str]] = {}
        for comparison in self.comparisons:
            if not comparison.passed:
                kinds.setdefault(comparison.kind, []).append(comparison.name)
        return kinds

    @property
    def localisation(self) -> str:
        """Where the divergence must be, from which tensors match (empty when nothing can be said)."""
        kinds = self.failures_by_kind()
        if "values" not in kinds:  # a missing tensor, or a shape or dtype problem, says what is wrong by itself
            return ""
        if self.first_divergent_intermediate:
            before = self.intermediates_compared[:self.intermediates_compared.index(self.first_divergent_intermediate)]
            return (f"first divergent intermediate: {self.first_divergent_intermediate}"
                    + (f" (the ones before it match: {', '.join(before)})" if before else ""))
        if all(self.roles.get(name) == "grad" for names in kinds.values() for name in names):
            return "forward outputs match, only gradients differ: check the backward"
        if self.intermediates_compared:
            return (f"every compared intermediate matches: the divergence is after the last matching "
                    f"intermediate, {self.intermediates_compared[-1]}")
        if self.intermediates_stored:
            return (f"no intermediate was returned: return {', '.join(self.intermediates_stored)} to locate the "
                    "divergence")
        return ""

    @property
    def text(self) -> str:
        return self.explain()

    def explain(self, verbose: bool = False) -> str:
        """Everything a person needs to find the divergence (`verbose`: an ERROR's full traceback too)."""
        lines = [f"{self.case_id}: {self.status.upper()}" + (f" ({self.reason})" if self.reason else "")]
        if self.location:
            lines.append(f"  raised at {self.location}")
        if verbose and self.traceback:
            lines += ["  " + line for line in self.traceback.rstrip().splitlines()]
        failing = [c for c in self.comparisons if not c.passed]
        for comparison in sorted(failing, key=lambda c: c.values_compared):
            lines.append(f"  [{comparison.kind}] " + comparison.describe())
        if self.status in ("fail", "xfail", "xpass") and self.intermediates_stored:
            line = (f"  intermediates compared: {len(self.intermediates_compared)} of the "
                    f"{len(self.intermediates_stored)} stored")
            if self.intermediates_not_returned:
                line += f"; not returned: {', '.join(self.intermediates_not_returned)}"
            lines.append(line)
        if self.localisation:
            lines.append(f"  {self.localisation}")
        lines += [f"  tolerance loosened: {note}" for note in self.loosened]
        if self.unmatched:
            lines.append("  returned names that match no tensor of the component (not compared): "
                         + "; ".join(self.unmatched))
        if self.extra_files:
            lines.append(f"  files in the results folder that are not .npy tensors (not read): "
                         f"{', '.join(self.extra_files)}")
        return "\n".join(lines)


@dataclass
class Report:
    results: list[CaseResult]
    dtype: str
    source: str
    suite_id: str = ""
    refimpl_version: str = __version__
    strict: bool = False
    self_check: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def compared(self) -> int:
        """How many cases had their tensors compared (a run where none was is never ok)."""
        return sum(r.status in COMPARED for r in self.results)

    @property
    def ok(self) -> bool:
        return self.compared > 0 and not any(r.failing for r in self.results)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result.status] = counts.get(result.status, 0) + 1
        return counts


def closest(name: str, valid: Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` for the closest valid name, or ""."""
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_component_names(names: Iterable[str], valid: Sequence[str], where: str) -> None:
    """UsageError for every name in `names` that is not a golden component, listing the valid ones."""
    unknown = [n for n in names if n not in valid]
    if unknown:
        problems = "; ".join(f"{n!r}{closest(n, valid)}" for n in unknown)
        raise UsageError(f"{where}: not a golden component: {problems}. Golden components: {', '.join(valid)}")


def golden_components(cases: Sequence[GoldenCase]) -> list[str]:
    return sorted({case.component for case in cases})


def names_by_component(cases: Sequence[GoldenCase]) -> dict[str, frozenset[str]]:
    """Every tensor name the cases of each component store."""
    names: dict[str, set[str]] = {}
    for case in cases:
        names.setdefault(case.component, set()).update(t.name for t in case.tensors)
    return {component: frozenset(n) for component, n in names.items()}


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
                upstream: Tensors) -> Produced:
        if case.component not in adapter:
            raise NotImplementedError(f"the adapter has no component {case.component!r}")
        return adapter[case.component](inputs, params, config, upstream), []

    return produce


NPY_MAGIC = b"\x93NUMPY"


def read_result_file(path: Path) -> NDArray[Any]:
    """One tensor of a results folder; ResultFileError naming the path for anything but an npy array."""
    data = path.read_bytes()
    if not data:
        raise ResultFileError(f"{path}: empty file (expected an npy array)")
    if not data.startswith(NPY_MAGIC):
        raise ResultFileError(f"{path}: not an npy file (it does not start with the npy magic \\x93NUMPY)")
    try:
        array: NDArray[Any] = np.load(path, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error):
            raise ResultFileError(f"{path}: holds an object (pickled) array; write a plain numeric array "
                                  "(float64 or float32, int64 ids, bool masks)") from None
        raise ResultFileError(f"{path}: not a readable npy file ({error})") from None
    except (EOFError, OSError) as error:
        raise ResultFileError(f"{path}: truncated or unreadable npy file ({type(error).__name__}: {error})") from None
    return array


def results_producer(results_dir: Path) -> Producer:
    """Read an implementation's outputs from `results_dir/<component>/<case>/<name>.npy`."""
    def produce(case: GoldenCase, inputs: Tensors, params: Tensors, config: dict[str, Any],
                upstream: Tensors) -> Produced:
        folder = results_dir / case.case_id
        if not folder.is_dir():
            raise NotImplementedError(f"no results folder {folder}")
        found: dict[str, Any] = {}
        extra = []
        for path in sorted(folder.iterdir()):
            if path.suffix == ".npy" and path.is_file():
                found[path.stem] = read_result_file(path)
            else:
                extra.append(path.name)
        return found, extra

    return produce


def results_folder_warnings(results_dir: Path, cases: Sequence[GoldenCase], valid: Sequence[str]) -> list[str]:
    """UsageError for a component folder that is not a golden component; warnings for stray case folders."""
    components = [p.name for p in sorted(results_dir.iterdir()) if p.is_dir()]
    check_component_names(components, valid, f"results folder {results_dir}")
    warnings = [f"{p}: a file at the top of the results folder (not read)"
                for p in sorted(results_dir.iterdir()) if not p.is_dir()]
    case_ids = [c.case_id for c in cases]
    for component in components:
        for folder in sorted((results_dir / component).iterdir()):
            case_id = f"{component}/{folder.name}"
            if case_id not in case_ids:
                warnings.append(f"{folder}: matches no golden case{closest(case_id, case_ids)} (not read)")
    return warnings


_SUITE_CACHE: dict[Path, tuple[tuple[tuple[str, int, int], ...], list[GoldenCase]]] = {}
_MANIFEST_CACHE: dict[Path, tuple[tuple[tuple[str, int, int], ...], str]] = {}


def _file_stamps(root: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, modification time, size) of every file under `root` (os.walk: 4x faster than Path.rglob)."""
    stamps = []
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        for name in sorted(files):
            stat = os.stat(os.path.join(folder, name))
            stamps.append((os.path.join(folder, name), stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


def checked_suite_id(golden_root: Path) -> str:
    """The suite id of `golden_root` after `check_manifest` verified every file against the manifest
    (ManifestError naming the file otherwise). Hashing every file takes about a second, so within one process
    the check is repeated only when a file of the folder was added, removed, or written since (its size or
    modification time changed)."""
    root = golden_root.resolve()
    stamps = _file_stamps(root)
    cached = _MANIFEST_CACHE.get(root)
    if cached is None or cached[0] != stamps:
        cached = stamps, check_manifest(golden_root)
        _MANIFEST_CACHE[root] = cached
    return cached[1]


def read_suite(golden_root: Path) -> list[GoldenCase]:
    """Every case under `golden_root`; re-read only when a `case.json` was added, removed or changed."""
    folders = find_cases(golden_root)
    stamps = tuple((str(f), s.st_mtime_ns, s.st_size) for f in folders for s in [(f / "case.json").stat()])
    cached = _SUITE_CACHE.get(golden_root.resolve())
    if cached is None or cached[0] != stamps:
        cached = stamps, [read_case(folder) for folder in folders]
        _SUITE_CACHE[golden_root.resolve()] = cached
    return list(cached[1])


def select_cases(golden_root: Path, components: Sequence[str] = (), cases: Sequence[str] = ()) -> list[GoldenCase]:
    """The golden cases under `golden_root`, filtered by component names and case-id patterns.

    A component name that is not a golden component is a UsageError naming the closest real one."""
    every = read_suite(golden_root)
    check_component_names(components, golden_components(every), "--component")
    return [case for case in every
            if (not components or case.component in components)
            and (not cases or any(fnmatchcase(case.case_id, p) for p in cases))]


@dataclass(frozen=True)
class RunOptions:
    """How each case is run: the float dtype, skip/xfail/tolerance entries, strictness, the per-case timeout."""

    dtype: str = "float64"
    expectations: Expectations = field(default_factory=Expectations)
    strict: bool = False
    timeout: float | None = DEFAULT_TIMEOUT  # seconds; None or 0 runs the adapter in the calling thread
    # component -> every tensor name its cases store: a returned name that is known to the component but not
    # stored by this case (a large case leaves its intermediates out) is not reported as matching nothing
    known_names: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {DTYPES}, got {self.dtype!r}")
        if self.timeout is not None and not self.timeout >= 0:
            raise ValueError(f"timeout: expected a number of seconds >= 0, got {self.timeout!r}")


def run_conformance(
    adapter: Adapter,
    golden_root: Path | None = None,
    components: Sequence[str] = (),
    cases: Sequence[str] = (),
    dtype: str = "float64",
    expectations: Expectations | None = None,
    strict: bool = False,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Report:
    """Check a Python adapter against the goldens."""
    root = default_golden_root() if golden_root is None else golden_root
    suite = checked_suite_id(root)
    every = select_cases(root)
    check_adapter(adapter, every)
    options = RunOptions(dtype, expectations or Expectations(), strict, timeout, names_by_component(every))
    report = run_producer(adapter_producer(adapter), "adapter", select_cases(root, components, cases), options)
    report.suite_id = suite
    return report


def check_adapter(adapter: Adapter, cases: Sequence[GoldenCase]) -> None:
    """UsageError when the adapter is not a mapping or names a component that is neither in the golden folder
    nor a component of the reference (a `--golden DIR` may hold a part of the suite)."""
    if not isinstance(adapter, Mapping):
        raise UsageError(f"adapter: expected a mapping from component name to function, got {type(adapter).__name__}")
    check_component_names(adapter, sorted({*golden_components(cases), *reference_components()}), "adapter")
    not_callable = [name for name, fn in adapter.items() if not callable(fn)]
    if not_callable:
        raise UsageError(f"adapter: the entries for {', '.join(map(repr, not_callable))} are not callable")


def run_results(
    results_dir: Path,
    golden_root: Path | None = None,
    components: Sequence[str] = (),
    cases: Sequence[str] = (),
    dtype: str = "float64",
    expectations: Expectations | None = None,
    strict: bool = False,
) -> Report:
    """Check a folder of results written by any implementation against the goldens."""
    if not results_dir.is_dir():
        raise UsageError(f"results_dir: {results_dir} is not a folder")
    root = default_golden_root() if golden_root is None else golden_root
    suite = checked_suite_id(root)
    every = select_cases(root)
    options = RunOptions(dtype, expectations or Expectations(), strict, None, names_by_component(every))
    warnings = results_folder_warnings(results_dir, every, golden_components(every))
    report = run_producer(results_producer(results_dir), str(results_dir), select_cases(root, components, cases),
                          options)
    report.warnings = warnings + report.warnings
    report.suite_id = suite
    return report


def run_producer(produce: Producer, source: str, selected: Sequence[GoldenCase], options: RunOptions) -> Report:
    report = Report(results=[], dtype=options.dtype, source=source, strict=options.strict)
    report.warnings += options.expectations.unmatched({c.case_id: [t.name for t in c.tensors] for c in selected})
    if not selected:
        report.warnings.append("no golden case matches the filters")
    for case in selected:
        report.results.append(run_case(produce, case, options))
    return report


def case_arguments(case: GoldenCase, dtype: str) -> tuple[Tensors, Tensors, dict[str, Any], Tensors]:
    """inputs, params, config, upstream of a case, floats cast to `dtype`."""
    def cast(tensors: Tensors) -> Tensors:
        return {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in tensors.items()}

    return (cast(case.load_role("input")), cast(case.load_role("param")), dict(case.config),
            cast(case.load_role("upstream_grad")))


class _Timeout(Exception):
    pass


def call_with_timeout(call: Callable[[], Produced], timeout: float | None) -> Produced:
    """`call()` in a worker thread; `_Timeout` when it has not returned after `timeout` seconds.

    Every exception of the call, SystemExit included, is re-raised here (a thread swallows SystemExit)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: B036 (SystemExit from the adapter is a case's ERROR too)
            outcome["error"] = error

    if not timeout:
        target()
    else:
        worker = threading.Thread(target=target, name="refimpl-case", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise _Timeout
    if "error" in outcome:
        raise outcome["error"]
    value: Produced = outcome["value"]
    return value


def run_case(produce: Producer, case: GoldenCase, options: RunOptions) -> CaseResult:
    """Run one case and compare everything it returns."""
    expectation = options.expectations.status_for(case.case_id)
    if expectation is not None and expectation.kind == "skip":
        return CaseResult(case.case_id, case.component, "skip", reason=expectation.reason)
    inputs, params, config, upstream = case_arguments(case, options.dtype)

    def call() -> Produced:
        return produce(case, inputs, params, config, upstream)

    try:
        returned, extra_files = call_with_timeout(call, options.timeout)
    except NotImplementedError as error:
        return CaseResult(case.case_id, case.component, "unsupported", reason=str(error) or "not implemented",
                          strict=options.strict)
    except _Timeout:
        result = CaseResult(case.case_id, case.component, "error",
                            reason=f"timed out after {options.timeout:g} s (--timeout); the call was abandoned")
        return _apply_xfail(result, expectation)
    except ResultFileError as error:
        return _apply_xfail(CaseResult(case.case_id, case.component, "error", reason=str(error)), expectation)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # noqa: B036 (the implementation under test crashed or exited: report, go on)
        return _apply_xfail(_error_result(case, error), expectation)
    if not isinstance(returned, Mapping):
        result = CaseResult(case.case_id, case.component, "error",
                            reason=f"returned {type(returned).__name__}, expected a dict of arrays")
        return _apply_xfail(result, expectation)
    result = compare_case(case, returned, options)
    result.extra_files = extra_files
    return _apply_xfail(result, expectation)


def compare_case(case: GoldenCase, returned: Mapping[str, Any], options: RunOptions) -> CaseResult:
    """Compare every output, grad and returned intermediate of `case` with what the implementation returned."""
    result = CaseResult(case.case_id, case.component, "pass", strict=options.strict)
    checked = [t for t in case.tensors if t.float64 is not None and t.float32 is not None]
    checked_names = [t.name for t in checked]
    result.intermediates_stored = [t.name for t in checked if t.role == "intermediate"]
    result.roles = {t.name: t.role for t in checked}
    roles = {t.name: t.role for t in case.tensors}
    known = options.known_names.get(case.component, frozenset())
    for name in returned:
        if name in checked_names or (name in known and name not in roles):
            continue
        note = f" (an {roles[name]} of the case)" if name in roles else closest(name, sorted(known) or checked_names)
        result.unmatched.append(f"{name!r}{note}")
    for entry in checked:
        if entry.name not in returned:
            if entry.role != "intermediate":
                result.comparisons.append(Comparison(entry.name, False, f"not returned (required {entry.role})",
                                                     kind="missing"))
            continue
        if entry.role == "intermediate":
            result.intermediates_compared.append(entry.name)
        assert entry.float64 is not None and entry.float32 is not None
        rtol, atol = (entry.float64.rtol, entry.float64.atol) if options.dtype == "float64" else (
            entry.float32.rtol, entry.float32.atol)
        override = options.expectations.tolerance_for(case.case_id, entry.name)
        if override is not None:
            result.loosened.append(
                f"{entry.name}: rtol {rtol:.3g} -> {override.rtol:.3g}, atol {atol:.3g} -> "
                f"{override.atol:.3g} ({override.reason})"
            )
            rtol, atol = override.rtol, override.atol
        expected = case.load(entry)
        want = np.dtype(options.dtype) if expected.dtype.kind == "f" else expected.dtype
        actual = returned[entry.name]
        if isinstance(actual, np.generic):
            actual = np.asarray(actual)
        result.comparisons.append(compare_arrays(entry.name, actual, expected, rtol, atol, want))
    if result.failing_names:
        result.status = "fail"
    return result


def implementation_frames(error: BaseException) -> tuple[list[traceback.FrameSummary], str]:
    """The traceback frames of `error` below the runner, and `file:line in function` of the innermost one in
    the implementation's own code (not Python's or an installed package's; else the outermost frame below
    the runner, where the implementation was entered; "" when there is none)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith("<") and Path(f.filename).resolve() not in _RUNNER_FILES]
    own = [f for f in frames if not _library_file(f.filename)]
    frame = own[-1] if own else (frames[0] if frames and not isinstance(error, ImportError) else None)
    return frames, f"{frame.filename}:{frame.lineno} in {frame.name}" if frame is not None else ""


def _error_result(case: GoldenCase, error: BaseException) -> CaseResult:
    """An ERROR naming the exception and the place in the implementation that raised it."""
    frames, location = implementation_frames(error)
    message = f"{type(error).__name__}: {error}"
    if isinstance(error, SystemExit):
        message += " (the implementation called sys.exit)"
    result = CaseResult(case.case_id, case.component, "error", reason=message, location=location)
    result.traceback = "".join(traceback.format_list(frames) + traceback.format_exception_only(type(error), error))
    return result


_RUNNER_FILES = {*Path(__file__).resolve().parent.glob("*.py"), Path(__file__).resolve().parent.parent / "cli.py"}


def _library_file(filename: str) -> bool:
    """A file of Python itself or of an installed package (not the implementation's own code)."""
    parts = Path(filename).parts
    return "site-packages" in parts or "dist-packages" in parts or (
        Path(filename).resolve().is_relative_to(Path(threading.__file__).resolve().parent))


def _apply_xfail(result: CaseResult, expectation: Expectation | None) -> CaseResult:
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
