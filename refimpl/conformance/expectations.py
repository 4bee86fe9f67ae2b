"""The skip/xfail file: known gaps of an implementation, each with its reason.

A TOML file (Python's own `tomllib` reads it):

    [[skip]]                      # not run at all
    case = "mhsa/large_logits"    # fnmatch pattern over case ids
    reason = "our kernel has no masking yet"

    [[xfail]]                     # run; a failure is expected, a pass (xpass) fails the run
    case = "attention/*"
    reason = "issue #12: softmax in float16"

    [[tolerance]]                 # loosen a tolerance; the report says so, with the values used
    case = "mhsa/*"
    tensor = "d_W*"               # required: fnmatch over tensor names; the entry applies to these only
    rtol = 1e-5
    atol = 1e-8

Every entry needs a non-empty reason (tolerance entries too). Any other key or table is an error naming
it and the allowed ones (a misspelt `tensors =` must not widen a tolerance to every tensor). An entry that
matches no case, or a tolerance whose pattern matches none of its cases' tensors, is warned about.
spec/conformance.md documents the format.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Expectation:
    kind: str  # "skip" or "xfail"
    case: str
    reason: str


@dataclass(frozen=True)
class ToleranceOverride:
    case: str
    tensor: str
    rtol: float
    atol: float
    reason: str


@dataclass
class Expectations:
    entries: list[Expectation] = field(default_factory=list)
    tolerances: list[ToleranceOverride] = field(default_factory=list)
    source: str = ""

    def status_for(self, case_id: str) -> Expectation | None:
        """The first skip or xfail entry matching `case_id`."""
        return next((e for e in self.entries if fnmatchcase(case_id, e.case)), None)

    def tolerance_for(self, case_id: str, tensor: str) -> ToleranceOverride | None:
        return next(
            (t for t in self.tolerances
             if fnmatchcase(case_id, t.case) and fnmatchcase(tensor, t.tensor)),
            None,
        )

    def unmatched(self, tensors_by_case: Mapping[str, Sequence[str]]) -> list[str]:
        """Warnings for entries that match none of the cases (or, for tolerances, none of their tensors)."""
        case_ids = list(tensors_by_case)
        warnings = []
        for entry in self.entries:
            if not any(fnmatchcase(c, entry.case) for c in case_ids):
                warnings.append(f"{self.source}: {entry.kind} entry {entry.case!r} matches no case")
        for tolerance in self.tolerances:
            matched = [c for c in case_ids if fnmatchcase(c, tolerance.case)]
            if not matched:
                warnings.append(f"{self.source}: tolerance entry {tolerance.case!r} matches no case")
            elif not any(fnmatchcase(t, tolerance.tensor) for c in matched for t in tensors_by_case[c]):
                warnings.append(f"{self.source}: tolerance entry {tolerance.case!r} tensor {tolerance.tensor!r} "
                                "matches no tensor of those cases")
        return warnings


ALLOWED_KEYS = {
    "skip": ("case", "reason"),
    "xfail": ("case", "reason"),
    "tolerance": ("case", "tensor", "rtol", "atol", "reason"),
}


def load_expectations(path: Path) -> Expectations:
    """Read and validate an expectations file; ValueError naming the file, the entry and the key."""
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: expectations file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML ({error})") from None
    for table, entries in document.items():
        if table not in ALLOWED_KEYS:
            allowed = ", ".join(f"[[{k}]]" for k in ALLOWED_KEYS)
            raise ValueError(f"{path}: unknown table {table!r} (allowed: {allowed})")
        if not isinstance(entries, list):
            raise ValueError(f"{path}: {table!r} must be an array of tables, written [[{table}]]")
        for index, raw in enumerate(entries):
            if not isinstance(raw, dict):
                raise ValueError(f"{path}: {table}[{index}] must be a table")
            unknown = [key for key in raw if key not in ALLOWED_KEYS[table]]
            if unknown:
                raise ValueError(f"{path}: {table}[{index}]: unknown key {unknown[0]!r} "
                                 f"(allowed: {', '.join(ALLOWED_KEYS[table])})")
    result = Expectations(source=str(path))
    for kind in ("skip", "xfail"):
        for index, raw in enumerate(document.get(kind, [])):
            case, reason = _case_and_reason(path, kind, index, raw)
            result.entries.append(Expectation(kind, case, reason))
    for index, raw in enumerate(document.get("tolerance", [])):
        case, reason = _case_and_reason(path, "tolerance", index, raw)
        where = f"{path}: tolerance[{index}] ({case!r})"
        if not isinstance(raw.get("tensor"), str) or not raw["tensor"]:
            raise ValueError(f"{where} needs a 'tensor' pattern: a tolerance applies only to the tensors it names")
        values = [raw.get(key) for key in ("rtol", "atol")]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < math.inf for v in values):
            raise ValueError(f"{where} needs numeric rtol and atol, finite and >= 0")
        result.tolerances.append(ToleranceOverride(case, raw["tensor"], float(values[0]), float(values[1]), reason))
    return result


def _case_and_reason(path: Path, kind: str, index: int, raw: dict[str, Any]) -> tuple[str, str]:
    if not isinstance(raw.get("case"), str):
        raise ValueError(f"{path}: {kind}[{index}] needs a 'case' pattern")
    reason = raw.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError(f"{path}: {kind}[{index}] ({raw['case']!r}) needs a non-empty 'reason'")
    return raw["case"], reason
