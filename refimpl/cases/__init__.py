"""The registry of golden cases and the reference adapter.

Every module of this package whose name does not start with `_` is a case module (see `_base`);
`all_cases()` and `reference_components()` gather them in module-name order.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from refimpl.cases._base import CaseSpec, ComponentFn


def case_modules() -> list[ModuleType]:
    """The case modules, sorted by name."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    return [importlib.import_module(f"{__name__}.{name}") for name in names]


def all_cases() -> list[CaseSpec]:
    """Every registered case, grouped by module; refuses duplicate case ids."""
    cases: list[CaseSpec] = []
    seen: set[str] = set()
    for module in case_modules():
        for case in module.CASES:
            if case.case_id in seen:
                raise ValueError(f"duplicate golden case id {case.case_id!r} in {module.__name__}")
            seen.add(case.case_id)
            cases.append(case)
    return cases


def reference_components() -> dict[str, ComponentFn]:
    """The NumPy reference of every component, by component name."""
    components: dict[str, ComponentFn] = {}
    for module in case_modules():
        for name, fn in module.COMPONENTS.items():
            if name in components:
                raise ValueError(f"component {name!r} registered twice ({module.__name__})")
            components[name] = fn
    return components
