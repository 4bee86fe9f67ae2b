"""The spec's lists of golden cases agree with the registry (`refimpl.cases.all_cases`): every
registered case is named on the spec page its `spec_section` points to, and every case id the spec
names (`component/name`, for a registered component) is registered."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from refimpl.cases import all_cases
from refimpl.cases._base import CaseSpec

ROOT = Path(__file__).resolve().parents[1]
CASE_ID = re.compile(r"`([a-z][a-z0-9_]*)/([a-z0-9][a-z0-9_]*)`")


def spec_pages() -> dict[str, str]:
    return {f"spec/{p.name}": p.read_text() for p in sorted((ROOT / "spec").glob("*.md"))}


def unlisted_cases(cases: Iterable[CaseSpec], pages: Mapping[str, str]) -> list[str]:
    """Registered cases whose spec page names them neither as `name` nor as `component/name`."""
    missing = []
    for case in cases:
        page = pages.get(case.spec_section.split("#")[0], "")
        if f"`{case.name}`" not in page and f"`{case.case_id}`" not in page:
            missing.append(f"{case.case_id} (not named in {case.spec_section.split('#')[0]})")
    return missing


def unregistered_ids(cases: Iterable[CaseSpec], pages: Mapping[str, str]) -> list[str]:
    """`component/name` ids in the spec, for a registered component, that name no registered case."""
    registered = {case.case_id for case in cases}
    components = {case_id.split("/")[0] for case_id in registered}
    return sorted(
        f"{page}: {component}/{name}"
        for page, text in pages.items()
        for component, name in CASE_ID.findall(text)
        if component in components and f"{component}/{name}" not in registered
    )


def test_every_registered_case_is_named_on_its_spec_page() -> None:
    assert unlisted_cases(all_cases(), spec_pages()) == []


def test_every_case_id_in_the_spec_is_registered() -> None:
    assert unregistered_ids(all_cases(), spec_pages()) == []


def test_negative_controls_a_new_case_or_a_stale_id_is_caught() -> None:
    cases = all_cases()
    pages = spec_pages()
    extra = CaseSpec("capsule_routing", "not_in_the_spec", "", "spec/capsule_routing.md#algorithm", {},
                     cases[0].build)
    assert unlisted_cases([*cases, extra], pages) == ["capsule_routing/not_in_the_spec (not named in "
                                                      "spec/capsule_routing.md)"]
    stale = dict(pages, **{"spec/mind.md": pages["spec/mind.md"] + "\nSee `mind/renamed_case`.\n"})
    assert unregistered_ids(cases, stale) == ["spec/mind.md: mind/renamed_case"]
