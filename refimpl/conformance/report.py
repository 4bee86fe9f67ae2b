"""Rendering a conformance report: a terminal table, JSON, and JUnit XML."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import asdict
from typing import Any

from refimpl.conformance.runner import FAILING, Report


def format_table(report: Report, verbose: bool = False) -> str:
    """One line per case, then the details of every failing case, then the totals."""
    width = max((len(r.case_id) for r in report.results), default=10) + 2
    lines = [f"refimpl conformance: {report.source}, {report.dtype}",
             f"{'case':<{width}}{'status':<13}{'worst':>10}  detail", "-" * (width + 50)]
    for result in report.results:
        worst = f"{result.worst_share:.2g}" if result.comparisons else "-"
        detail = result.reason
        if result.status in FAILING and result.failing_names:
            detail = "diverges: " + ", ".join(result.failing_names[:4])
            if len(result.failing_names) > 4:
                detail += f" (+{len(result.failing_names) - 4})"
        if result.loosened:
            detail = (detail + "; " if detail else "") + "tolerance loosened"
        lines.append(f"{result.case_id:<{width}}{result.status.upper():<13}{worst:>10}  {detail}")
    details = [r.text for r in report.results if r.status in FAILING or (verbose and r.comparisons)]
    if details:
        lines += ["", *details]
    lines += [f"warning: {w}" for w in report.warnings]
    counts = report.counts()
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    lines.append(f"{'OK' if report.ok else 'FAILED'}: {summary or 'no cases'}")
    lines.append("('worst' is the largest share of the allowed error any element uses: 1 is the limit)")
    return "\n".join(lines)


def to_json(report: Report) -> str:
    document: dict[str, Any] = {
        "ok": report.ok,
        "dtype": report.dtype,
        "source": report.source,
        "counts": report.counts(),
        "warnings": report.warnings,
        "cases": [
            {
                "case_id": r.case_id,
                "component": r.component,
                "status": r.status,
                "reason": r.reason,
                "first_divergent_intermediate": r.first_divergent_intermediate,
                "tolerance_loosened": r.loosened,
                "ignored": r.ignored,
                "tensors": [
                    {**asdict(c), "max_abs_index": list(c.max_abs_index),
                     "max_rel_index": list(c.max_rel_index)}
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
    suite = ET.Element(
        "testsuite",
        name="refimpl-conformance",
        tests=str(len(report.results)),
        failures=str(counts.get("fail", 0) + counts.get("xpass", 0)),
        errors=str(counts.get("error", 0)),
        skipped=str(counts.get("skip", 0) + counts.get("unsupported", 0) + counts.get("xfail", 0)),
    )
    for result in report.results:
        case = ET.SubElement(suite, "testcase", classname=result.component, name=result.case_id)
        if result.status in ("fail", "xpass"):
            ET.SubElement(case, "failure", message=f"{result.status}: {result.reason or 'diverges'}").text = result.text
        elif result.status == "error":
            ET.SubElement(case, "error", message=result.reason).text = result.text
        elif result.status in ("skip", "unsupported", "xfail"):
            ET.SubElement(case, "skipped", message=f"{result.status}: {result.reason}")
    return ET.tostring(suite, encoding="unicode")
