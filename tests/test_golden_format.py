"""The committed goldens load, verify and regenerate; damaged fixtures fail loudly, naming the file."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from refimpl.cases import all_cases
from refimpl.golden import default_golden_root
from refimpl.golden.format import (
    GoldenError,
    find_cases,
    load_tensor,
    npy_bytes,
    read_case,
    sha256_hex,
)
from refimpl.golden.generate import compare_trees, float32_atol, generate

GOLDEN = default_golden_root()
SIZE_BUDGET_BYTES = 5_000_000


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("regenerated")
    generate(out)
    return out


def _small_case(tmp_path: Path) -> Path:
    """A copy of a committed MHSA case (its tensors include x, mask, Wq)."""
    source = sorted((GOLDEN / "mhsa").iterdir())[0]
    target = tmp_path / "mhsa" / source.name
    shutil.copytree(source, target)
    return target


def test_every_registered_case_is_committed() -> None:
    committed = {f"{p.parent.name}/{p.name}" for p in find_cases(GOLDEN)}
    registered = {case.case_id for case in all_cases()}
    assert committed == registered


def test_committed_goldens_load_and_verify_their_checksums() -> None:
    for folder in find_cases(GOLDEN):
        case = read_case(folder)
        assert case.case_id == f"{folder.parent.name}/{folder.name}"
        for entry in case.tensors:
            array = case.load(entry)
            assert array.dtype.name == entry.dtype
        assert case.entries("output"), f"{case.case_id} has no output"


def test_golden_tree_within_size_budget() -> None:
    size = sum(p.stat().st_size for p in GOLDEN.rglob("*") if p.is_file())
    assert size < SIZE_BUDGET_BYTES, f"golden/ is {size / 1e6:.2f} MB, budget 5 MB"


def test_regeneration_matches_committed_goldens(regenerated: Path) -> None:
    problems = compare_trees(GOLDEN, regenerated)
    assert problems == [], "\n".join(problems)


def test_two_generations_are_byte_identical(regenerated: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate(again)
    first = sorted(p.relative_to(regenerated) for p in regenerated.rglob("*") if p.is_file())
    second = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert first == second
    for relative in first:
        assert (regenerated / relative).read_bytes() == (again / relative).read_bytes(), relative


def test_drift_is_detected_and_named(tmp_path: Path) -> None:
    committed = tmp_path / "committed"
    generate(committed, components=["mhsa"])
    folder = sorted((committed / "mhsa").iterdir())[0]
    document = json.loads((folder / "case.json").read_text())
    entry = next(t for t in document["tensors"] if t["name"] == "out")
    out = np.load(folder / "out.npy")
    out[np.unravel_index(np.argmax(np.abs(out)), out.shape)] *= 1 + 1e-8
    (folder / "out.npy").write_bytes(npy_bytes(out))
    entry["sha256"] = sha256_hex(npy_bytes(out))
    (folder / "case.json").write_text(json.dumps(document))
    fresh = tmp_path / "fresh"
    generate(fresh, components=["mhsa"])
    problems = compare_trees(committed, fresh, components=["mhsa"])
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"mhsa/{folder.name}: drift beyond the float64 noise floor: out:")


def _float32_of(document: dict[str, Any], name: str) -> dict[str, Any]:
    entry = next(t for t in document["tensors"] if t["name"] == name)
    tolerance: dict[str, Any] = entry["tolerance"]["float32"]
    return tolerance


def _spread(document: dict[str, Any]) -> float:
    return float(_float32_of(document, "out")["perturbation_spread"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(description=d["description"] + "!"), "description committed"),
        (lambda d: d.update(spec_section="spec/other.md"), "spec_section committed"),
        (lambda d: d["config"].update(num_heads=3), "config.num_heads committed"),
        (lambda d: d["tensors"][0].update(role="param"), "tensor 'x': role committed"),
        (lambda d: d["tensors"][1].update(file="m.npy"), "tensor 'mask': file committed"),
        (lambda d: d["tensors"][-1]["tolerance"]["float64"].update(rtol=1e-6), "tolerance.float64.rtol committed"),
        (lambda d: _float32_of(d, "out").update(rtol=1e6), "tolerance.float32.rtol committed"),
        (lambda d: _float32_of(d, "out").update(safety_factor=4.0), "tolerance.float32.safety_factor"),
        (lambda d: _float32_of(d, "out").update(atol=_float32_of(d, "out")["atol"] * 2),
         "tolerance.float32.atol committed .* does not follow from its recorded ingredients"),
        (lambda d: _float32_of(d, "out").update(perturbation_spread=_spread(d) * 1.5),
         "tolerance.float32.perturbation_spread committed"),
        (lambda d: _float32_of(d, "d_x")["alternative_errors"].pop("online_softmax"),
         "tolerance.float32.alternative_errors: committed"),
        (lambda d: d.update(extra_field=1), "extra_field committed but no longer generated"),
    ],
)
def test_verify_compares_every_field_of_case_json(tmp_path: Path, edit: object, message: str) -> None:
    committed = tmp_path / "committed"
    generate(committed, cases=["mhsa/realistic"])
    path = committed / "mhsa" / "realistic" / "case.json"
    document = json.loads(path.read_text())
    edit(document)  # type: ignore[operator]
    path.write_text(json.dumps(document))
    fresh = tmp_path / "fresh"
    generate(fresh, cases=["mhsa/realistic"])
    problems = compare_trees(committed, fresh, components=["mhsa"])
    assert len(problems) == 1, problems
    assert re.search(f"^mhsa/realistic: .*{message}", problems[0]), problems[0]


def test_verify_allows_machine_dependent_float32_measurements_to_move_within_a_factor(tmp_path: Path) -> None:
    """A float32 error measured on another CPU may differ (up to 4.5x seen); within 8x it is not drift,
    beyond it is, and the atol must still follow from the recorded ingredients."""
    committed = tmp_path / "committed"
    generate(committed, cases=["mhsa/large_logits"])
    path = committed / "mhsa" / "large_logits" / "case.json"
    fresh = tmp_path / "fresh"
    generate(fresh, cases=["mhsa/large_logits"])
    original = path.read_text()
    for factor, drift in ((5.0, False), (10.0, True)):
        document = json.loads(original)
        tolerance = _float32_of(document, "d_x")
        for alternative in tolerance["alternative_errors"]:
            tolerance["alternative_errors"][alternative] *= factor
        tolerance["reference_float32_error"] *= factor
        measured = [tolerance["reference_float32_error"], tolerance["perturbation_spread"],
                    *tolerance["alternative_errors"].values()]
        tolerance["atol"] = float32_atol(tolerance["safety_factor"], tolerance["atol_floor"], measured)
        path.write_text(json.dumps(document))
        problems = compare_trees(committed, fresh, components=["mhsa"])
        assert bool(problems) == drift, (factor, problems)
        assert all("more than 8x apart" in p for p in problems)


def test_flipped_byte_names_the_file(tmp_path: Path) -> None:
    folder = _small_case(tmp_path)
    path = folder / "x.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    case = read_case(folder)
    entry = next(t for t in case.tensors if t.name == "x")
    with pytest.raises(GoldenError, match=r"x\.npy: sha256"):
        load_tensor(folder, entry)


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    folder = _small_case(tmp_path)
    path = folder / "Wq.npy"
    path.write_bytes(path.read_bytes()[:40])
    case = read_case(folder)
    entry = next(t for t in case.tensors if t.name == "Wq")
    with pytest.raises(GoldenError, match=r"Wq\.npy"):
        load_tensor(folder, entry)


def test_missing_tensor_file_names_the_file(tmp_path: Path) -> None:
    folder = _small_case(tmp_path)
    (folder / "mask.npy").unlink()
    case = read_case(folder)
    with pytest.raises(GoldenError, match=r"mask\.npy: missing"):
        case.load_role("input")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(schema_version=2), "schema_version 2"),
        (lambda d: d.pop("seed"), "'seed'"),
        (lambda d: d["tensors"][0].update(role="weights"), "role 'weights'"),
        (lambda d: d["tensors"][0].update(dtype="float16"), "dtype 'float16'"),
        (lambda d: d["tensors"][-1].pop("tolerance"), "tolerance"),
        (lambda d: d["tensors"][0].update(file="../../etc/passwd"), "bad file name"),
    ],
)
def test_malformed_case_json_names_the_file(tmp_path: Path, edit: object, message: str) -> None:
    folder = _small_case(tmp_path)
    document = json.loads((folder / "case.json").read_text())
    edit(document)  # type: ignore[operator]
    (folder / "case.json").write_text(json.dumps(document))
    with pytest.raises(GoldenError, match=message) as raised:
        read_case(folder)
    assert "case.json" in str(raised.value)


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    folder = _small_case(tmp_path)
    (folder / "case.json").write_text("{not json")
    with pytest.raises(GoldenError, match="case.json: not valid JSON"):
        read_case(folder)


def test_pickled_npy_is_refused(tmp_path: Path) -> None:
    folder = _small_case(tmp_path)
    path = folder / "x.npy"
    np.save(path, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    document = json.loads((folder / "case.json").read_text())
    entry = next(t for t in document["tensors"] if t["name"] == "x")
    entry["sha256"] = sha256_hex(path.read_bytes())
    (folder / "case.json").write_text(json.dumps(document))
    case = read_case(folder)
    with pytest.raises(GoldenError, match=r"x\.npy: not a readable npy"):
        case.load(next(t for t in case.tensors if t.name == "x"))


def _schema_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((GOLDEN.parent / "spec" / "case.schema.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator: jsonschema.protocols.Validator = validator_class(schema)
    return validator


def test_every_case_json_validates_against_the_published_schema() -> None:
    validator = _schema_validator()
    folders = find_cases(GOLDEN)
    assert len(folders) > 100
    for folder in folders:
        document = json.loads((folder / "case.json").read_text())
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
        assert not errors, (folder, errors[:3])


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["tensors"][0].update(role="weights"),
        lambda d: d["tensors"][-1]["tolerance"]["float32"].pop("perturbation_spread"),
        lambda d: d["tensors"][-1]["tolerance"]["float32"].update(atol=-1.0),
        lambda d: d["tensors"][-1]["tolerance"]["float32"]["alternative_errors"].update(fortran_order="big"),
        lambda d: d["tensors"][-1]["tolerance"]["float64"].update(slack=1.0),
        lambda d: d["tensors"][0].update(tolerance=d["tensors"][-1]["tolerance"]),
        lambda d: d.update(seed=-1),
        lambda d: d.update(owner="someone"),
    ],
)
def test_a_mutated_case_json_fails_the_schema(edit: object) -> None:
    """Negative control: each edit makes an otherwise valid case.json invalid."""
    validator = _schema_validator()
    document = json.loads((find_cases(GOLDEN)[0] / "case.json").read_text())
    assert validator.is_valid(document)
    edit(document)  # type: ignore[operator]
    assert not validator.is_valid(document)


def test_npy_files_are_version_1_little_endian_c_order() -> None:
    for folder in find_cases(GOLDEN)[:5]:
        for path in folder.glob("*.npy"):
            data = path.read_bytes()
            assert data[:8] == b"\x93NUMPY\x01\x00", path
            header = data[10:10 + int.from_bytes(data[8:10], "little")].decode("latin1")
            assert "'fortran_order': False" in header, path
            assert "'descr': '<f8'" in header or "'descr': '<i8'" in header or "'descr': '|b1'" in header
