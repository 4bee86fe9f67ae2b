"""The README's commands and CI stay in step."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("```bash") + 1
    return [line.split("#")[0].strip() for line in lines[start:start + 2]]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    install_and_run, test = _readme_commands()
    assert install_and_run.startswith('pip install -e ".[test]" && refimpl ')
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    assert test.replace("pip install -e", "pip install -q -e") in ci.splitlines()
    assert "mypy --strict refimpl" in test and test.endswith("pytest")
