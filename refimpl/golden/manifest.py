"""The golden manifest: the sha256 of every file of every case, and the suite id derived from it.

`golden/MANIFEST.json` lists every file under `golden/` (each case's `case.json` and `.npy` files) with
the sha256 of its bytes, keyed by its path relative to `golden/` with `/` separators, sorted. It holds
nothing that varies between two generations of the same tensors (no time, no machine, no versions), so
regenerating twice writes the same bytes. The **suite id** is the first `SUITE_ID_LENGTH` hex characters
of the sha256 of the manifest file's bytes: two folders with the same suite id hold the same files.

`check_manifest` refuses a folder where a listed file is missing or its bytes changed, or where a file
exists that the manifest does not list: an edited tolerance in a `case.json` is caught here even when
the edit leaves the JSON valid.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from refimpl.golden.format import GoldenError

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_VERSION = 1
SUITE_ID_LENGTH = 16


class ManifestError(GoldenError):
    """The golden folder does not match its manifest; the message names the file (relative to golden/)."""


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _case_files(golden: Path) -> list[str]:
    """Every file under `golden` but the manifest, as sorted `/`-separated relative paths."""
    return sorted(
        p.relative_to(golden).as_posix()
        for p in golden.rglob("*")
        if p.is_file() and p.relative_to(golden).as_posix() != MANIFEST_NAME
    )


def manifest_bytes(golden: Path) -> bytes:
    """The manifest `write_manifest` would write for the files now under `golden`."""
    document = {
        "manifest_version": MANIFEST_VERSION,
        "algorithm": "sha256",
        "files": {name: _sha256_file(golden / name) for name in _case_files(golden)},
    }
    return (json.dumps(document, indent=0, sort_keys=True) + "\n").encode("utf-8")


def write_manifest(golden: Path) -> Path:
    """Write `golden/MANIFEST.json` for the files now under `golden`; returns its path."""
    if not golden.is_dir():
        raise ManifestError(f"{golden}: no golden folder here")
    path = golden / MANIFEST_NAME
    path.write_bytes(manifest_bytes(golden))
    return path


def _read_listing(golden: Path) -> tuple[bytes, dict[str, str]]:
    path = golden / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(
            f"{MANIFEST_NAME}: missing in {golden} (write it with `refimpl golden generate`)"
        ) from None
    try:
        document: Any = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ManifestError(f"{MANIFEST_NAME}: not valid JSON ({error})") from None
    files = document.get("files") if isinstance(document, dict) else None
    if (
        not isinstance(document, dict)
        or document.get("manifest_version") != MANIFEST_VERSION
        or document.get("algorithm") != "sha256"
        or not isinstance(files, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
    ):
        raise ManifestError(
            f"{MANIFEST_NAME}: expected {{'manifest_version': {MANIFEST_VERSION}, 'algorithm': 'sha256', "
            "'files': {path: sha256}}"
        )
    return data, files


def check_manifest(golden: Path) -> str:
    """Verify every file of `golden` against its manifest; returns the suite id.

    Raises `ManifestError` naming the first offending file (relative to `golden`) and what is wrong:
    missing, sha256 mismatch, or present but not listed.
    """
    if not golden.is_dir():
        raise ManifestError(f"{golden}: no golden folder here")
    data, listed = _read_listing(golden)
    for name in sorted(listed):
        path = golden / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise ManifestError(f"{name}: not a path inside the golden folder ({MANIFEST_NAME})")
        if not path.is_file():
            raise ManifestError(f"{name}: missing (listed in {MANIFEST_NAME})")
        digest = _sha256_file(path)
        if digest != listed[name]:
            raise ManifestError(
                f"{name}: sha256 {digest} does not match {MANIFEST_NAME}'s {listed[name]} "
                "(edited or corrupted; regenerate with `refimpl golden generate`)"
            )
    unlisted = [name for name in _case_files(golden) if name not in listed]
    if unlisted:
        more = f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1 else ""
        raise ManifestError(f"{unlisted[0]}: not listed in {MANIFEST_NAME}{more}")
    return _suite_id_of(data)


def _suite_id_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:SUITE_ID_LENGTH]


def suite_id(golden: Path) -> str:
    """The suite id of `golden`, after checking every file against the manifest."""
    return check_manifest(golden)
