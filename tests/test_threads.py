"""The BLAS-thread policy (refimpl/threads.py): the commands limit BLAS to one thread while they run
and give the caller's setting back; the library's functions never touch it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController, threadpool_info, threadpool_limits

from refimpl import cli
from refimpl.nn.attention import PARAM_NAMES, AttentionConfig, AttentionParams, mhsa_backward, mhsa_forward
from refimpl.threads import COMMAND_THREADS, blas_threads

CALLER_THREADS = 2  # the caller's setting in these tests: not the commands' 1, so a leak shows


def blas_thread_counts() -> list[int]:
    counts = [int(info["num_threads"]) for info in threadpool_info() if info["user_api"] == "blas"]
    assert counts, "no BLAS library found in this process: nothing to check"
    return counts


def policy_problems(policy: Callable[[int], AbstractContextManager[Any]]) -> list[str]:
    """What is wrong with a thread policy used as `with policy(1):` by a caller whose BLAS runs
    CALLER_THREADS threads: not limited inside, or the caller's setting not given back."""
    problems = []
    with threadpool_limits(CALLER_THREADS, user_api="blas"):
        with policy(1):
            if blas_thread_counts() != [1] * len(blas_thread_counts()):
                problems.append(f"not limited inside: {blas_thread_counts()}")
        if blas_thread_counts() != [CALLER_THREADS] * len(blas_thread_counts()):
            problems.append(f"caller's setting not restored: {blas_thread_counts()}")
    return problems


def test_blas_threads_limits_inside_and_restores_the_callers_setting() -> None:
    assert policy_problems(blas_threads) == []


@contextmanager
def _leaky(threads: int) -> Iterator[None]:
    ThreadpoolController().limit(limits=threads, user_api="blas")  # set, never restored
    yield


def test_negative_control_policy_check_catches_a_policy_that_does_not_restore() -> None:
    problems = policy_problems(_leaky)
    assert len(problems) == 1 and problems[0].startswith("caller's setting not restored")


def test_none_leaves_the_setting_alone_and_bad_counts_are_refused() -> None:
    with threadpool_limits(CALLER_THREADS, user_api="blas"):
        with blas_threads(None):
            assert set(blas_thread_counts()) == {CALLER_THREADS}
    for bad, error in ((0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)):
        with pytest.raises(error, match="threads"):
            with blas_threads(bad):  # type: ignore[arg-type]
                pass


def test_commands_run_on_one_blas_thread_and_give_the_setting_back(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[int]] = []

    def recording_list(args: Any) -> int:
        seen.append(blas_thread_counts())
        return 0

    monkeypatch.setattr(cli, "_list", recording_list)
    with threadpool_limits(CALLER_THREADS, user_api="blas"):
        assert cli.main(["golden", "list"]) == 0
        after = blas_thread_counts()
    assert seen and set(seen[0]) == {COMMAND_THREADS}
    assert set(after) == {CALLER_THREADS}


def test_library_functions_leave_the_callers_setting_alone() -> None:
    rng = np.random.default_rng(0)
    params = AttentionParams(**{n: rng.standard_normal((4, 4) if n[0] == "W" else 4) for n in PARAM_NAMES})
    with threadpool_limits(CALLER_THREADS, user_api="blas"):
        out, cache = mhsa_forward(params, rng.standard_normal((2, 3, 4)), np.ones((2, 3), bool), AttentionConfig(2))
        mhsa_backward(cache, np.ones_like(out))
        assert set(blas_thread_counts()) == {CALLER_THREADS}
