"""The BLAS-thread policy (README "Threads").

The library's functions never change the BLAS thread pools: how many threads NumPy's BLAS uses is
the caller's setting. The `refimpl` commands choose for themselves: every command runs its NumPy
work with BLAS limited to one thread (`refimpl demo --threads N` chooses N), and gives the
previous setting back when it ends.

Why one thread: the reference's matrices are small (D = 16 to 64, a few thousand rows), so a
threaded BLAS spends its time handing work between threads, and on a busy machine waiting for a
core (measured on the shared 2-core development machine: MHSA forward + backward 1,328 ms with
OpenBLAS's default threads against 153 ms on one). One thread also fixes the order of every BLAS
reduction, so regenerating the goldens twice gives the same bytes.

threadpoolctl finds the BLAS libraries loaded into the process (OpenBLAS, MKL, BLIS, Apple's
Accelerate) and sets their thread counts through each library's own API; OpenMP pools (used by
other libraries, e.g. torch) are left alone. A caller of the library who wants the same policy
writes `with blas_threads(1): ...` (or `threadpoolctl.threadpool_limits(1, user_api="blas")`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from threadpoolctl import threadpool_limits

from refimpl._check import require_positive_int

__all__ = ["COMMAND_THREADS", "blas_threads"]

COMMAND_THREADS = 1  # the BLAS threads of every `refimpl` command unless it is told otherwise


def blas_threads(threads: int | None = COMMAND_THREADS) -> AbstractContextManager[None]:
    """Inside `with blas_threads(n):` every loaded BLAS uses at most n threads; on exit each gets
    its previous setting back. `None` changes nothing (the caller's setting stays).

    A bad `threads` is refused when `blas_threads` is called, not later at the `with`."""
    if threads is not None:
        require_positive_int("threads", threads)
    return _limited(threads)


@contextmanager
def _limited(threads: int | None) -> Iterator[None]:
    with threadpool_limits(limits=threads, user_api="blas"):
        yield
