"""Checking another implementation against the goldens (see spec/conformance.md)."""

from refimpl.conformance.expectations import Expectations, load_expectations
from refimpl.conformance.runner import (
    Adapter,
    AdapterFn,
    CaseResult,
    Report,
    export_results,
    reference_adapter,
    run_conformance,
    run_results,
)

__all__ = [
    "Adapter",
    "AdapterFn",
    "CaseResult",
    "Expectations",
    "Report",
    "export_results",
    "load_expectations",
    "reference_adapter",
    "run_conformance",
    "run_results",
]
