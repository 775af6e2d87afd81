"""BLAS threads chosen from idle cores; the user's environment setting wins."""

import os
import subprocess
import sys

import pytest

from esact_cc.runtime.thread_policy import chosen_blas_threads


@pytest.mark.parametrize(("cores", "load", "expected"), [
    (8, 0.0, 8),    # idle machine: every core
    (8, 5.5, 2),    # busy: the idle ones
    (8, 30.0, 1),   # overloaded: still one
    (2, 0.4, 1),
])
def test_idle_cores_are_used(cores: int, load: float, expected: int) -> None:
    assert chosen_blas_threads(cores, load, {}) == expected


@pytest.mark.parametrize("variable", ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"])
def test_user_setting_is_obeyed(variable: str) -> None:
    assert chosen_blas_threads(8, 0.0, {variable: "3"}) is None


def test_limit_applies_to_the_loaded_blas() -> None:
    # A fresh process: the limit is process-wide, and the pytest process may not be idle.
    code = (
            "from esact_cc.runtime.thread_policy import limit_blas_threads\n"
            "from threadpoolctl import threadpool_info\n"
            "limit = limit_blas_threads()\n"
            "blas = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']\n"
            "assert blas and all(n == limit for n in blas), (limit, blas)\n"
            "print(limit)\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert int(out.stdout) >= 1


@pytest.mark.parametrize(("cores", "load", "workers", "expected"), [
    (2, 0.0, 2, 1),   # esact-sweep --workers 2 on 2 idle cores: one BLAS thread each
    (8, 0.0, 3, 2),
    (8, 5.5, 2, 1),
    (2, 0.0, 4, 1),   # more workers than cores: still one
])
def test_pool_workers_share_the_idle_cores(cores: int, load: float, workers: int,
                                           expected: int) -> None:
    assert chosen_blas_threads(cores, load, {}, workers) == expected


def test_sweep_pool_workers_get_their_share(monkeypatch) -> None:
    from esact_cc.runtime.thread_policy import THREAD_VARIABLES, blas_thread_counts
    from esact_cc.sweep.runner import _workers

    for name in THREAD_VARIABLES:  # spawned workers inherit the environment
        monkeypatch.delenv(name, raising=False)
    with _workers(2, None, True) as (run, _):
        counts = [count for _, count in run(blas_thread_counts, [0, 1])]
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    assert counts and all(c and all(1 <= n <= share for n in c) for c in counts), counts
