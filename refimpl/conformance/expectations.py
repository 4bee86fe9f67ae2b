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
    tensor = "d_W*"               # fnmatch over tensor names (default "*")
    rtol = 1e-5
    atol = 1e-8

Every entry needs a non-empty reason (tolerance entries too); an entry that matches no case is warned about.
"""

from __future__ import annotations

import tomllib
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

    def unmatched(self, case_ids: list[str]) -> list[str]:
        """Warnings for entries that match none of `case_ids`."""
        warnings = []
        for entry in self.entries:
            if not any(fnmatchcase(c, entry.case) for c in case_ids):
                warnings.append(f"{self.source}: {entry.kind} entry {entry.case!r} matches no case")
        for tolerance in self.tolerances:
            if not any(fnmatchcase(c, tolerance.case) for c in case_ids):
                warnings.append(f"{self.source}: tolerance entry {tolerance.case!r} matches no case")
        return warnings


def load_expectations(path: Path) -> Expectations:
    """Read and validate an expectations file; ValueError naming the file and the entry."""
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: expectations file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML ({error})") from None
    unknown = set(document) - {"skip", "xfail", "tolerance"}
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)} (skip, xfail, tolerance)")
    result = Expectations(source=str(path))
    for kind in ("skip", "xfail"):
        for index, raw in enumerate(document.get(kind, [])):
            case, reason = _case_and_reason(path, kind, index, raw)
            result.entries.append(Expectation(kind, case, reason))
    for index, raw in enumerate(document.get("tolerance", [])):
        case, reason = _case_and_reason(path, "tolerance", index, raw)
        try:
            rtol, atol = float(raw["rtol"]), float(raw["atol"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: tolerance[{index}] needs numeric rtol and atol") from None
        tensor = raw.get("tensor", "*")
        result.tolerances.append(ToleranceOverride(case, str(tensor), rtol, atol, reason))
    return result


def _case_and_reason(path: Path, kind: str, index: int, raw: Any) -> tuple[str, str]:
    if not isinstance(raw, dict) or not isinstance(raw.get("case"), str):
        raise ValueError(f"{path}: {kind}[{index}] needs a 'case' pattern")
    reason = raw.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError(f"{path}: {kind}[{index}] ({raw['case']!r}) needs a non-empty 'reason'")
    return raw["case"], reason
