"""Input validation at the public boundary of every component.

A component names each array and the dimensions it expects, in the spec's letters
(B batch, L length, D width, ...). `Shapes` binds each letter to a size the first time it is
seen and refuses any later array that disagrees, so the error names the argument, the expected
shape with the bound sizes, and the actual shape: never an IndexError deep in a matmul.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating[Any]]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.integer[Any]]

Dim = str | int
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _written(dims: tuple[Dim, ...]) -> str:
    """The expected shape as an error message writes it: (B, L, 3)."""
    return "(" + ", ".join(str(d) for d in dims) + ")"


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
        # every model step checks a hundred or so arrays: the messages are only built on an error
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{name}: expected a numpy array, got {type(value).__name__}")
        if value.ndim != len(dims):
            raise ValueError(
                f"{name}: expected {len(dims)} dimensions {_written(dims)}, got shape {value.shape}"
            )
        sizes = self.sizes
        for axis, (dim, actual) in enumerate(zip(dims, value.shape, strict=True)):
            if isinstance(dim, int):
                if actual != dim:
                    raise ValueError(
                        f"{name}: expected shape {_written(dims)}, got {value.shape} (axis {axis})"
                    )
                continue
            bound = sizes.setdefault(dim, actual)
            if bound != actual:
                bound_shape = tuple(sizes.get(d, "?") if isinstance(d, str) else d for d in dims)
                raise ValueError(
                    f"{name}: expected shape {_written(dims)} = {bound_shape}, got {value.shape} "
                    f"({dim} is {bound} from an earlier argument, {actual} here)"
                )

    def check_float(
        self, name: str, value: Any, dims: tuple[Dim, ...], *, allow_inf: bool = False
    ) -> Array:
        """Check a float array's shape, that its dtype matches every other float argument and
        that it holds no NaN or inf (`allow_inf`: -inf/inf allowed, for scores where -inf
        means "never ranked"; NaN never is)."""
        self._shape(name, value, dims)
        if value.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name}: expected float32 or float64, got {value.dtype}")
        if allow_inf:
            if np.isnan(value).any():
                raise ValueError(f"{name}: expected no NaN, got NaN at position "
                                 f"{tuple(int(i) for i in np.argwhere(np.isnan(value))[0])}")
        else:
            require_finite_array(name, value)
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
    """A config value that must be an int >= 1: a non-integer (a str, 2.5, a bool: True is not a
    head count) is a TypeError, an int below 1 a ValueError (spec/conventions.md)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name}: expected a positive integer, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def require_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """A config value that must be one of `choices`: a non-string is a TypeError, an unknown
    string a ValueError."""
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected one of {choices}, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
    return value


def require_finite_array(name: str, value: Array) -> None:
    """A float array must hold no NaN or inf: one would spread through every sum it enters."""
    if value.size and not np.isfinite(value).all():
        position = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
        raise ValueError(f"{name}: expected finite values, got {value[position]} at position {position}")


def require_array(name: str, value: Any) -> np.ndarray[Any, Any]:
    """A numpy array, never a list: a list has no dtype, and guessing one hides the caller's mistake."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(value).__name__}")
    return value


def require_bool(name: str, value: Any) -> bool:
    """A flag must be a bool: a truthy string such as "no" would silently mean yes."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name}: expected a bool, got {value!r}")
    return bool(value)


def require_real(
    name: str, value: Any, *, low: float | None = None, high: float | None = None,
    low_open: bool = False,
) -> float:
    """A finite real config value in [low, high] (or (low, high] when `low_open`); bool is refused."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if low is not None and (number <= low if low_open else number < low):
        raise ValueError(f"{name}: expected {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and number > high:
        raise ValueError(f"{name}: expected <= {high}, got {value!r}")
    return number


def require_int(name: str, value: Any, *, low: int | None = None) -> int:
    """An int config value (bool and 2.5 are refused), at least `low`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def require_ids(name: str, value: Any, num: int, dims: tuple[Dim, ...] | None = None) -> IntArray:
    """An integer id array with every id in [0, num)."""
    array = require_array(name, value)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer id array, got {array.dtype}")
    if dims is not None and array.ndim != len(dims):
        raise ValueError(f"{name}: expected {len(dims)} dimensions {dims}, got shape {array.shape}")
    if array.size and (array.min() < 0 or array.max() >= num):
        bad = array[(array < 0) | (array >= num)].reshape(-1)[0]
        raise ValueError(f"{name}: id {bad} is outside [0, {num})")
    result: IntArray = array
    return result


def require_nonempty_batch(name: str, size: int, why: str = "a loss is a mean over its rows") -> None:
    """An empty batch where the result would have no defined value (a mean over no rows) is
    refused by name, never answered with NaN or numpy's reshape message."""
    if size == 0:
        raise ValueError(f"{name}: the batch is empty (B = 0); {why}")


@contextmanager
def caller_names(**outer_by_inner: str) -> Iterator[None]:
    """Re-raise a component's ValueError/TypeError under the name the caller used.

    A model passes `long_Wk` to an attention block that calls it `Wk`; inside
    `with caller_names(Wk="long_Wk"):` the block's "Wk: expected ..." becomes "long_Wk: expected ...".
    Only the leading argument name is renamed: the rest of the message is the component's.
    """
    try:
        yield
    except (ValueError, TypeError) as error:
        message = str(error)
        for inner, outer in outer_by_inner.items():
            if message.startswith(f"{inner}:"):
                raise type(error)(outer + message[len(inner):]) from error
        raise
