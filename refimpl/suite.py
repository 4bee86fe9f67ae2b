"""Where the golden suite and the spec are: inside the installed package, or in the checkout.

A wheel carries `golden/` and `spec/` as package data under `refimpl/_suite/` (setup.py's build step copies
them there); `importlib.resources` finds them wherever the package is installed. An editable install has no
such copy and reads the checkout's top-level `golden/` and `spec/` folders instead.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import refimpl

__all__ = ["golden_root", "spec_root", "suite_folder"]


def suite_folder(name: str) -> Path:
    """The packaged `refimpl/_suite/<name>` folder if there is one, else `<checkout>/<name>`."""
    packaged = resources.files(refimpl) / "_suite" / name
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return Path(refimpl.__file__).resolve().parent.parent / name


def golden_root() -> Path:
    """The golden suite `refimpl conform` checks against unless `--golden DIR` says otherwise."""
    return suite_folder("golden")


def spec_root() -> Path:
    """The spec pages and `case.schema.json`."""
    return suite_folder("spec")
