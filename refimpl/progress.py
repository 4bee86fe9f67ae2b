"""Progress bars for long work (data generation, index building, evaluation), drawn by tqdm.

A bar is drawn only when its stream is a terminal and progress is not switched off: output sent to
a file, a pipe or a CI log gets nothing (no carriage-return litter), and `set_quiet(True)` (the
commands' `--quiet`) silences every bar. The library only ever writes bars to stderr (by default),
never results, so a caller that captures stdout sees the same bytes with or without bars.

    for user in track(range(num_users), "synthetic users", unit="user"):
        ...
    with task("ULIM", total=steps, unit="step") as bar:
        ...
        bar.advance()
        bar.status(f"valid {loss:.4f}")

Descriptions are padded to one width, so the bars of one run line up under each other.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

from refimpl._check import require_int, require_real

__all__ = ["DESCRIPTION_WIDTH", "Bar", "set_quiet", "task", "track"]

T = TypeVar("T")

DESCRIPTION_WIDTH = 24
"""Every description is cut or padded to this many characters: the bars start in one column."""

_quiet = [False]  # switched by the commands' --quiet; a list so set_quiet needs no `global`


def set_quiet(quiet: bool) -> None:
    """Switch every progress bar off (True) or back to the terminal rule (False)."""
    if not isinstance(quiet, bool):
        raise TypeError(f"quiet: expected a bool, got {type(quiet).__name__}")
    _quiet[0] = quiet


def _is_shown(stream: TextIO) -> bool:
    """A bar is drawn on `stream` only if progress is not quiet and the stream is a terminal."""
    isatty = getattr(stream, "isatty", None)
    return not _quiet[0] and callable(isatty) and bool(isatty())


def _label(description: str) -> str:
    if len(description) > DESCRIPTION_WIDTH:
        return description[: DESCRIPTION_WIDTH - 1] + "…"
    return description.ljust(DESCRIPTION_WIDTH)


def track(
    iterable: Iterable[T], description: str, total: int | None = None, unit: str = "it",
    stream: TextIO | None = None, delay: float = 0.0,
) -> Iterator[T]:
    """The items of `iterable` (any iterable: a range, a list, an array), with a bar on `stream`
    (default stderr) when it is shown; `total` defaults to len(iterable) where there is one. With
    `delay` > 0 the bar appears only once the work has taken that many seconds (for a step that is
    usually quick, e.g. one user's retrieval)."""
    if not isinstance(iterable, Iterable):
        raise TypeError(f"iterable: expected an iterable, got {type(iterable).__name__}")
    if not isinstance(description, str):
        raise TypeError(f"description: expected a str, got {type(description).__name__}")
    wait = require_real("delay", delay, low=0.0)
    out = sys.stderr if stream is None else stream
    if not _is_shown(out):
        return iter(iterable)
    return _drawn(iterable, description, total, unit, out, wait)


def _drawn(
    iterable: Iterable[T], description: str, total: int | None, unit: str, out: TextIO, delay: float
) -> Iterator[T]:
    with tqdm(iterable, desc=_label(description), total=total, unit=unit, file=out, leave=True,
              dynamic_ncols=True, delay=delay) as bar:
        yield from bar


class Bar:
    """What `task` yields: `advance(n)` moves the bar on by n units, `status(text)` shows text after
    it (e.g. the latest losses). Both do nothing when the bar is not shown."""

    def __init__(self, bar: Any = None) -> None:
        self._bar = bar

    @property
    def shown(self) -> bool:
        """Whether the bar is drawn (a caller may then leave out log lines the bar's status shows)."""
        return self._bar is not None

    def advance(self, n: int = 1) -> None:
        require_int("n", n, low=0)
        if self._bar is not None:
            self._bar.update(n)

    def status(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)


@contextmanager
def task(
    description: str, total: int, unit: str = "it", stream: TextIO | None = None, delay: float = 0.0
) -> Iterator[Bar]:
    """A bar for work done in steps that are not one plain loop (see `Bar`); `delay` as in `track`."""
    wait = require_real("delay", delay, low=0.0)
    out = sys.stderr if stream is None else stream
    if not _is_shown(out):
        yield Bar()
        return
    with tqdm(desc=_label(description), total=total, unit=unit, file=out, leave=True,
              dynamic_ncols=True, delay=wait) as bar:
        yield Bar(bar)
