"""Command-line checks every demo makes before any work: a demo runs for minutes, so a flag it
cannot use is refused by the flag's name at once, not by a config field's name after the data is
generated or by a traceback after the whole run."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["refuse_bad_flags"]


def refuse_bad_flags(args: argparse.Namespace, counts: tuple[str, ...], outputs: tuple[str, ...]) -> None:
    """Raise ValueError naming the flag when a count in `counts` (argparse dests; None means not
    given) is below 1, or a file in `outputs` cannot be written: empty, a folder, or in a folder
    that does not exist."""
    for dest in counts:
        value = getattr(args, dest)
        if value is not None and value < 1:
            raise ValueError(f"{_flag(dest)}: expected a positive integer, got {value}")
    for dest in outputs:
        path = getattr(args, dest)
        if path is None:
            continue
        if path == "" or Path(path).is_dir():
            raise ValueError(f"{_flag(dest)}: expected a file to write, got {path!r}")
        if not Path(path).parent.is_dir():
            raise ValueError(f"{_flag(dest)}: no folder {Path(path).parent} to write into")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")
