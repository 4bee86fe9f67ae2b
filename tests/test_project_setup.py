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


def layout_entries() -> set[str]:
    """The paths the README's Layout block lists (first column)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    return {line.split()[0].rstrip("/") for line in block.splitlines() if line.strip()}


def unlisted_modules(listed: set[str]) -> list[str]:
    """Top-level modules and packages of refimpl/ that the Layout block does not list."""
    package = ROOT / "refimpl"
    entries = [p for p in package.iterdir() if (p.suffix == ".py" or (p / "__init__.py").exists())]
    names = [f"refimpl/{p.name}" for p in entries if p.name != "__init__.py"]
    return sorted(name for name in names if name not in listed)


def test_readme_layout_lists_every_top_level_module() -> None:
    assert unlisted_modules(layout_entries()) == []


def test_negative_control_layout_without_a_module_is_caught() -> None:
    assert unlisted_modules(layout_entries() - {"refimpl/metrics.py"}) == ["refimpl/metrics.py"]
