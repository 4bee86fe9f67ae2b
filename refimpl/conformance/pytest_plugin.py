"""The conformance runner as a pytest plugin, so a framework's own suite runs the golden cases.

Installing refimpl registers the plugin (the `pytest11` entry point); write one test:

    def test_refimpl_conformance(refimpl_case, refimpl_check):
        refimpl_check(refimpl_case, MY_ADAPTER)      # MY_ADAPTER: {component: fn}

Every golden case becomes its own test item (named by case id). Options: `--refimpl-golden DIR`,
`--refimpl-dtype float32`, `--refimpl-component NAME` (repeatable), `--refimpl-expectations FILE`,
`--refimpl-strict`, `--refimpl-timeout SECONDS`. An unsupported or skipped case is a pytest skip (a
failure under `--refimpl-strict`), an expected failure an xfail, a divergence a failure whose message is
the runner's explanation. A session in which refimpl cases ran but none was compared fails.
The plugin is loaded into every pytest session of an environment where refimpl is installed, so it does
nothing until a test asks for `refimpl_case`: then it checks the golden manifest (a collection error naming
the file on any mismatch) and the run's summary names the refimpl version and the golden suite id.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from refimpl import __version__
from refimpl.conformance.expectations import Expectations, load_expectations
from refimpl.conformance.runner import (
    COMPARED,
    DEFAULT_TIMEOUT,
    Adapter,
    RunOptions,
    UsageError,
    adapter_producer,
    check_adapter,
    check_component_names,
    checked_suite_id,
    golden_components,
    names_by_component,
    run_case,
    select_cases,
)
from refimpl.golden import default_golden_root
from refimpl.golden.format import GoldenCase, GoldenError

_RAN = pytest.StashKey[dict[str, int]]()
_SUITE = pytest.StashKey[tuple[str, list[GoldenCase]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("refimpl", "refimpl conformance")
    group.addoption("--refimpl-golden", default=None, help="golden folder (default: the suite shipped with refimpl)")
    group.addoption("--refimpl-dtype", default="float64", choices=("float64", "float32"))
    group.addoption("--refimpl-component", action="append", default=[], help="only this component")
    group.addoption("--refimpl-expectations", default=None, help="skip/xfail/tolerance TOML file")
    group.addoption("--refimpl-strict", action="store_true", help="an unsupported case fails")
    group.addoption("--refimpl-timeout", type=float, default=DEFAULT_TIMEOUT,
                    help=f"seconds per case before it is an error (default {DEFAULT_TIMEOUT:g}; 0: no limit)")


def _golden_root(config: pytest.Config) -> Path:
    golden = config.getoption("--refimpl-golden")
    return Path(golden) if golden else default_golden_root()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RAN] = {"ran": 0, "compared": 0}


def _suite(config: pytest.Config) -> tuple[str, list[GoldenCase]]:
    """The suite id (after checking the manifest) and every golden case, read once per session."""
    if _SUITE not in config.stash:
        root = _golden_root(config)
        try:
            config.stash[_SUITE] = checked_suite_id(root), select_cases(root)
        except GoldenError as error:
            raise pytest.UsageError(f"refimpl: golden suite {root}: {error}") from None
    return config.stash[_SUITE]


def _cases(config: pytest.Config) -> list[GoldenCase]:
    """The cases selected by --refimpl-component."""
    every = _suite(config)[1]
    components = config.getoption("--refimpl-component")
    try:
        check_component_names(components, golden_components(every), "--refimpl-component")
    except UsageError as error:
        raise pytest.UsageError(f"refimpl: {error}") from None
    return [case for case in every if not components or case.component in components]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "refimpl_case" not in metafunc.fixturenames:
        return
    cases = _cases(metafunc.config)
    metafunc.parametrize("refimpl_case", cases, ids=[c.case_id for c in cases])


@pytest.fixture
def refimpl_check(request: pytest.FixtureRequest) -> Callable[[GoldenCase, Adapter], None]:
    """`check(case, adapter)`: pass, or skip/xfail/fail with the runner's explanation."""
    config = request.config
    path = config.getoption("--refimpl-expectations")
    try:
        expectations = load_expectations(Path(path)) if path else Expectations()
    except ValueError as error:
        raise pytest.UsageError(f"refimpl: {error}") from None
    every = _suite(config)[1]
    options = RunOptions(config.getoption("--refimpl-dtype"), expectations, config.getoption("--refimpl-strict"),
                         config.getoption("--refimpl-timeout"), names_by_component(every))
    counts = config.stash[_RAN]

    def check(case: GoldenCase, adapter: Adapter) -> None:
        try:
            check_adapter(adapter, every)
        except UsageError as error:
            pytest.fail(str(error), pytrace=False)
        result = run_case(adapter_producer(adapter), case, options)
        counts["ran"] += 1
        counts["compared"] += result.status in COMPARED
        if result.failing:
            pytest.fail(result.explain(verbose=True), pytrace=False)
        if result.status in ("skip", "unsupported"):
            pytest.skip(f"{result.status}: {result.reason}")
        if result.status == "xfail":
            pytest.xfail(result.reason)

    return check


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    counts = session.config.stash.get(_RAN, {"ran": 0, "compared": 0})
    if counts["ran"] and not counts["compared"] and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    counts = config.stash.get(_RAN, {"ran": 0, "compared": 0})
    if _SUITE in config.stash:
        terminalreporter.write_line(f"refimpl {__version__}, golden suite {config.stash[_SUITE][0]} at "
                                    f"{_golden_root(config)}: {counts['ran']} cases run, {counts['compared']} compared")
    if counts["ran"] and not counts["compared"]:
        terminalreporter.write_line(
            f"refimpl: {counts['ran']} golden cases ran and none was compared (all unsupported or skipped): "
            "the run fails", red=True)
