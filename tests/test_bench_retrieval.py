"""tools/ulim_trained_vectors.py and tools/bench_retrieval.py's `--vectors` at tiny sizes, for
correctness only (timings go to the bench's table, never into an assertion): the file holds what
the cascade reads of a trained ULIM, and the bench measures it against the exact cascade."""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@cache
def _vectors(directory: Path) -> Path:
    out = directory / "trained.npz"
    argv = ["--items", "600", "--categories", "6", "--users", "40", "--k", "2", "--steps", "20", "--out", str(out)]
    _tool("ulim_trained_vectors").main(argv)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _vectors(tmp_path_factory.mktemp("vectors"))


def test_the_file_holds_the_cascade_inputs_of_every_written_user(trained: Path) -> None:
    with np.load(trained) as f:
        items, category = f["item_vectors"], f["item_category"]
        routes, long, short = f["categories"], f["long_vectors"], f["short_vectors"]
    assert items.shape == (600, 32) and items.dtype == np.float32 and np.isfinite(items).all()
    assert category.shape == (600,) and set(np.unique(category)) <= set(range(6))
    users = routes.shape[0]
    assert 0 < users <= 40 and routes.shape == (users, 2)
    assert long.shape == (users, 2, 32) and short.shape == (users, 32)
    assert (routes[:, 0] != routes[:, 1]).all()
    # two routes of a user read different category subsequences, so their v_l differ
    assert not np.allclose(long[:, 0], long[:, 1])


def test_the_bench_measures_the_trained_vectors_against_the_exact_cascade(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _tool("bench_retrieval")
    bench.main(["--sizes", "", "--vectors", str(trained), "--users", "10", "--k", "2", "--n", "20",
                "--latency-users", "2", "--exact-latency-users", "2"])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "trained.npz" in line)
    # every pool this small is scanned exactly, so the cascade is exact and no route walks a graph
    assert "| 1.000 | 1.000 / nan / 1.000 |" in row


def test_a_file_without_the_trained_vectors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.npz"
    np.savez(path, item_vectors=np.zeros((3, 32), np.float32))
    with pytest.raises(KeyError, match="item_category"):
        _tool("bench_retrieval").trained_workload(str(path), 5)


@pytest.mark.parametrize(("flags", "message"), [
    (["--k", "7"], "--k: expected at most --categories (6) routes, got 7"),
    (["--eval-every", "0"], "--eval-every: expected a positive integer, got 0"),
    (["--items", "-5"], "--items: expected a positive integer, got -5"),
    (["--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
    (["--out", "{tmp}/v"], "--out: expected a path ending in .npz, got '{tmp}/v'"),
    (["--out", "{tmp}/no/v.npz"], "--out: no folder {tmp}/no to write into"),
])
def test_trained_vectors_refuses_bad_flags_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           flags: list[str], message: str) -> None:
    # --k above --categories wrote fewer routes than the message claimed; --out without .npz was
    # written as OUT.npz and reported as OUT; a missing folder failed after the training
    argv = ["--items", "600", "--categories", "6", "--users", "40", "--steps", "2", "--out", str(tmp_path / "v.npz"),
            *(flag.replace("{tmp}", str(tmp_path)) for flag in flags)]
    with pytest.raises(SystemExit) as stop:
        _tool("ulim_trained_vectors").main(argv)
    assert stop.value.code == 2
    assert message.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err
