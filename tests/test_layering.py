"""What depends on what: components <- models <- training (issue 14 item 11).

A component (`refimpl/nn/*`) is the mathematics of one equation group: it imports only the other
components and the input checks, never data preparation, models or training code, so a reader (or
a port) can take it alone. A model composes components and may use data helpers (ULIM's category
subsequences), but never the training, evaluation or demo code built on top of it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "refimpl"

# refimpl modules a layer may import (by prefix), every import in the file counted, local ones too
ALLOWED = {
    "nn": ("refimpl._check", "refimpl.nn"),
    "models": ("refimpl._check", "refimpl.nn", "refimpl.models", "refimpl.data"),
}


def refimpl_imports(source: str) -> list[str]:
    """Every refimpl module a source file imports, at any depth of the file."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("refimpl"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names if alias.name.startswith("refimpl"))
    return found


def layering_problems(layer: str, sources: dict[str, str]) -> list[str]:
    allowed = ALLOWED[layer]
    return [
        f"{name} imports {module}"
        for name, source in sorted(sources.items())
        for module in refimpl_imports(source)
        if not any(module == prefix or module.startswith(prefix + ".") for prefix in allowed)
    ]


def _sources(layer: str) -> dict[str, str]:
    return {str(p.relative_to(ROOT.parent)): p.read_text() for p in sorted((ROOT / layer).glob("*.py"))}


def test_components_import_only_components_and_checks() -> None:
    assert layering_problems("nn", _sources("nn")) == []


def test_models_import_no_training_or_evaluation_code() -> None:
    assert layering_problems("models", _sources("models")) == []


def test_negative_control_a_component_importing_data_preparation_is_caught() -> None:
    """As refimpl/losses.py did before it became refimpl/nn/ulim_loss.py."""
    source = "from refimpl.nn.sampled_softmax import sampled_softmax_forward\n" \
             "from refimpl.data.batching import require_category_pure\n"
    assert layering_problems("nn", {"refimpl/nn/ulim_loss.py": source}) == [
        "refimpl/nn/ulim_loss.py imports refimpl.data.batching"
    ]
    local = "def fit():\n    from refimpl.train import fit\n"
    assert layering_problems("models", {"refimpl/models/x.py": local}) == ["refimpl/models/x.py imports refimpl.train"]
