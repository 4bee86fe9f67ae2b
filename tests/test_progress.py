"""Progress bars (refimpl/progress.py): drawn on a terminal, nothing off a terminal or when quiet;
the long steps that use them (data generation, index building) follow the same rule."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from refimpl.data.synthetic import QUICK_CONFIG, generate
from refimpl.progress import DESCRIPTION_WIDTH, set_quiet, task, track
from refimpl.retrieval import Catalogue, HnswIndex


class Terminal(io.StringIO):
    """A stream that says it is a terminal (as sys.stderr does in an interactive shell)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def not_quiet() -> Iterator[None]:
    set_quiet(False)
    yield
    set_quiet(False)


def test_off_a_terminal_nothing_is_written_and_every_item_comes_through() -> None:
    stream = io.StringIO()
    assert list(track(range(5), "users", stream=stream)) == [0, 1, 2, 3, 4]
    with task("index", total=3, stream=stream) as bar:
        bar.advance(3)
        bar.status("valid 1.0")
        assert not bar.shown
    assert stream.getvalue() == ""


def test_negative_control_on_a_terminal_the_bar_is_drawn() -> None:
    """The off-terminal test can fail: the same calls on a terminal write bars."""
    stream = Terminal()
    assert list(track(range(5), "users", stream=stream)) == [0, 1, 2, 3, 4]
    with task("index", total=3, unit="item", stream=stream) as bar:
        bar.advance(3)
        bar.status("valid 1.0")
        assert bar.shown
    text = stream.getvalue()
    assert "users" in text and "5/5" in text and "3/3" in text and "valid 1.0" in text


def test_quiet_silences_a_terminal() -> None:
    stream = Terminal()
    set_quiet(True)
    assert list(track(range(3), "users", stream=stream)) == [0, 1, 2]
    with task("index", total=2, stream=stream) as bar:
        bar.advance(2)
    assert stream.getvalue() == ""
    with pytest.raises(TypeError, match="quiet"):
        set_quiet("yes")  # type: ignore[arg-type]


def test_descriptions_share_one_width() -> None:
    stream = Terminal()
    for name in ("a", "a description much longer than the width"):
        list(track(range(2), name, stream=stream))
    # splitlines also splits at the carriage returns that redraw a bar
    lines = [line for line in stream.getvalue().splitlines() if "|" in line]
    assert any(line.startswith("a ") for line in lines) and any(line.startswith("a desc") for line in lines)
    assert {line.index("|") for line in lines} == {DESCRIPTION_WIDTH + 6}  # "desc: ", "100%", then the bar


def test_data_generation_and_index_building_draw_bars_on_a_terminal_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(0)
    catalogue = Catalogue.build(rng.standard_normal((300, 4)), rng.integers(0, 3, 300))
    config = replace(QUICK_CONFIG, num_users=20, min_length=30, max_length=40)
    captured = io.StringIO()
    monkeypatch.setattr("sys.stderr", captured)
    generate(config)
    HnswIndex(catalogue)
    assert captured.getvalue() == ""
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    generate(config)
    HnswIndex(catalogue)
    assert "synthetic users" in terminal.getvalue() and "hnswlib index" in terminal.getvalue()
    assert "600/600" in terminal.getvalue()  # every item, in its category's graph and in the global one


def test_evaluation_draws_a_bar_on_a_terminal_only_and_chunks_change_no_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A whole-pool evaluation searches EvalConfig.chunk samples at a time under a bar (no delay
    here); off a terminal nothing is written; the hit rates do not depend on the chunk."""
    from refimpl.pipelines import evaluation
    from refimpl.pipelines.evaluation import EvalConfig, build_index, search_hit_rates

    rng = np.random.default_rng(0)
    index = build_index(rng.standard_normal((200, 4)), rng.integers(0, 3, 200), EvalConfig())
    queries, targets = rng.standard_normal((30, 2, 4)), rng.integers(0, 200, 30)
    monkeypatch.setattr(evaluation, "PROGRESS_DELAY", 0.0)
    captured = io.StringIO()
    monkeypatch.setattr("sys.stderr", captured)
    whole = search_hit_rates(index, queries, targets, EvalConfig(cutoffs=(5, 50), chunk=64))
    assert captured.getvalue() == ""
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    chunked = search_hit_rates(index, queries, targets, EvalConfig(cutoffs=(5, 50), chunk=7))
    assert "evaluation (search)" in terminal.getvalue() and "60/60" in terminal.getvalue()  # 2 cut-offs x 30
    assert chunked == whole and whole[50] > whole[5]
