"""The golden fixture format: write, read, verify and compare cases (no model code here).

A case is a folder `golden/<component>/<case>/` holding `case.json` and one `.npy` (v1, little-endian,
C order) per tensor; `spec/case.schema.json` is the JSON Schema of `case.json`.
"""

from pathlib import Path


def default_golden_root() -> Path:
    """The committed `golden/` folder of this checkout (next to the `refimpl` package)."""
    return Path(__file__).resolve().parent.parent.parent / "golden"
