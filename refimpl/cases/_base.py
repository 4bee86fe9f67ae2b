"""The contract between the reference components and the golden generator.

A case module in `refimpl/cases/` (every module whose name does not start with `_`) exports
- `COMPONENTS`: a dict from component name to a `ComponentFn`, the reference implementation of that
  component in the shape every adapter uses (inputs, params, config, upstream grads in; tensors out);
- `CASES`: a tuple of `CaseSpec`, each a named, seeded recipe for the tensors of one golden case.

The generator draws a case's tensors from `numpy.random.Generator(PCG64(seed))`, the seed being a
hash of the case id, runs the reference, and writes every tensor with its role.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

Tensors = dict[str, NDArray[Any]]
Config = Mapping[str, Any]


@dataclass(frozen=True)
class Result:
    """What a reference component returns: outputs, gradients of every float input and param
    (named `d_<name>`), and named intermediates in the order they are computed."""

    outputs: Tensors
    grads: Tensors
    intermediates: Tensors = field(default_factory=dict)

    def flat(self) -> Tensors:
        """One dict, as an external adapter returns it."""
        return {**self.outputs, **self.intermediates, **self.grads}


ComponentFn = Callable[[Tensors, Tensors, Config, Tensors], Result]
"""`fn(inputs, params, config, upstream) -> Result`; upstream holds `d_<output>` for every output."""


@dataclass(frozen=True)
class CaseTensors:
    """The drawn tensors of a case: what the implementation under test receives."""

    inputs: Tensors
    params: Tensors
    upstream: Tensors


Builder = Callable[[np.random.Generator], "CaseTensors"]
"""Draws a case's tensors from the case's own generator."""


@dataclass(frozen=True)
class CaseSpec:
    """A golden case: a component, a config and a seeded recipe for its tensors.

    rtol/atol are the float64 tolerances an implementation is held to; raise atol for cases whose
    outputs are long sums (the noise of a sum grows with its length). `store_intermediates=False`
    leaves the named intermediates out of a large case to keep golden/ small (the small cases of the
    same component carry them).
    """

    component: str
    name: str
    description: str
    spec_section: str
    config: Config
    build: Builder
    rtol: float = 1e-7
    atol: float = 1e-9
    store_intermediates: bool = True

    @property
    def case_id(self) -> str:
        return f"{self.component}/{self.name}"

    @property
    def seed(self) -> int:
        return case_seed(self.case_id)

    def draw(self) -> CaseTensors:
        """The case's tensors, from the case's own generator."""
        return self.build(np.random.Generator(np.random.PCG64(self.seed)))


def exact_case(
    component: str, name: str, description: str, section: str, config: Config, build: Builder
) -> CaseSpec:
    """A case whose results are integers (ids, ranks, routes) or exact sums: compared with
    atol = rtol = 0, so any port must reproduce them exactly."""
    return CaseSpec(component, name, description, section, config, build, rtol=0.0, atol=0.0)


def case_seed(case_id: str) -> int:
    """The generator seed of a case: the first 8 bytes of sha256(case_id), little-endian."""
    return int.from_bytes(hashlib.sha256(case_id.encode("utf-8")).digest()[:8], "little")


def upstream_like(rng: np.random.Generator, outputs: Mapping[str, tuple[int, ...]]) -> Tensors:
    """Fixed random upstream gradients `d_<name>` for outputs of the given shapes.

    Drawn from N(0, 1), never all ones: all ones hides transposition and reduction bugs.
    """
    return {f"d_{name}": rng.standard_normal(shape) for name, shape in outputs.items()}
