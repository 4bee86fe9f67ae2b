"""A row-sparse gradient: the gradient of a table that is zero outside a few rows.

An embedding's backward (refimpl.nn.embedding) scatters d_out onto the rows its ids read; a batch
reads a few hundred of a table's 10^5-10^6 rows, so the (V, D) result is almost all zeros.
`RowSparseGrad(rows, values)` is the same gradient without them: `values[j]` on row `rows[j]`,
zeros elsewhere (`to_dense`). refimpl.optim.lazy_adam_step updates only those rows
(spec/optim.md#lazy-adam).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from refimpl._check import Array, IntArray, Shapes, require_ids, require_int

__all__ = [
    "RowSparseGrad",
    "require_row_sparse",
]


@dataclass(frozen=True)
class RowSparseGrad:
    """The gradient of a table (V, ...) that is zero outside `rows`: `values[j]` is the gradient of
    row `rows[j]`. rows (R,) distinct ids in [0, V), ascending; values (R, ...) in the table's dtype.
    What an embedding's backward gives for the distinct ids a batch read (refimpl.nn.embedding)
    without the (V, ...) array of zeros around them."""

    rows: IntArray
    values: Array

    def to_dense(self, num_rows: int) -> Array:
        """The (num_rows, ...) gradient: `values` at `rows`, zeros elsewhere."""
        require_int("num_rows", num_rows, low=0)
        require_row_sparse("grad", self, (num_rows, *np.shape(self.values)[1:]), None)
        dense = np.zeros((num_rows, *self.values.shape[1:]), dtype=self.values.dtype)
        dense[self.rows] = self.values
        return dense


def require_row_sparse(label: str, grad: Any, shape: tuple[int, ...], dtype: np.dtype[Any] | None) -> None:
    """Refuse a RowSparseGrad that does not fit a table of `shape` (and `dtype` when given)."""
    if not isinstance(grad, RowSparseGrad):
        raise TypeError(f"{label}: expected a RowSparseGrad, got {type(grad).__name__}")
    rows = require_ids(f"{label}.rows", grad.rows, shape[0], ("R",))
    values = Shapes(R=rows.shape[0]).check_float(f"{label}.values", grad.values, ("R", *shape[1:]))
    if dtype is not None and values.dtype != dtype:
        raise TypeError(f"{label}.values: dtype {values.dtype} differs from the param's {dtype}")
    if rows.size > 1 and not (np.diff(rows) > 0).all():
        raise ValueError(f"{label}.rows: expected distinct rows in ascending order (a row's gradients "
                         f"summed into one), got {rows.tolist()[:10]}")
