"""Every golden case's `spec_section` names a heading that exists in `spec/`.

A `spec_section` is `spec/<page>.md#<anchor>`; the anchor is the heading as GitHub renders it
(lower case, punctuation other than `-` and `_` dropped, spaces to `-`, a repeated heading gets
`-1`, `-2`, ...). Headings inside fenced code blocks are not headings.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from refimpl.cases import all_cases
from refimpl.golden import default_golden_root

GOLDEN = default_golden_root()
SPEC = GOLDEN.parent / "spec"

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading's text (before de-duplication)."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def page_anchors(markdown: str) -> set[str]:
    """Every heading anchor of one page, de-duplicated as GitHub does."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match is None:
            continue
        anchor = github_anchor(match.group(2))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchors.add(anchor if count == 0 else f"{anchor}-{count}")
    return anchors


def spec_anchors(spec_dir: Path) -> dict[str, set[str]]:
    """`spec/<page>.md` -> the anchors of that page, for every page of `spec_dir`."""
    return {
        f"spec/{page.name}": page_anchors(page.read_text(encoding="utf-8"))
        for page in sorted(spec_dir.glob("*.md"))
    }


def unresolved(sections: dict[str, str], anchors: dict[str, set[str]]) -> list[str]:
    """The `case: section` pairs whose page or anchor does not exist."""
    bad = []
    for case_id, section in sorted(sections.items()):
        page, _, anchor = section.partition("#")
        if page not in anchors or not anchor or anchor not in anchors[page]:
            bad.append(f"{case_id}: {section}")
    return bad


def committed_sections() -> dict[str, str]:
    sections = {}
    for case_json in sorted(GOLDEN.glob("*/*/case.json")):
        document = json.loads(case_json.read_text(encoding="utf-8"))
        sections[document["case_id"]] = document["spec_section"]
    return sections


def test_every_committed_golden_links_to_an_existing_heading() -> None:
    sections = committed_sections()
    assert len(sections) > 100
    assert unresolved(sections, spec_anchors(SPEC)) == []


def test_every_registered_case_links_to_an_existing_heading() -> None:
    sections = {case.case_id: case.spec_section for case in all_cases()}
    assert unresolved(sections, spec_anchors(SPEC)) == []


def test_anchors_follow_github() -> None:
    page = (
        "# Capsule routing: UMI's routing\n## Edge cases (goldens)\n```\n## not a heading\n```\n"
        "## Worked example (`case/tiny`)\n## Edge cases\n## Edge cases\n"
    )
    assert page_anchors(page) == {
        "capsule-routing-umis-routing", "edge-cases-goldens", "worked-example-casetiny",
        "edge-cases", "edge-cases-1",
    }


@pytest.mark.parametrize(
    "section",
    ["spec/mlp.md#cases", "spec/mlp.md", "spec/no_such_page.md#equations", "spec/mlp.md#not-a-heading"],
)
def test_negative_control_a_broken_link_is_reported(section: str) -> None:
    anchors = spec_anchors(SPEC)
    assert unresolved({"mlp/tiny_hand": "spec/mlp.md#worked-example"}, anchors) == []
    assert unresolved({"mlp/broken": section}, anchors) == [f"mlp/broken: {section}"]


def design_references(root: Path) -> list[str]:
    """Files of spec/ and refimpl/ under `root` that mention DESIGN.md, a file users do not have."""
    files = [*sorted((root / "spec").rglob("*")), *sorted((root / "refimpl").rglob("*.py"))]
    return [
        str(path.relative_to(root)) for path in files
        if path.is_file() and path.suffix in (".md", ".py", ".json") and "DESIGN" in path.read_text(encoding="utf-8")
    ]


def test_the_spec_and_the_code_stand_without_design_md() -> None:
    assert design_references(SPEC.parent) == []


def test_negative_control_a_design_reference_is_found(tmp_path: Path) -> None:
    (tmp_path / "spec").mkdir()
    (tmp_path / "refimpl").mkdir()
    (tmp_path / "spec" / "page.md").write_text("# Page\nAs DESIGN.md section 5 says.\n", encoding="utf-8")
    (tmp_path / "refimpl" / "module.py").write_text('"""Plain."""\n', encoding="utf-8")
    assert design_references(tmp_path) == ["spec/page.md"]
