"""Reading and writing golden cases: `case.json` plus one `.npy` per tensor.

Loading never unpickles (`allow_pickle=False`), checks `case.json` against the schema described in
`spec/case.schema.json`, and verifies every tensor's sha256, shape and dtype: a damaged fixture is
a `GoldenError` naming the file, never a silent wrong answer.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

SCHEMA_VERSION = 1
ROLES = ("input", "param", "upstream_grad", "output", "intermediate", "grad")
CHECKED_ROLES = ("output", "intermediate", "grad")
DTYPES = ("float64", "int64", "bool")


class GoldenError(ValueError):
    """A golden case that cannot be trusted: missing, malformed, or not matching its checksum."""


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


@dataclass(frozen=True)
class Float32Tolerance:
    """Tolerance for float32 implementations and the measurements it comes from (spec/golden.md).

    atol = max(safety_factor * max(reference_float32_error, perturbation_spread,
    *alternative_errors.values()), atol_floor), rounded up to 2 significant digits.
    """

    rtol: float
    atol: float
    safety_factor: float
    atol_floor: float
    reference_float32_error: float
    perturbation_spread: float
    alternative_errors: tuple[tuple[str, float], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "rtol": self.rtol,
            "atol": self.atol,
            "safety_factor": self.safety_factor,
            "atol_floor": self.atol_floor,
            "reference_float32_error": self.reference_float32_error,
            "perturbation_spread": self.perturbation_spread,
            "alternative_errors": dict(self.alternative_errors),
        }


@dataclass(frozen=True)
class TensorEntry:
    name: str
    role: str
    file: str
    shape: tuple[int, ...]
    dtype: str
    sha256: str
    float64: Tolerance | None = None
    float32: Float32Tolerance | None = None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "file": self.file,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "sha256": self.sha256,
        }
        if self.float64 is not None and self.float32 is not None:
            entry["tolerance"] = {
                "float64": {"rtol": self.float64.rtol, "atol": self.float64.atol},
                "float32": self.float32.to_json(),
            }
        return entry


@dataclass(frozen=True)
class GoldenCase:
    """A case as read from disk; tensors are loaded (and verified) on demand."""

    directory: Path
    case_id: str
    component: str
    spec_section: str
    description: str
    config: dict[str, Any]
    seed: int
    meta: dict[str, Any]
    tensors: tuple[TensorEntry, ...]

    def entries(self, role: str) -> list[TensorEntry]:
        return [t for t in self.tensors if t.role == role]

    def load(self, entry: TensorEntry) -> NDArray[Any]:
        return load_tensor(self.directory, entry)

    def load_role(self, role: str) -> dict[str, NDArray[Any]]:
        return {t.name: self.load(t) for t in self.entries(role)}


def npy_bytes(array: NDArray[Any]) -> bytes:
    """The bytes of `array` as an npy v1 file: little-endian, C order, no pickle."""
    canonical = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")  # keeps 0-d
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, canonical, version=(1, 0), allow_pickle=False)
    return buffer.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_case_folder(
    directory: Path,
    header: Mapping[str, Any],
    tensors: list[tuple[TensorEntry, NDArray[Any]]],
) -> None:
    """Write `case.json` (header + tensor entries) and the tensors' npy files into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for entry, array in tensors:
        (directory / entry.file).write_bytes(npy_bytes(array))
        entries.append(entry.to_json())
    document = {**header, "tensors": entries}
    (directory / "case.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def tensor_entry(
    name: str,
    role: str,
    array: NDArray[Any],
    float64: Tolerance | None = None,
    float32: Float32Tolerance | None = None,
) -> TensorEntry:
    """The entry describing `array`; its sha256 is that of the exact npy bytes written."""
    if array.dtype.name not in DTYPES:
        raise GoldenError(f"tensor {name!r}: dtype {array.dtype} is not one of {DTYPES}")
    return TensorEntry(
        name=name,
        role=role,
        file=f"{name}.npy",
        shape=tuple(int(s) for s in array.shape),
        dtype=array.dtype.name,
        sha256=sha256_hex(npy_bytes(array)),
        float64=float64,
        float32=float32,
    )


def read_case(directory: Path) -> GoldenCase:
    """Read and validate `directory/case.json` (tensors are verified when loaded)."""
    path = directory / "case.json"
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise GoldenError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise GoldenError(f"{path}: not valid JSON ({error})") from None
    _validate_document(path, document)
    tensors = tuple(_entry_from_json(path, t) for t in document["tensors"])
    meta_keys = ("schema_version", "refimpl_version", "numpy_version", "generator")
    return GoldenCase(
        directory=directory,
        case_id=document["case_id"],
        component=document["component"],
        spec_section=document["spec_section"],
        description=document["description"],
        config=document["config"],
        seed=document["seed"],
        meta={k: document[k] for k in meta_keys},
        tensors=tensors,
    )


def _require(path: Path, ok: bool, message: str) -> None:
    if not ok:
        raise GoldenError(f"{path}: {message}")


def _validate_document(path: Path, document: Any) -> None:
    _require(path, isinstance(document, dict), "top level must be an object")
    version = document.get("schema_version")
    _require(
        path,
        version == SCHEMA_VERSION,
        f"schema_version {version!r} is not the supported {SCHEMA_VERSION}",
    )
    strings = ("case_id", "component", "spec_section", "description", "refimpl_version",
               "numpy_version", "generator")
    for key in strings:
        _require(path, isinstance(document.get(key), str), f"'{key}' must be a string")
    _require(path, isinstance(document.get("seed"), int), "'seed' must be an integer")
    _require(path, isinstance(document.get("config"), dict), "'config' must be an object")
    _require(path, isinstance(document.get("tensors"), list), "'tensors' must be a list")
    names = [t.get("name") for t in document["tensors"] if isinstance(t, dict)]
    _require(path, len(names) == len(set(names)), "tensor names must be unique")


def _entry_from_json(path: Path, raw: Any) -> TensorEntry:
    _require(path, isinstance(raw, dict), "every tensor entry must be an object")
    name = raw.get("name")
    where = f"tensor {name!r}"
    for key in ("name", "role", "file", "dtype", "sha256"):
        _require(path, isinstance(raw.get(key), str), f"{where}: '{key}' must be a string")
    _require(path, raw["role"] in ROLES, f"{where}: role {raw['role']!r} not in {ROLES}")
    _require(path, raw["dtype"] in DTYPES, f"{where}: dtype {raw['dtype']!r} not in {DTYPES}")
    _require(path, "/" not in raw["file"] and "\\" not in raw["file"], f"{where}: bad file name")
    shape = raw.get("shape")
    _require(
        path,
        isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape),
        f"{where}: 'shape' must be a list of non-negative integers",
    )
    float64 = float32 = None
    if raw["role"] in CHECKED_ROLES:
        tolerance = raw.get("tolerance")
        _require(path, isinstance(tolerance, dict), f"{where}: checked tensors need 'tolerance'")
        try:
            f64, f32 = tolerance["float64"], tolerance["float32"]
            float64 = Tolerance(float(f64["rtol"]), float(f64["atol"]))
            alternatives = f32["alternative_errors"]
            if not isinstance(alternatives, dict):
                raise TypeError("alternative_errors")
            float32 = Float32Tolerance(
                rtol=float(f32["rtol"]),
                atol=float(f32["atol"]),
                safety_factor=float(f32["safety_factor"]),
                atol_floor=float(f32["atol_floor"]),
                reference_float32_error=float(f32["reference_float32_error"]),
                perturbation_spread=float(f32["perturbation_spread"]),
                alternative_errors=tuple((str(k), float(v)) for k, v in sorted(alternatives.items())),
            )
        except (KeyError, TypeError, ValueError):
            raise GoldenError(f"{path}: {where}: malformed 'tolerance'") from None
    return TensorEntry(
        name=raw["name"],
        role=raw["role"],
        file=raw["file"],
        shape=tuple(shape),
        dtype=raw["dtype"],
        sha256=raw["sha256"],
        float64=float64,
        float32=float32,
    )


def load_tensor(directory: Path, entry: TensorEntry) -> NDArray[Any]:
    """Load one tensor, verifying its sha256, then its shape and dtype against `case.json`."""
    path = directory / entry.file
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise GoldenError(f"{path}: missing (listed in case.json)") from None
    digest = sha256_hex(data)
    if digest != entry.sha256:
        raise GoldenError(
            f"{path}: sha256 {digest} does not match case.json's {entry.sha256} "
            "(corrupted or edited by hand; regenerate with `refimpl golden generate`)"
        )
    try:
        array: NDArray[Any] = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:
        raise GoldenError(f"{path}: not a readable npy file ({error})") from None
    if array.shape != entry.shape or array.dtype.name != entry.dtype:
        raise GoldenError(
            f"{path}: holds {array.dtype.name}{list(array.shape)}, case.json says "
            f"{entry.dtype}{list(entry.shape)}"
        )
    return array


def find_cases(root: Path) -> list[Path]:
    """Every case folder under `root` (`<component>/<case>/case.json`), sorted."""
    if not root.is_dir():
        raise GoldenError(
            f"{root}: no golden folder here (pass --golden DIR: the golden/ folder of a refimpl checkout)"
        )
    return sorted(p.parent for p in root.glob("*/*/case.json"))
