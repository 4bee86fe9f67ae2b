"""The traceability table of spec/README.md, and every equation reference it governs.

Every "ULIM/UMI/IFA eq. N" in spec/, the README, the code's docstrings and comments and the tests
must name a row of the table that is not marked *not confirmed*; on a formula line
(`z_j = ... (UMI eq. 3)`) the left-hand symbol must be one the row defines. A reference is
attributed to the paper named nearest before it in its paragraph (or right after it: "eq. 1 of
Vaswani"); a reference no paper name claims is an error, so every citation says whose it is.
"""

from __future__ import annotations

import importlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_spec_links import spec_anchors

from refimpl.golden import default_golden_root

REPO = default_golden_root().parent
README = REPO / "spec" / "README.md"
PAPERS = ("ULIM", "UMI", "IFA")
_NAMES = r"(ULIM|UMI|IFA|MIND|ComiRec|Vaswani|Katharopoulos|Kingma|Sabour|ESMM|See et al)"
NAME = re.compile(rf"\b{_NAMES}\b")
NAME_AFTER = re.compile(rf"\s+(?:of|in)\s+{_NAMES}\b")
REFERENCE = re.compile(
    r"\b(?:eqs?|equations?)\.?[ \t]*\(?(\d+)\)?(?:[ \t]*(?:-|–|to)[ \t]*\(?(\d+)\)?)?", re.IGNORECASE
)
ASSIGNMENT = re.compile(r"(?<![<>=!])=(?!=)")
CODE = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Row:
    paper: str
    numbers: tuple[int, ...]
    symbols: frozenset[str]
    confirmed: bool
    cells: dict[str, str]


@dataclass(frozen=True)
class Reference:
    where: str
    paper: str | None
    numbers: tuple[int, ...]
    symbol: str | None


def lhs_symbol(left: str) -> str | None:
    """The base letters of the last token before an `=`: `z^r_j` -> `z`, `HitRate@N` -> `HitRate`."""
    tokens = left.split()
    if not tokens:
        return None
    match = re.match(r"[A-Za-z]+", tokens[-1].lstrip("`'\"(*"))
    return match.group(0) if match else None


def expand(numbers: str) -> tuple[int, ...]:
    """`1-4, 6, 7` -> (1, 2, 3, 4, 6, 7); `—` -> ()."""
    out: list[int] = []
    for part in numbers.split(","):
        part = part.strip()
        if re.fullmatch(r"\d+-\d+", part):
            low, high = (int(x) for x in part.split("-"))
            out.extend(range(low, high + 1))
        elif part.isdigit():
            out.append(int(part))
    return tuple(out)


def parse_table(readme: str) -> list[Row]:
    section = readme.split("## Traceability", 1)[1].split("\n## ", 1)[0]
    rows = []
    columns = ("paper", "eq", "defines", "function", "spec", "golden", "tests", "checked")
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith("|---") or line.startswith("| paper"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        named = dict(zip(columns, cells, strict=True))
        symbols = frozenset(
            s for code in CODE.findall(named["defines"]) if "=" in code
            if (s := lhs_symbol(code.split("=", 1)[0])) is not None
        )
        rows.append(Row(named["paper"], expand(named["eq"]), symbols, named["checked"] != "not confirmed", named))
    return rows


def references(where: str, text: str) -> list[Reference]:
    found = []
    for match in REFERENCE.finditer(text):
        start, end = match.span()
        after = NAME_AFTER.match(text, end)
        before = list(NAME.finditer(text, max(text.rfind("\n\n", 0, start), start - 300, 0), start))
        paper = after.group(1) if after else (before[-1].group(1) if before else None)
        low = int(match.group(1))
        numbers = tuple(range(low, int(match.group(2)) + 1)) if match.group(2) else (low,)
        line_start = text.rfind("\n", 0, start) + 1
        assignments = list(ASSIGNMENT.finditer(text, line_start, start))
        symbol = None
        if assignments and len(numbers) == 1:
            symbol = lhs_symbol(text[line_start : assignments[0].start()])
        line = text.count("\n", 0, start) + 1
        found.append(Reference(f"{where}:{line}", paper, numbers, symbol))
    return found


def problems(refs: list[Reference], rows: list[Row]) -> list[str]:
    by_number = {(row.paper, n): row for row in rows for n in row.numbers}
    bad = []
    for ref in refs:
        if ref.paper is None:
            bad.append(f"{ref.where}: eq. {ref.numbers} names no paper")
            continue
        if ref.paper not in PAPERS:
            continue
        for number in ref.numbers:
            row = by_number.get((ref.paper, number))
            if row is None:
                bad.append(f"{ref.where}: {ref.paper} eq. {number} is not in the table")
            elif not row.confirmed:
                bad.append(f"{ref.where}: {ref.paper} eq. {number} is not confirmed; cite it by name")
            elif ref.symbol and row.symbols and len(ref.numbers) == 1 and ref.symbol not in row.symbols:
                bad.append(
                    f"{ref.where}: {ref.paper} eq. {number} defines {sorted(row.symbols)}, not {ref.symbol}"
                )
    return bad


def cited_files(root: Path) -> list[Path]:
    files = [*sorted((root / "spec").glob("*.md")), root / "README.md"]
    files += sorted((root / "refimpl").rglob("*.py")) + sorted((root / "tools").glob("*.py"))
    files += [p for p in sorted((root / "tests").glob("*.py")) if p.name != Path(__file__).name]
    return [p for p in files if p.exists()]


def without_the_table(readme: str) -> str:
    """spec/README.md with its traceability section blanked (same line count): the table declares
    the numbering, it does not cite it."""
    head, _, rest = readme.partition("## Traceability")
    section, sep, tail = rest.partition("\n## ")
    return head + "\n" * ("## Traceability" + section).count("\n") + sep + tail


def scan(root: Path) -> list[str]:
    readme = root / "spec" / "README.md"
    rows = parse_table(readme.read_text(encoding="utf-8"))
    refs = []
    for path in cited_files(root):
        text = path.read_text(encoding="utf-8")
        refs += references(str(path.relative_to(root)), without_the_table(text) if path == readme else text)
    return problems(refs, rows)


def test_every_equation_reference_uses_the_tables_numbering() -> None:
    assert scan(REPO) == []


def test_references_are_found_and_attributed() -> None:
    text = "UMI (SIGIR 2022),\neq. 10-14, harder.\n\nScaled dot-product attention is eq. 1 of Vaswani.\n"
    text += "    z^r_j  = sum_i w_i c_ij u_ij     (UMI eq. 3)\n\nAn orphan eq. 4.\n"
    refs = references("page", text)
    assert [(r.paper, r.numbers, r.symbol) for r in refs] == [
        ("UMI", (10, 11, 12, 13, 14), None), ("Vaswani", (1,), None), ("UMI", (3,), "z"), (None, (4,), None),
    ]


@pytest.fixture
def spec_copy(tmp_path: Path) -> Path:
    for folder in ("spec", "refimpl", "tests", "tools"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    assert scan(tmp_path) == []
    return tmp_path


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("(UMI eq. 3)\n", "(UMI eq. 5)\n", "UMI eq. 5 defines ['b'], not z"),  # issue 14's bug
        ("(UMI eq. 4)", "(UMI eq. 17)", "UMI eq. 17 is not in the table"),
        ("(UMI eq. 4)", "(IFA eq. 3)", "IFA eq. 3 is not confirmed"),
        ("## Decisions\n", "## Decisions\n\nSee eq. 4.\n", "eq. (4,) names no paper"),
    ],
)
def test_negative_control_a_wrong_reference_in_a_copy_fails(
    spec_copy: Path, old: str, new: str, expected: str
) -> None:
    page = spec_copy / "spec" / "capsule_routing.md"
    text = page.read_text(encoding="utf-8")
    assert old in text
    page.write_text(text.replace(old, new, 1), encoding="utf-8")
    found = scan(spec_copy)
    assert len(found) == 1 and found[0].startswith("spec/capsule_routing.md:") and expected in found[0], found


def test_the_table_numbers_each_equation_once_without_gaps() -> None:
    rows = parse_table(README.read_text(encoding="utf-8"))
    for paper in PAPERS:
        numbers = [n for row in rows if row.paper == paper for n in row.numbers]
        assert sorted(numbers) == list(range(1, max(numbers) + 1)), paper


def test_everything_the_table_names_exists() -> None:
    anchors = spec_anchors(REPO / "spec")
    missing = []
    for row in parse_table(README.read_text(encoding="utf-8")):
        codes = [code for name in ("function", "spec", "golden", "tests") for code in CODE.findall(row.cells[name])]
        for code in codes:
            if code.startswith("refimpl."):
                module, _, attribute = code.rpartition(".")
                if not hasattr(importlib.import_module(module), attribute):
                    missing.append(code)
            elif code.startswith("spec/"):
                page, _, anchor = code.partition("#")
                if page not in anchors or (anchor and anchor not in anchors[page]):
                    missing.append(code)
            elif code.startswith("tests/"):
                path, _, test = code.partition("::")
                source = REPO / path
                if not source.exists() or (test and f"def {test}(" not in source.read_text(encoding="utf-8")):
                    missing.append(code)
            elif "/" in code and not list(default_golden_root().glob(f"{code}/case.json")):
                missing.append(code)
        assert row.cells["tests"] and row.cells["function"], row
    assert missing == []


def test_negative_control_a_missing_name_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    readme = README.read_text(encoding="utf-8").replace(
        "`refimpl.metrics.precision_at_n`", "`refimpl.metrics.precision_at_k`"
    )
    (tmp_path / "README.md").write_text(readme, encoding="utf-8")
    monkeypatch.setattr(__import__(__name__), "README", tmp_path / "README.md")
    with pytest.raises(AssertionError, match="precision_at_k"):
        test_everything_the_table_names_exists()
