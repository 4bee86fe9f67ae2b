"""refimpl installed from its wheel works with no checkout: `refimpl conform --adapter` on a toy port and the
pytest plugin in a toy project, both run from a folder outside the checkout, against the golden suite the
wheel carries. Negative controls: a toy port with one bug fails both ways, and an edited golden file is
refused by name.

One test, because the build and the install are its cost: writing, zipping and installing the ~3,700 files of
the wheel. `pytest -s` prints the time of each step. The fresh virtual environment sees the machine's
packages (`--system-site-packages`, so numpy, scipy and hnswlib are not reinstalled), and the test checks that
`refimpl` itself is imported from the wheel, not from the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from refimpl import __version__
from refimpl.golden.manifest import check_manifest, write_manifest

ROOT = Path(__file__).resolve().parent.parent

TOY_PORT = '''"""A toy port of the linear component: y = x W + b, written without refimpl."""
import numpy as np


def linear(inputs, params, config, upstream):
    x, W, b, d_y = inputs["x"], params["W"], params["b"], upstream["d_y"]
    rows, d_rows = x.reshape(-1, x.shape[-1]), d_y.reshape(-1, d_y.shape[-1])
    return {"y": x @ W + b, "d_x": d_y @ W.T, "d_W": rows.T @ d_rows, "d_b": d_rows.sum(axis=0)}


def linear_with_a_bug(inputs, params, config, upstream):
    out = linear(inputs, params, config, upstream)
    out["d_b"] = out["d_b"] * 2
    return out


ADAPTER = {"linear": linear}
BROKEN = {"linear": linear_with_a_bug}
'''

TOY_TEST = '''import toy_port


def test_conformance(refimpl_case, refimpl_check):
    refimpl_check(refimpl_case, toy_port.{adapter})
'''


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    print(f"{time.perf_counter() - start:6.1f} s  {' '.join(command[:6])}")  # where the time goes (pytest -s)
    return done


def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    # setuptools' PEP 517 hook, the call `pip wheel` makes, without pip's separate metadata pass over the tree
    built = _run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_wheel({str(dist)!r})"],
                 ROOT, env)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("refimpl-*.whl")
    assert wheel.stat().st_size < 5_000_000
    assert _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], work,
                env).returncode == 0
    python, refimpl = venv / "bin" / "python", venv / "bin" / "refimpl"
    installed = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-compile",
                      "-q", str(wheel)], work, env)
    assert installed.returncode == 0, installed.stderr

    where = _run([str(python), "-c", "import refimpl.suite as s; print(s.golden_root()); print(s.spec_root())"],
                 work, env)
    golden, spec = (Path(line) for line in where.stdout.split())
    assert golden.is_relative_to(venv) and golden.parts[-3:] == ("refimpl", "_suite", "golden"), where
    assert (spec / "case.schema.json").is_file() and (spec / "conformance.md").is_file()
    suite = check_manifest(ROOT / "golden")
    assert check_manifest(golden) == suite

    (work / "toy_port.py").write_text(TOY_PORT)
    conform = [str(refimpl), "conform", "--component", "linear", "--json", "report.json"]
    passed = _run([*conform, "--adapter", "toy_port:ADAPTER"], work, env)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert f"golden suite {suite}" in passed.stdout and f'"suite_id": "{suite}"' in (work / "report.json").read_text()
    failed = _run([*conform, "--adapter", "toy_port:BROKEN"], work, env)
    assert failed.returncode == 1 and "values: d_b" in failed.stdout

    project = work / "project"
    project.mkdir()
    shutil.copy(work / "toy_port.py", project)
    (project / "test_port.py").write_text(TOY_TEST.format(adapter="ADAPTER"))
    # the machine's other pytest plugins are not needed here, and each adds to the start-up time
    pytest_command = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                      "-p", "no:benchmark", "--refimpl-component", "linear"]
    plugin = _run(pytest_command, project, env)
    assert plugin.returncode == 0 and "4 passed" in plugin.stdout, plugin.stdout + plugin.stderr
    assert f"refimpl {__version__}, golden suite {suite} at {golden}: 4 cases run, 4 compared" in plugin.stdout

    copy = tmp_path / "copy"
    shutil.copytree(golden / "linear", copy / "linear")
    write_manifest(copy)
    (project / "test_port.py").write_text(TOY_TEST.format(adapter="BROKEN"))
    broken = _run([*pytest_command, "--refimpl-golden", str(copy)], project, env)
    assert broken.returncode == 1 and "d_b: " in broken.stdout, broken.stdout + broken.stderr
    case_json = sorted(copy.glob("linear/*/case.json"))[0]
    case_json.write_text(case_json.read_text().replace('"rtol": 1e-07', '"rtol": 1e+07', 1))
    refused = _run([*pytest_command, "--refimpl-golden", str(copy)], project, env)
    assert refused.returncode == 2, refused.stdout + refused.stderr  # a collection error
    assert f"{case_json.relative_to(copy).as_posix()}: sha256" in refused.stdout


def test_an_editable_install_reads_the_checkout_folders() -> None:
    from refimpl.suite import golden_root, spec_root

    assert not (ROOT / "refimpl" / "_suite").exists()  # the build step writes the copy into the wheel only
    assert golden_root() == ROOT / "golden" and (spec_root() / "case.schema.json").is_file()
