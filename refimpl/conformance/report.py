"""Rendering a conformance report: a terminal table, JSON, and JUnit XML.

Every form names the refimpl version and the golden suite id, so a CI log says which suite was passed.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import asdict
from typing import Any

from refimpl.conformance.runner import CaseResult, Report

SELF_CHECK = ("self-check: no --adapter or --results given, so this checks the NumPy reference against its own "
              "goldens; check your implementation with --adapter pkg.module:ADAPTER or --results DIR")


def summary_detail(result: CaseResult) -> str:
    """The detail column of a case's row: the kinds of failure and their tensors, or the reason."""
    kinds = result.failures_by_kind()
    if result.status in ("fail", "xpass", "xfail") and kinds:
        parts = []
        for kind, names in kinds.items():
            shown = ", ".join(names[:4]) + (f" (+{len(names) - 4})" if len(names) > 4 else "")
            parts.append(f"{kind}: {shown}")
        detail = "; ".join(parts)
        if result.status == "xfail":
            detail = f"{result.reason}; {detail}"
    else:
        detail = result.reason + (f" ({result.location})" if result.location else "")
    if result.loosened:
        detail = (detail + "; " if detail else "") + "tolerance loosened"
    if result.unmatched or result.extra_files:
        count = len(result.unmatched) + len(result.extra_files)
        detail = (detail + "; " if detail else "") + f"{count} returned name(s) or file(s) match nothing"
    if result.strict and result.status == "unsupported":
        detail += " (fails under --strict)"
    return detail


def format_table(report: Report, verbose: bool = False) -> str:
    """One line per case, then the details of every failing case, then the totals."""
    width = max((len(r.case_id) for r in report.results), default=10) + 2
    lines = [f"refimpl {report.refimpl_version} conformance, golden suite {report.suite_id or '(no manifest)'}: "
             f"{report.source}, {report.dtype}" + (", --strict" if report.strict else "")]
    if report.self_check:
        lines.append(SELF_CHECK)
    lines += [f"{'case':<{width}}{'status':<13}{'worst':>10}  detail", "-" * (width + 50)]
    for result in report.results:
        values_failed = any(c.kind == "values" and not c.exact for c in result.comparisons) or not result.failing_names
        shown = result.float_values_compared and values_failed and result.status in ("pass", "fail", "xfail", "xpass")
        worst = f"{result.worst_share:.2g}" if shown else "-"
        lines.append(f"{result.case_id:<{width}}{result.status.upper():<13}{worst:>10}  {summary_detail(result)}")
    details = [r.explain(verbose) for r in report.results
               if r.failing or r.unmatched or r.extra_files or (verbose and r.comparisons)]
    if details:
        lines += ["", *details]
    lines += [f"warning: {w}" for w in report.warnings]
    counts = report.counts()
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no cases"
    if report.ok:
        lines.append(f"OK: {summary}")
    elif report.compared == 0:
        lines.append(f"FAILED: no case was compared ({summary}); a run that compares nothing never passes")
    else:
        lines.append(f"FAILED: {summary}" + (" (unsupported cases fail under --strict)" if report.strict
                                              and counts.get("unsupported") else ""))
    lines.append("('worst' is the largest share of the allowed error any float element uses: 1 is the limit; "
                 "'-' where no values were compared or no value failed)")
    return "\n".join(lines)


def to_json(report: Report) -> str:
    document: dict[str, Any] = {
        "ok": report.ok,
        "refimpl_version": report.refimpl_version,
        "suite_id": report.suite_id,
        "dtype": report.dtype,
        "source": report.source,
        "self_check": report.self_check,
        "strict": report.strict,
        "compared": report.compared,
        "counts": report.counts(),
        "warnings": report.warnings,
        "cases": [
            {
                "case_id": r.case_id,
                "component": r.component,
                "status": r.status,
                "failing": r.failing,
                "reason": r.reason,
                "location": r.location,
                "traceback": r.traceback,
                "failures": r.failures_by_kind(),
                "first_divergent_intermediate": r.first_divergent_intermediate,
                "localisation": r.localisation,
                "intermediates_stored": r.intermediates_stored,
                "intermediates_compared": r.intermediates_compared,
                "unmatched_names": r.unmatched,
                "extra_files": r.extra_files,
                "tolerance_loosened": r.loosened,
                "tensors": [
                    {**asdict(c), "max_abs_index": list(c.max_abs_index), "max_rel_index": list(c.max_rel_index),
                     "worst_index": list(c.worst_index)}
                    for c in r.comparisons
                ],
            }
            for r in report.results
        ],
    }
    return json.dumps(_strict_json(document), indent=2, allow_nan=False)


def _strict_json(value: Any) -> Any:
    """Non-finite floats become the strings "inf", "-inf", "nan" (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value


def to_junit(report: Report) -> str:
    counts = report.counts()
    failures = sum(r.failing and r.status != "error" for r in report.results)
    suite = ET.Element(
        "testsuite",
        name="refimpl-conformance",
        tests=str(len(report.results)),
        failures=str(failures),
        errors=str(counts.get("error", 0)),
        skipped=str(sum(r.status in ("skip", "unsupported", "xfail") and not r.failing for r in report.results)),
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (("refimpl_version", report.refimpl_version), ("suite_id", report.suite_id),
                        ("dtype", report.dtype), ("source", report.source), ("compared", str(report.compared))):
        ET.SubElement(properties, "property", name=name, value=value)
    for result in report.results:
        case = ET.SubElement(suite, "testcase", classname=result.component, name=result.case_id)
        if result.status == "error":
            ET.SubElement(case, "error", message=result.reason).text = result.explain(verbose=True)
        elif result.failing:
            message = f"{result.status}: {summary_detail(result)}"
            ET.SubElement(case, "failure", message=message).text = result.explain()
        elif result.status in ("skip", "unsupported", "xfail"):
            ET.SubElement(case, "skipped", message=f"{result.status}: {result.reason}")
    if report.compared == 0:
        ET.SubElement(suite, "system-err").text = "no case was compared: the run fails"
    return ET.tostring(suite, encoding="unicode")
