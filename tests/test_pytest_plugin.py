"""The pytest plugin in a toy project (pytester, in process): each case a test item, never green by
accident, unknown names refused. The plugin comes through the `pytest11` entry point, as in a user's project."""

from __future__ import annotations

import pytest

TOY_TEST = '''
from refimpl.conformance import reference_adapter

def unsupported(*args):
    raise NotImplementedError("later")

ADAPTERS = {{"working": {{"linear": reference_adapter()["linear"]}}, "unsupported": {{"linear": unsupported}},
            "typo": {{"linaer": reference_adapter()["linear"]}}}}

def test_conformance(refimpl_case, refimpl_check):
    refimpl_check(refimpl_case, ADAPTERS["{adapter}"])
'''


def _run(pytester: pytest.Pytester, adapter: str, *options: str) -> pytest.RunResult:
    pytester.makepyfile(test_toy=TOY_TEST.format(adapter=adapter))
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "--refimpl-component", "linear", *options)


def test_each_case_is_a_test_and_the_header_names_the_suite(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "working")
    assert result.ret == 0
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["refimpl *, golden suite * at *: 4 cases run, 4 compared"])


def test_a_session_that_compared_nothing_fails(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "unsupported")
    result.assert_outcomes(skipped=4)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*4 golden cases ran and none was compared*"])
    strict = _run(pytester, "unsupported", "--refimpl-strict")
    strict.assert_outcomes(failed=4)


def test_unknown_component_names_are_refused(pytester: pytest.Pytester) -> None:
    typo = _run(pytester, "typo")
    typo.assert_outcomes(failed=4)
    typo.stdout.fnmatch_lines(["*adapter: not a golden component: 'linaer' (did you mean 'linear'?)*"])
    pytester.makepyfile(test_toy=TOY_TEST.format(adapter="working"))
    option = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--refimpl-component", "linaer")
    assert option.ret == pytest.ExitCode.INTERRUPTED  # a collection error
    option.stdout.fnmatch_lines(["*--refimpl-component: not a golden component: 'linaer' (did you mean 'linear'?)*"])
