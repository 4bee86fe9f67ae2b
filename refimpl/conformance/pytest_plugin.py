"""The conformance runner as a pytest plugin, so a framework's own suite runs the golden cases.

Enable it in your root `conftest.py` with `pytest_plugins = ["refimpl.conformance.pytest_plugin"]`,
then write one test:

    def test_refimpl_conformance(refimpl_case, refimpl_check):
        refimpl_check(refimpl_case, MY_ADAPTER)      # MY_ADAPTER: {component: fn}

Every golden case becomes its own test item (named by case id). Options: `--refimpl-golden DIR`,
`--refimpl-dtype float32`, `--refimpl-component NAME` (repeatable), `--refimpl-expectations FILE`.
An unsupported or skipped case is a pytest skip, an expected failure an xfail, a divergence a
failure whose message is the runner's explanation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from refimpl.conformance.expectations import Expectations, load_expectations
from refimpl.conformance.runner import Adapter, adapter_producer, run_case, select_cases
from refimpl.golden import default_golden_root
from refimpl.golden.format import GoldenCase


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("refimpl", "refimpl conformance")
    group.addoption("--refimpl-golden", default=None, help="golden folder (default: the checkout's)")
    group.addoption("--refimpl-dtype", default="float64", choices=("float64", "float32"))
    group.addoption("--refimpl-component", action="append", default=[], help="only this component")
    group.addoption("--refimpl-expectations", default=None, help="skip/xfail/tolerance TOML file")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "refimpl_case" not in metafunc.fixturenames:
        return
    option = metafunc.config.getoption
    golden = option("--refimpl-golden")
    root = Path(golden) if golden else default_golden_root()
    cases = select_cases(root, option("--refimpl-component"))
    metafunc.parametrize("refimpl_case", cases, ids=[c.case_id for c in cases])


@pytest.fixture
def refimpl_check(request: pytest.FixtureRequest) -> Callable[[GoldenCase, Adapter], None]:
    """`check(case, adapter)`: pass, or skip/xfail/fail with the runner's explanation."""
    dtype = request.config.getoption("--refimpl-dtype")
    path = request.config.getoption("--refimpl-expectations")
    expectations = load_expectations(Path(path)) if path else Expectations()

    def check(case: GoldenCase, adapter: Adapter) -> None:
        result = run_case(adapter_producer(adapter), case, dtype, expectations)
        if result.status in ("skip", "unsupported"):
            pytest.skip(f"{result.status}: {result.reason}")
        if result.status == "xfail":
            pytest.xfail(result.reason)
        if result.status != "pass":
            pytest.fail(result.text, pytrace=False)

    return check
