"""The golden fixture format: write, read, verify and compare cases (no model code here).

A case is a folder `golden/<component>/<case>/` holding `case.json` and one `.npy` (v1, little-endian,
C order) per tensor; `spec/case.schema.json` is the JSON Schema of `case.json`.
"""

from pathlib import Path

from refimpl.suite import golden_root


def default_golden_root() -> Path:
    """The golden suite shipped with the package, or the checkout's `golden/` (see `refimpl.suite`)."""
    return golden_root()
