"""How many BLAS threads the tools use, chosen so that a busy machine is not oversubscribed.

numpy's BLAS starts one thread per core; on a machine whose cores are already busy those
threads fight each other and everyone else: BERT-base on esact-run took 20-21 s with default
BLAS threads against 3.6-8.0 s single-threaded (issue 16). The tools (esact-cc, esact-run,
esact-tune) therefore use the cores that are idle at start-up: the usable cores (CPU affinity)
minus the 1-minute load average, at least 1. A thread count the user set in the environment
(OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS) is obeyed instead.
onnxruntime's host sessions stay at 1 thread (runtime/host_segments.py: deterministic
reductions), so BLAS is the only pool to size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def chosen_blas_threads(usable_cores: int, load_average: float,
                        environment: Mapping[str, str]) -> int | None:
    """The BLAS thread count for these conditions; None when the user's setting applies."""
    if any(environment.get(name) for name in THREAD_VARIABLES):
        return None
    idle = int(usable_cores - load_average)
    return max(1, min(usable_cores, idle))


def limit_blas_threads() -> int | None:
    """Limit numpy's BLAS pool to `chosen_blas_threads` for this process; returns the limit."""
    threads = chosen_blas_threads(len(os.sched_getaffinity(0)), os.getloadavg()[0], os.environ)
    if threads is not None:
        import numpy  # noqa: F401 - loads the BLAS library threadpoolctl looks for
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")
    return threads
