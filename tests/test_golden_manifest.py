"""The golden manifest makes the goldens tamper-evident: any edited, missing or extra file is refused,
named relative to golden/, by the manifest check and by the `refimpl golden` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refimpl.cli import main
from refimpl.golden import default_golden_root
from refimpl.golden.generate import generate
from refimpl.golden.manifest import (
    MANIFEST_NAME,
    SUITE_ID_LENGTH,
    ManifestError,
    check_manifest,
    suite_id,
    write_manifest,
)

GOLDEN = default_golden_root()


@pytest.fixture()
def small_tree(tmp_path: Path) -> Path:
    """A freshly generated golden tree of one small component, with its manifest."""
    generate(tmp_path, components=["target_attention"])
    return tmp_path


def _case_json(tree: Path) -> Path:
    return sorted(tree.glob("target_attention/*/case.json"))[0]


def _edit_float32_rtol(path: Path) -> None:
    """A one-byte edit: the first float32 rtol 1e-06 becomes 1e+06 (the JSON stays valid)."""
    text = path.read_text()
    marker = '"float32": {\n'
    start = text.index(marker)
    at = text.index('"rtol": 1e-06', start)
    path.write_text(text[:at] + '"rtol": 1e+06' + text[at + len('"rtol": 1e-06'):])


def _edit_role(path: Path) -> None:
    """A one-byte edit of a role: "output" becomes "outpux" (still a string)."""
    text = path.read_text()
    path.write_text(text.replace('"role": "output"', '"role": "outpux"', 1))


def test_committed_goldens_match_their_manifest() -> None:
    identifier = check_manifest(GOLDEN)
    assert len(identifier) == SUITE_ID_LENGTH and int(identifier, 16) >= 0
    assert suite_id(GOLDEN) == identifier


def test_generate_writes_the_manifest_over_every_file(small_tree: Path) -> None:
    listed = json.loads((small_tree / MANIFEST_NAME).read_text())["files"]
    on_disk = sorted(p.relative_to(small_tree).as_posix() for p in small_tree.rglob("*")
                     if p.is_file() and p.name != MANIFEST_NAME)
    assert sorted(listed) == on_disk
    assert any(name.endswith("/case.json") for name in listed)
    before = (small_tree / MANIFEST_NAME).read_bytes()
    write_manifest(small_tree)
    assert (small_tree / MANIFEST_NAME).read_bytes() == before


@pytest.mark.parametrize("edit", [_edit_float32_rtol, _edit_role])
def test_one_byte_edit_of_case_json_is_refused_naming_the_file(small_tree: Path, edit: object) -> None:
    path = _case_json(small_tree)
    original = path.read_bytes()
    edit(path)  # type: ignore[operator]
    edited = path.read_bytes()
    assert len(edited) == len(original)
    assert sum(a != b for a, b in zip(original, edited, strict=True)) == 1
    relative = path.relative_to(small_tree).as_posix()
    with pytest.raises(ManifestError, match=f"^{relative}: sha256 .* does not match"):
        check_manifest(small_tree)


def test_missing_and_unlisted_files_are_refused(small_tree: Path) -> None:
    victim = sorted(small_tree.glob("target_attention/*/out.npy"))[0]
    victim.rename(victim.with_name("renamed.npy"))
    relative = victim.relative_to(small_tree).as_posix()
    with pytest.raises(ManifestError, match=f"^{relative}: missing"):
        check_manifest(small_tree)
    victim.with_name("renamed.npy").rename(victim)
    check_manifest(small_tree)
    extra = victim.with_name("extra.npy")
    extra.write_bytes(victim.read_bytes())
    with pytest.raises(ManifestError, match=f"^{extra.relative_to(small_tree).as_posix()}: not listed"):
        check_manifest(small_tree)


def test_missing_or_malformed_manifest_is_refused(small_tree: Path) -> None:
    manifest = small_tree / MANIFEST_NAME
    manifest.write_text('{"files": []}')
    with pytest.raises(ManifestError, match=f"^{MANIFEST_NAME}: expected"):
        check_manifest(small_tree)
    manifest.unlink()
    with pytest.raises(ManifestError, match=f"^{MANIFEST_NAME}: missing"):
        check_manifest(small_tree)


def test_suite_id_changes_with_any_file(small_tree: Path) -> None:
    before = suite_id(small_tree)
    _edit_role(_case_json(small_tree))
    write_manifest(small_tree)
    assert suite_id(small_tree) != before


@pytest.mark.parametrize("command", [["list"], ["verify", "--component", "target_attention"]])
@pytest.mark.parametrize("edit", [_edit_float32_rtol, _edit_role])
def test_golden_commands_refuse_an_edited_case_json(
    small_tree: Path, capsys: pytest.CaptureFixture[str], command: list[str], edit: object
) -> None:
    assert main(["golden", *command, "--golden", str(small_tree)]) == 0
    path = _case_json(small_tree)
    edit(path)  # type: ignore[operator]
    assert main(["golden", *command, "--golden", str(small_tree)]) == 2
    err = capsys.readouterr().err
    assert f"{path.relative_to(small_tree).as_posix()}: sha256" in err
