"""The NumPy reference passes every golden case through the pytest plugin, one test item per case
(the same route a framework's own test suite takes)."""

from collections.abc import Callable

from refimpl.conformance.runner import Adapter, reference_adapter
from refimpl.golden.format import GoldenCase

REFERENCE = reference_adapter()


def test_reference_conforms(refimpl_case: GoldenCase, refimpl_check: Callable[[GoldenCase, Adapter], None]) -> None:
    refimpl_check(refimpl_case, REFERENCE)
