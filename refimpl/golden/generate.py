"""Generating and verifying the goldens.

`generate` runs the reference on every registered case (in float64, then again in float32 to
measure the float32 tolerances) and writes the folders. `verify` regenerates into a scratch folder
and compares with the committed ones at the float64 noise floor.

Float32 tolerances are measured, not guessed: the reference runs on the float32-cast inputs and its
worst absolute error against the float64 golden, times `FLOAT32_SAFETY_FACTOR`, floored at
`FLOAT32_ATOL_FLOOR`, becomes the atol (rtol `FLOAT32_RTOL`). Both the measurement and the factor are
written into `case.json`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

import refimpl
from refimpl.cases import all_cases, reference_components
from refimpl.cases._base import CaseSpec, CaseTensors, Result, Tensors
from refimpl.golden.compare import compare_arrays
from refimpl.golden.format import (
    SCHEMA_VERSION,
    Float32Tolerance,
    GoldenError,
    TensorEntry,
    Tolerance,
    find_cases,
    load_tensor,
    read_case,
    tensor_entry,
    write_case_folder,
)
from refimpl.golden.manifest import write_manifest

FLOAT32_SAFETY_FACTOR = 8.0
FLOAT32_ATOL_FLOOR = 1e-6
FLOAT32_RTOL = 1e-6
NOISE_FLOOR_RTOL = 1e-10
NOISE_FLOOR_ATOL = 1e-12  # times max(1, max |expected|) of the tensor
FLOAT32_DRIFT_FACTOR = 4.0  # measured float32 errors may differ this much across CPUs and BLAS


def _as_array(name: str, value: Any) -> NDArray[Any]:
    array = np.asarray(value)
    if array.dtype.kind == "f" and array.dtype != np.float64:
        raise GoldenError(f"{name}: the float64 reference returned {array.dtype}")
    if array.dtype.kind in "iu":
        array = array.astype(np.int64)
    return array


def _cast_float32(tensors: Tensors) -> Tensors:
    return {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in tensors.items()}


def _json_config(spec: CaseSpec) -> dict[str, Any]:
    """The config as every implementation sees it: after a JSON round trip (tuples become lists)."""
    config: dict[str, Any] = json.loads(json.dumps(dict(spec.config)))
    return config


def _checked(result: Result, store_intermediates: bool = True) -> list[tuple[str, str, Any]]:
    intermediates = result.intermediates.items() if store_intermediates else []
    return (
        [("output", k, v) for k, v in result.outputs.items()]
        + [("intermediate", k, v) for k, v in intermediates]
        + [("grad", k, v) for k, v in result.grads.items()]
    )


def build_case(
    spec: CaseSpec, reference: Callable[[Tensors, Tensors, Any, Tensors], Result]
) -> tuple[dict[str, Any], list[tuple[TensorEntry, NDArray[Any]]]]:
    """The header and tensors of one case: drawn inputs, reference outputs, measured tolerances."""
    drawn: CaseTensors = spec.draw()
    config = _json_config(spec)
    result64 = reference(drawn.inputs, drawn.params, config, drawn.upstream)
    result32 = reference(
        _cast_float32(drawn.inputs), _cast_float32(drawn.params), config,
        _cast_float32(drawn.upstream),
    )
    tensors: list[tuple[TensorEntry, NDArray[Any]]] = []
    for role, group in (("input", drawn.inputs), ("param", drawn.params),
                        ("upstream_grad", drawn.upstream)):
        for name, value in group.items():
            array = _as_array(f"{spec.case_id}: {name}", value)
            tensors.append((tensor_entry(name, role, array), array))
    float32_values = {name: np.asarray(v) for _, name, v in _checked(result32)}
    for role, name, value in _checked(result64, spec.store_intermediates):
        array = _as_array(f"{spec.case_id}: {name}", value)
        tensors.append((_checked_entry(spec, name, role, array, float32_values.get(name)), array))
    header = {
        "schema_version": SCHEMA_VERSION,
        "case_id": spec.case_id,
        "component": spec.component,
        "spec_section": spec.spec_section,
        "description": spec.description,
        "config": config,
        "seed": spec.seed,
        "refimpl_version": refimpl.__version__,
        "numpy_version": np.__version__,
        "generator": "refimpl golden generate",
    }
    return header, tensors


def _checked_entry(
    spec: CaseSpec, name: str, role: str, array: NDArray[Any], as_float32: NDArray[Any] | None
) -> TensorEntry:
    if as_float32 is None:
        raise GoldenError(f"{spec.case_id}: the float32 run did not return {name!r}")
    if array.dtype.kind == "f" and as_float32.dtype != np.float32:
        raise GoldenError(
            f"{spec.case_id}: {name!r} came back {as_float32.dtype} from float32 inputs; "
            "a component must compute in the dtype of its inputs"
        )
    if array.dtype.kind == "f" and array.size:
        measured = float(np.max(np.abs(as_float32.astype(np.float64) - array)))
    else:
        measured = 0.0
    float32 = Float32Tolerance(
        rtol=FLOAT32_RTOL,
        atol=max(FLOAT32_SAFETY_FACTOR * measured, FLOAT32_ATOL_FLOOR),
        measured_max_abs_error=measured,
        safety_factor=FLOAT32_SAFETY_FACTOR,
    )
    return tensor_entry(name, role, array, Tolerance(spec.rtol, spec.atol), float32)


def generate(
    out: Path, components: Sequence[str] = (), cases: Sequence[str] = ()
) -> list[str]:
    """Write every registered case (or those of `components` / with ids in `cases`) under `out`.

    Each case folder is rewritten from scratch; case folders of a generated component that no
    longer have a registered case are removed; `out/MANIFEST.json` is rewritten over every file
    under `out`. Returns the ids written.
    """
    specs = [s for s in all_cases() if (not components or s.component in components)
             and (not cases or s.case_id in cases)]
    known = set(reference_components())
    unknown = [c for c in components if c not in known]
    if unknown:
        raise ValueError(f"components: unknown {unknown}; registered: {sorted(known)}")
    references = reference_components()
    written: list[str] = []
    for spec in specs:
        header, tensors = build_case(spec, references[spec.component])
        folder = out / spec.component / spec.name
        if folder.exists():
            shutil.rmtree(folder)
        write_case_folder(folder, header, tensors)
        written.append(spec.case_id)
    if not cases:
        registered = {s.case_id for s in specs}
        for component in {s.component for s in specs}:
            for stale in sorted((out / component).glob("*/case.json")):
                case_id = f"{component}/{stale.parent.name}"
                if case_id not in registered:
                    shutil.rmtree(stale.parent)
    write_manifest(out)
    return written


def verify(golden: Path, components: Sequence[str] = ()) -> list[str]:
    """Regenerate into a scratch folder and compare with `golden`; returns the problems found."""
    with tempfile.TemporaryDirectory(prefix="refimpl-golden-") as scratch:
        fresh_root = Path(scratch)
        generate(fresh_root, components)
        return compare_trees(golden, fresh_root, components)


def compare_trees(golden: Path, fresh: Path, components: Sequence[str] = ()) -> list[str]:
    """Problems between committed goldens and freshly generated ones (empty when they agree)."""
    def ids(root: Path) -> dict[str, Path]:
        found = {f"{p.parent.name}/{p.name}": p for p in find_cases(root)}
        return {k: v for k, v in found.items() if not components or k.split("/")[0] in components}

    committed, regenerated = ids(golden), ids(fresh)
    problems = [f"{c}: committed but no longer generated" for c in sorted(set(committed) - set(regenerated))]
    problems += [f"{c}: generated but not committed" for c in sorted(set(regenerated) - set(committed))]
    for case_id in sorted(set(committed) & set(regenerated)):
        problems += [f"{case_id}: {p}" for p in _compare_case(committed[case_id], regenerated[case_id])]
    return problems


def _compare_case(committed_dir: Path, fresh_dir: Path) -> list[str]:
    try:
        old = read_case(committed_dir)
    except GoldenError as error:
        return [str(error)]
    new = read_case(fresh_dir)
    problems = []
    for field in ("component", "spec_section", "description", "config", "seed"):
        if getattr(old, field) != getattr(new, field):
            problems.append(f"{field} differs: committed {getattr(old, field)!r}, now {getattr(new, field)!r}")
    layout_problems = _compare_layout(old.tensors, new.tensors)
    if layout_problems:
        return problems + layout_problems
    for old_t, new_t in zip(old.tensors, new.tensors, strict=True):
        try:
            expected = load_tensor(committed_dir, old_t)
        except GoldenError as error:
            problems.append(str(error))
            continue
        actual = load_tensor(fresh_dir, new_t)
        scale = float(np.max(np.abs(expected))) if expected.size and expected.dtype.kind == "f" else 1.0
        comparison = compare_arrays(
            old_t.name, actual, expected, NOISE_FLOOR_RTOL, NOISE_FLOOR_ATOL * max(1.0, scale)
        )
        if not comparison.passed:
            problems.append("drift beyond the float64 noise floor: " + comparison.describe())
        if old_t.float32 and new_t.float32:
            a, b = old_t.float32.atol, new_t.float32.atol
            if max(a, b) > FLOAT32_DRIFT_FACTOR * min(a, b):
                problems.append(f"{old_t.name}: float32 atol moved from {a:.3g} to {b:.3g}")
    return problems


def _compare_layout(old: Sequence[TensorEntry], new: Sequence[TensorEntry]) -> list[str]:
    """Tensors added, removed, reordered or changed in role, shape, dtype or float64 tolerance."""
    old_by_name = {t.name: t for t in old}
    new_by_name = {t.name: t for t in new}
    problems = [f"tensor {n!r} committed but no longer generated" for n in old_by_name if n not in new_by_name]
    problems += [f"tensor {n!r} generated but not committed" for n in new_by_name if n not in old_by_name]
    for name in old_by_name.keys() & new_by_name.keys():
        a, b = old_by_name[name], new_by_name[name]
        for field in ("role", "shape", "dtype", "float64"):
            if getattr(a, field) != getattr(b, field):
                problems.append(f"tensor {name!r}: {field} committed {getattr(a, field)}, now {getattr(b, field)}")
    if not problems and [t.name for t in old] != [t.name for t in new]:
        problems.append("tensor order differs")
    return problems
