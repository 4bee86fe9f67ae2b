"""Input validation at the public boundary of every component.

A component names each array and the dimensions it expects, in the spec's letters
(B batch, L length, D width, ...). `Shapes` binds each letter to a size the first time it is
seen and refuses any later array that disagrees, so the error names the argument, the expected
shape with the bound sizes, and the actual shape: never an IndexError deep in a matmul.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating[Any]]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.integer[Any]]

Dim = str | int


class Shapes:
    """Checks arrays against named dimensions and one shared float dtype.

    `Shapes(D=32)` pre-binds D; `check_float("x", x, ("B", "L", "D"))` then binds B and L from x
    and returns x. Every float array checked by one `Shapes` must share the dtype of the first,
    because a component computes in the dtype of its inputs and never silently mixes them.
    """

    def __init__(self, **known: int) -> None:
        self.sizes: dict[str, int] = dict(known)
        self.float_dtype: np.dtype[Any] | None = None
        self.float_dtype_source = ""

    def _shape(self, name: str, value: Any, dims: tuple[Dim, ...]) -> None:
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{name}: expected a numpy array, got {type(value).__name__}")
        expected = "(" + ", ".join(str(d) for d in dims) + ")"
        if value.ndim != len(dims):
            raise ValueError(
                f"{name}: expected {len(dims)} dimensions {expected}, got shape {value.shape}"
            )
        for axis, dim in enumerate(dims):
            actual = value.shape[axis]
            if isinstance(dim, int):
                if actual != dim:
                    raise ValueError(
                        f"{name}: expected shape {expected}, got {value.shape} (axis {axis})"
                    )
                continue
            bound = self.sizes.setdefault(dim, actual)
            if bound != actual:
                bound_shape = tuple(
                    self.sizes.get(d, "?") if isinstance(d, str) else d for d in dims
                )
                raise ValueError(
                    f"{name}: expected shape {expected} = {bound_shape}, got {value.shape} "
                    f"({dim} is {bound} from an earlier argument, {actual} here)"
                )

    def check_float(self, name: str, value: Any, dims: tuple[Dim, ...]) -> Array:
        """Check a float array's shape and that its dtype matches every other float argument."""
        self._shape(name, value, dims)
        if value.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name}: expected float32 or float64, got {value.dtype}")
        if self.float_dtype is None:
            self.float_dtype = value.dtype
            self.float_dtype_source = name
        elif value.dtype != self.float_dtype:
            raise TypeError(
                f"{name}: dtype {value.dtype} differs from {self.float_dtype} of "
                f"{self.float_dtype_source}; a component computes in one dtype"
            )
        result: Array = value
        return result

    def check_bool(self, name: str, value: Any, dims: tuple[Dim, ...]) -> BoolArray:
        """Check a boolean mask (True means a valid position)."""
        self._shape(name, value, dims)
        if value.dtype != np.bool_:
            raise TypeError(f"{name}: expected a bool mask (True = valid), got {value.dtype}")
        result: BoolArray = value
        return result

    def check_int(self, name: str, value: Any, dims: tuple[Dim, ...]) -> IntArray:
        """Check an integer id array."""
        self._shape(name, value, dims)
        if not np.issubdtype(value.dtype, np.integer):
            raise TypeError(f"{name}: expected an integer array, got {value.dtype}")
        result: IntArray = value
        return result

    def size(self, dim: str) -> int:
        """The size bound to `dim`."""
        return self.sizes[dim]


def require_positive_int(name: str, value: Any) -> int:
    """A config value that must be an int >= 1 (bool is refused: True is not a head count)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def require_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """A config value that must be one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
    return str(value)
