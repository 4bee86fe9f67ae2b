"""tools/bench_ifa.py at tiny sizes, for correctness only (timings go to the bench's table, never
into an assertion): it runs, prints a table per mode with slopes, and its DIN is softmax target
attention of each candidate over the whole sequence."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from refimpl.nn.attention import AttentionConfig, target_attention_forward

BENCH = Path(__file__).resolve().parents[1] / "tools" / "bench_ifa.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_ifa", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_run_prints_every_table_and_slope(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    argv = ["--quick", "--sizes", "120", "150", "--candidates", "4", "--m-sweep", "2", "3"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("log-log slope against L") == 2 and out.count("log-log slope against M") == 1
    assert "| 150 |" in out and "nan" not in out


def test_din_is_target_attention_of_each_candidate_over_the_whole_sequence() -> None:
    bench = _bench()
    request = bench.make_request(5, 30, width=8, dtype=np.float64)
    din = bench.run("DIN", request, 2, backward=True)[0]
    per_candidate, _ = target_attention_forward(
        request.params, request.candidates[0], np.repeat(request.seq, 5, axis=0),
        np.repeat(request.seq_mask, 5, axis=0), AttentionConfig(num_heads=2))
    np.testing.assert_allclose(din, per_candidate, rtol=1e-10, atol=1e-12)
    # negative control: candidates paired with another candidate's attention do not match
    assert not np.allclose(din, per_candidate[::-1])
    for method in bench.METHODS:
        assert np.isfinite(bench.run(method, request, 2, backward=True)).all()


def test_bad_arguments_are_refused() -> None:
    bench = _bench()
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--candidates", "0"])
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--heads", "3"])
