"""Generating and verifying the goldens.

`generate` runs the reference on every registered case in float64 (the golden values), then measures
each checked tensor's float32 tolerance, and writes the folders and the manifest. `verify` regenerates
into a scratch folder and compares every field of every `case.json` with the committed one.

Float32 tolerances are measured for the case, not for our code (spec/golden.md, "Float32 tolerances"):
per tensor, the largest of (a) the reference's own float32 error, (b) the spread of the float64
reference when every float input, param and upstream gradient is perturbed by random relative amounts
of float32 size (`PERTURBATION_DRAWS` draws from the case's own seed) and (c) the errors of the other
legitimate float32 evaluation orders of `refimpl.golden.alternatives`, times `FLOAT32_SAFETY_FACTOR`,
floored at `FLOAT32_ATOL_FLOOR`. Every ingredient is written into `case.json`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

import refimpl
from refimpl.cases import all_cases, reference_components
from refimpl.cases._base import CaseSpec, CaseTensors, ComponentFn, Result, Tensors
from refimpl.golden.alternatives import alternatives_for
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
FLOAT32_UNIT_ROUNDOFF = 2.0**-24  # float32 rounding moves a value by at most this relative amount
PERTURBATION_DRAWS = 3
PERTURBATION_STREAM = 32  # SeedSequence([seed, 32]) draws the perturbations: apart from the case's tensors
NOISE_FLOOR_RTOL = 1e-10
NOISE_FLOOR_ATOL = 1e-12  # times max(1, max |expected|) of the tensor
NOISE_FLOOR_SHARE_OF_FLOAT64_ATOL = 0.01
# Verify: float32 measurements differ between CPUs (SIMD exp/log, BLAS blocking); up to 4.5x observed.
FLOAT32_DRIFT_FACTOR = 8.0
MEASURED_DIGITS = 3  # float32 ingredients are recorded to 3 significant digits
# The spread is float64 arithmetic (it moves only by float64 round-off), recorded to 3 digits: one unit
# of the third digit is 1%. A tensor that is 0 for every input (d_bk of attention) has a spread that is
# pure float64 noise (2.5e-12 on mhsa/large_logits): 1e-9 absolute covers it and, a thousandth of
# atol_floor / safety_factor, cannot move an atol.
PERTURBATION_SPREAD_RTOL = 1e-2
PERTURBATION_SPREAD_ATOL = 1e-9


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


def float32_atol(safety_factor: float, floor: float, measured: Sequence[float]) -> float:
    """max(safety_factor * max(measured), floor), rounded up to 2 significant digits."""
    raw = max(safety_factor * max(measured, default=0.0), floor)
    exponent = int(np.floor(np.log10(raw))) - 1
    digits = int(np.ceil(raw / 10.0**exponent - 1e-9))  # 10..100: short JSON, never below raw
    return float(f"{digits}e{exponent}")


def _recorded(value: float) -> float:
    """`value` to `MEASURED_DIGITS` significant digits, as written into case.json."""
    return float(f"{value:.{MEASURED_DIGITS - 1}e}")


def _uniform_of_magnitude(values: NDArray[np.float64], salt: np.uint64) -> NDArray[np.float64]:
    """A number in [-1, 1) that is a function of |value| (a hash of its bits, mixed with `salt`)."""
    bits = np.atleast_1d(np.abs(values)).view(np.uint64) ^ salt
    with np.errstate(over="ignore"):  # multiplication modulo 2^64 is the point
        bits = (bits ^ (bits >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)  # splitmix64 finaliser
        bits = (bits ^ (bits >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    bits = bits ^ (bits >> np.uint64(31))
    result: NDArray[np.float64] = (bits >> np.uint64(11)).astype(np.float64) * 2.0**-52 - 1.0
    return result.reshape(np.shape(values))


def _perturbed(tensors: Tensors, salt: np.uint64) -> Tensors:
    """Every float element moved as rounding to float32 could move it: times (1 + delta), delta in
    [-u, u] (u: float32 unit roundoff) a function of the element's magnitude, so equal values (ties)
    and opposite ones stay equal and opposite; values that float32 holds exactly do not move."""
    moved = {}
    for name, value in tensors.items():
        if value.dtype.kind != "f":
            moved[name] = value
            continue
        exact = value.astype(np.float32).astype(np.float64) == value
        delta = FLOAT32_UNIT_ROUNDOFF * _uniform_of_magnitude(value, salt)
        moved[name] = np.where(exact, value, value * (1.0 + delta))
    return moved


def _max_error(name: str, value: Any, golden: NDArray[Any], case_id: str) -> float:
    array = np.asarray(value)
    if array.shape != golden.shape:
        raise GoldenError(f"{case_id}: {name!r} has shape {array.shape} in a float32 run, {golden.shape} in float64")
    if golden.dtype.kind != "f" or not golden.size:
        return 0.0
    return float(np.max(np.abs(array.astype(np.float64) - golden)))


def measure_float32(
    spec: CaseSpec, reference: ComponentFn, drawn: CaseTensors, golden: Tensors
) -> dict[str, Float32Tolerance]:
    """The float32 tolerance of every checked tensor of a case, with its ingredients."""
    config = _json_config(spec)
    inputs, params, upstream = (_cast_float32(t) for t in (drawn.inputs, drawn.params, drawn.upstream))
    own = reference(inputs, params, config, upstream).flat()
    for name, value in own.items():
        if name in golden and golden[name].dtype.kind == "f" and np.asarray(value).dtype != np.float32:
            raise GoldenError(
                f"{spec.case_id}: {name!r} came back {np.asarray(value).dtype} from float32 inputs; "
                "a component must compute in the dtype of its inputs"
            )
    alternatives = {
        alt: evaluate(reference, inputs, params, config, upstream)
        for alt, evaluate in alternatives_for(spec.component).items()
    }
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([spec.seed, PERTURBATION_STREAM])))
    spread = dict.fromkeys(golden, 0.0)
    for _ in range(PERTURBATION_DRAWS):
        salt = np.uint64(rng.integers(0, 2**63))
        moved = reference(_perturbed(drawn.inputs, salt), _perturbed(drawn.params, salt), config,
                          _perturbed(drawn.upstream, salt)).flat()
        for name, value in golden.items():
            spread[name] = max(spread[name], _max_error(name, moved[name], value, spec.case_id))
    tolerances = {}
    for name, value in golden.items():
        if name not in own:
            raise GoldenError(f"{spec.case_id}: the float32 run did not return {name!r}")
        reference_error = _recorded(_max_error(name, own[name], value, spec.case_id))
        alternative_errors = tuple(
            (alt, _recorded(_max_error(name, result[name], value, spec.case_id)))
            for alt, result in alternatives.items() if name in result
        )
        measured = [reference_error, _recorded(spread[name]), *(e for _, e in alternative_errors)]
        tolerances[name] = Float32Tolerance(
            rtol=FLOAT32_RTOL,
            atol=float32_atol(FLOAT32_SAFETY_FACTOR, FLOAT32_ATOL_FLOOR, measured),
            safety_factor=FLOAT32_SAFETY_FACTOR,
            atol_floor=FLOAT32_ATOL_FLOOR,
            reference_float32_error=reference_error,
            perturbation_spread=_recorded(spread[name]),
            alternative_errors=alternative_errors,
        )
    return tolerances


def build_case(
    spec: CaseSpec, reference: ComponentFn
) -> tuple[dict[str, Any], list[tuple[TensorEntry, NDArray[Any]]]]:
    """The header and tensors of one case: drawn inputs, reference outputs, measured tolerances."""
    drawn: CaseTensors = spec.draw()
    config = _json_config(spec)
    result64 = reference(drawn.inputs, drawn.params, config, drawn.upstream)
    tensors: list[tuple[TensorEntry, NDArray[Any]]] = []
    for role, group in (("input", drawn.inputs), ("param", drawn.params),
                        ("upstream_grad", drawn.upstream)):
        for name, value in group.items():
            array = _as_array(f"{spec.case_id}: {name}", value)
            tensors.append((tensor_entry(name, role, array), array))
    checked = [(role, name, _as_array(f"{spec.case_id}: {name}", value))
               for role, name, value in _checked(result64, spec.store_intermediates)]
    float32 = measure_float32(spec, reference, drawn, {name: array for _, name, array in checked})
    for role, name, array in checked:
        entry = tensor_entry(name, role, array, Tolerance(spec.rtol, spec.atol), float32[name])
        tensors.append((entry, array))
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


PROVENANCE_FIELDS = ("refimpl_version", "numpy_version")  # where a case was generated, not what it holds


def _compare_case(committed_dir: Path, fresh_dir: Path) -> list[str]:
    """Every field of the two `case.json` files, then every tensor's values."""
    try:
        old = read_case(committed_dir)
    except GoldenError as error:
        return [str(error)]
    new = read_case(fresh_dir)
    old_doc = json.loads((committed_dir / "case.json").read_text())
    new_doc = json.loads((fresh_dir / "case.json").read_text())
    problems = _compare_fields("", old_doc, new_doc, skip={"tensors", *PROVENANCE_FIELDS})
    old_names = [t["name"] for t in old_doc["tensors"]]
    new_names = [t["name"] for t in new_doc["tensors"]]
    if old_names != new_names:
        return [*problems, f"tensors committed {old_names}, now {new_names}"]
    for old_raw, new_raw, old_t, new_t in zip(old_doc["tensors"], new_doc["tensors"], old.tensors, new.tensors,
                                              strict=True):
        where = f"tensor {old_t.name!r}: "
        field_problems = _compare_fields("", old_raw, new_raw, skip={"sha256", "tolerance"})
        if field_problems:
            problems += [where + p for p in field_problems]
            continue
        try:
            expected = load_tensor(committed_dir, old_t)
        except GoldenError as error:
            problems.append(str(error))
            continue
        actual = load_tensor(fresh_dir, new_t)
        scale = float(np.max(np.abs(expected))) if expected.size and expected.dtype.kind == "f" else 0.0
        if "tolerance" in old_raw or "tolerance" in new_raw:
            tolerance_problems = _compare_tolerances(old_raw.get("tolerance"), new_raw.get("tolerance"), scale)
            if tolerance_problems:
                problems += [where + p for p in tolerance_problems]
                continue
        problems += _compare_values(old_t, actual, expected, scale)
    return problems


def _compare_fields(prefix: str, old: Any, new: Any, skip: Collection[str] = ()) -> list[str]:
    """Fields of two JSON objects that differ (keys in `skip` left out), named by their path."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [] if old == new else [f"{prefix or 'value'} committed {old!r}, now {new!r}"]
    problems = []
    for key in sorted((old.keys() | new.keys()) - set(skip)):
        path = f"{prefix}{key}"
        if key not in new:
            problems.append(f"{path} committed but no longer generated")
        elif key not in old:
            problems.append(f"{path} generated but not committed")
        elif isinstance(old[key], dict) and isinstance(new[key], dict):
            problems += _compare_fields(path + ".", old[key], new[key])
        elif old[key] != new[key] or type(old[key]) is not type(new[key]):
            problems.append(f"{path} committed {old[key]!r}, now {new[key]!r}")
    return problems


def _compare_tolerances(old: Any, new: Any, scale: float) -> list[str]:
    """float64 tolerances exactly; float32 ones by the rules of spec/golden.md ("Generation and
    verification"); `scale` is the tensor's max |value|."""
    if not isinstance(old, dict) or not isinstance(new, dict) or old.keys() != new.keys():
        return [f"tolerance committed {old!r}, now {new!r}"]
    machine_dependent = {"atol", "reference_float32_error", "alternative_errors", "perturbation_spread"}
    problems = _compare_fields("tolerance.", {k: v for k, v in old.items() if k != "float32"},
                               {k: v for k, v in new.items() if k != "float32"})
    problems += _compare_fields("tolerance.float32.", old["float32"], new["float32"], skip=machine_dependent)
    if problems:
        return problems
    was, now = old["float32"], new["float32"]
    if set(was["alternative_errors"]) != set(now["alternative_errors"]):
        return [f"tolerance.float32.alternative_errors: committed {sorted(was['alternative_errors'])}, "
                f"now {sorted(now['alternative_errors'])}"]
    measured = [was["reference_float32_error"], was["perturbation_spread"], *was["alternative_errors"].values()]
    follows = float32_atol(was["safety_factor"], was["atol_floor"], measured)
    if was["atol"] != follows:
        problems.append(f"tolerance.float32.atol committed {was['atol']!r} does not follow from its "
                        f"recorded ingredients by the rule ({follows!r})")
    spread_slack = PERTURBATION_SPREAD_ATOL + PERTURBATION_SPREAD_RTOL * abs(now["perturbation_spread"])
    if abs(was["perturbation_spread"] - now["perturbation_spread"]) > spread_slack:
        problems.append(f"tolerance.float32.perturbation_spread committed {was['perturbation_spread']!r}, "
                        f"now {now['perturbation_spread']!r}")
    # Below this an error moves neither the atol nor, against rtol * |expected|, the allowed error much.
    small = (was["atol_floor"] + was["rtol"] * scale) / was["safety_factor"]
    largest_was = max(max(measured), small)
    largest_now = max(now["reference_float32_error"], now["perturbation_spread"],
                      *now["alternative_errors"].values(), small)
    if max(was["atol"], now["atol"]) > FLOAT32_DRIFT_FACTOR * min(was["atol"], now["atol"]):
        problems.append(f"tolerance.float32.atol committed {was['atol']:.3g}, now {now['atol']:.3g}: more than "
                        f"{FLOAT32_DRIFT_FACTOR:g}x apart")
    # One evaluation order may round far worse on one CPU than on another (43x seen for one that is not
    # the largest); what matters is that no measurement, committed or fresh, exceeds 8x the largest
    # measurement of the other side: then the committed atol still covers every fresh measurement.
    pairs = [("reference_float32_error", was["reference_float32_error"], now["reference_float32_error"])]
    pairs += [(f"alternative_errors.{k}", v, now["alternative_errors"][k])
              for k, v in was["alternative_errors"].items()]
    for field, a, b in pairs:
        if a > FLOAT32_DRIFT_FACTOR * largest_now or b > FLOAT32_DRIFT_FACTOR * largest_was:
            problems.append(f"tolerance.float32.{field} committed {a:.3g}, now {b:.3g}: more than "
                            f"{FLOAT32_DRIFT_FACTOR:g}x apart from the largest measurement (committed "
                            f"{largest_was:.3g}, now {largest_now:.3g})")
    return problems


def _compare_values(entry: TensorEntry, actual: NDArray[Any], expected: NDArray[Any], scale: float) -> list[str]:
    """Values within the float64 noise floor: rtol 1e-10, atol 1e-12 max(1, max |expected|), and for a
    checked tensor at least 1% of the float64 atol the case gives implementations (a tensor that is 0
    for every input, built from large cancelling terms, differs between CPUs by more than 1e-12)."""
    atol = NOISE_FLOOR_ATOL * max(1.0, scale)
    if entry.float64 is not None:
        atol = max(atol, NOISE_FLOOR_SHARE_OF_FLOAT64_ATOL * entry.float64.atol)
    comparison = compare_arrays(entry.name, actual, expected, NOISE_FLOOR_RTOL, atol)
    if not comparison.passed:
        return ["drift beyond the float64 noise floor: " + comparison.describe()]
    return []
