"""How many BLAS threads the tools use, chosen so that a busy machine is not oversubscribed.

numpy's BLAS starts one thread per core; on a machine whose cores are already busy those
threads fight each other and everyone else: BERT-base on esact-run took 20-21 s with default
BLAS threads against 3.6-8.0 s single-threaded (issue 16). The tools (esact-cc, esact-run,
esact-tune) therefore use the cores that are idle at start-up: the usable cores (CPU affinity)
minus the 1-minute load average, at least 1. A thread count the user set in the environment
(OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS) is obeyed instead. esact-sweep's
workers share the idle cores: each of its N pool processes gets 1/N of them (at least 1), a
Ray task the one CPU it reserves.
onnxruntime's host sessions stay at 1 thread (runtime/host_segments.py: deterministic
reductions), so BLAS is the only pool to size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def chosen_blas_threads(usable_cores: int, load_average: float,
                        environment: Mapping[str, str], workers: int = 1) -> int | None:
    """The BLAS thread count for these conditions, for each of `workers` processes sharing the
    idle cores (esact-sweep's pool: each gets its share, at least 1); None when the user's
    setting applies."""
    if any(environment.get(name) for name in THREAD_VARIABLES):
        return None
    idle = int(usable_cores - load_average)
    return max(1, min(usable_cores, idle) // workers)


def blas_threads_for(workers: int = 1) -> int | None:
    """`chosen_blas_threads` for this machine now (its usable cores and 1-minute load)."""
    return chosen_blas_threads(len(os.sched_getaffinity(0)), os.getloadavg()[0], os.environ,
                               workers)


def set_blas_threads(threads: int | None) -> None:
    """Limit numpy's BLAS pool in this process to `threads` (None: leave it as it is)."""
    if threads is not None:
        import numpy  # noqa: F401 - loads the BLAS library threadpoolctl looks for
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")


def blas_thread_counts(_: object = None) -> list[int]:
    """The thread counts of this process's BLAS pools (a pool worker's, in tests)."""
    import numpy  # noqa: F401 - loads the BLAS library threadpoolctl looks for
    from threadpoolctl import threadpool_info

    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def limit_blas_threads() -> int | None:
    """Limit numpy's BLAS pool to `chosen_blas_threads` for this process; returns the limit."""
    threads = blas_threads_for()
    set_blas_threads(threads)
    return threads
