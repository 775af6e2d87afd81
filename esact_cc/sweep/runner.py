"""Running a sweep: the groups whose points are not finished yet, on this process
(`workers=1`), a local process pool, or a Ray cluster (`ray_address`: an address, or
"local" to start one on this machine with `workers` CPUs; workers must see the spec's files
at the same paths). Two waves: every group compiled, then every distinct program executed
and its points re-timed (evaluate.py). Rows are stored as each execution finishes, so a
killed sweep resumes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from esact_cc.runtime.errors import UsageError
from esact_cc.runtime.thread_policy import blas_threads_for, chosen_blas_threads, set_blas_threads

from .evaluate import (ExecutionTask, GroupTask, compile_task, evaluate_execution,
                       load_model_data, reference_accuracy)
from .pareto import mark_fronts, plot_fronts
from .points import Group, expand
from .spec import load_spec
from .store import ResultStore, check_formats, write_tables

ProgressFn = Callable[[int, int], None]  # (points done, points in the sweep)


@dataclass
class SweepOutcome:
    rows: list[dict[str, Any]]  # one per point, spec order
    ran: int  # points evaluated by this call (the rest were finished before)
    groups_ran: int  # compiles
    executions: int  # distinct programs executed
    seconds: float
    written: list[Path]


def run_sweep(spec_path: str | Path, out_dir: str | Path, *, workers: int = 1,
              ray_address: str | None = None, formats: Sequence[str] = ("csv",),
              plots_dir: str | Path | None = None,
              progress: ProgressFn | None = None) -> SweepOutcome:
    started = time.perf_counter()
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    check_formats(formats)
    if ray_address is not None:
        _import_ray()  # before any work
    spec_path, out_dir = Path(spec_path), Path(out_dir)
    spec = load_spec(spec_path)
    groups = expand(spec, spec_path.parent, str(spec_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out_dir)
    total = sum(len(g.points) for g in groups)
    pending = [replace(g, points=[p for p in g.points if p.id not in store.rows])
               for g in groups]
    pending = [g for g in pending if g.points]
    done = total - sum(len(g.points) for g in pending)
    if progress is not None:
        progress(done, total)
    tasks = _tasks(pending, spec, spec_path.parent, out_dir)
    with _workers(workers, ray_address, len(tasks)) as run:
        executions = _executions(tasks, list(run(compile_task, tasks)))
        for rows in run(evaluate_execution, executions):
            store.add(rows)
            done += len(rows)
            if progress is not None:
                progress(done, total)
    points = sorted((p for g in groups for p in g.points), key=lambda p: p.index)
    rows = [dict(store.rows[p.id]) for p in points]
    mark_fronts(rows)
    seen = list(dict.fromkeys(key for p in points for key in p.params))
    options = [key for key in seen if key.startswith("sparsity.")]  # beside the scheme
    rest = [key for key in seen if key not in options]
    at = rest.index("sparsity") + 1
    parameters = ["point_id", *rest[:at], *options, *rest[at:]]
    written = write_tables(rows, parameters, out_dir, formats)
    if plots_dir is not None:
        written += plot_fronts(rows, Path(plots_dir))
    return SweepOutcome(rows, sum(len(g.points) for g in pending), len(pending),
                        len(executions), time.perf_counter() - started, written)


def _tasks(groups: list[Group], spec: Any, spec_dir: Path, out_dir: Path) -> list[GroupTask]:
    """A task per group; each model's data and fp32 accuracy are read once, here."""
    count = {}
    models, references = {}, {}
    for group in groups:
        name = group.model.name
        if name not in models:
            models[name] = load_model_data(group.model, spec_dir, out_dir)
            samples = len(models[name].samples)
            wanted = spec.sweep.accuracy_samples or samples
            if wanted > samples or max(spec.sweep.inputs) >= samples:
                raise UsageError(f"model '{name}' has {samples} test samples; the spec asks "
                                 f"for {wanted} (sweep.accuracy_samples) and input "
                                 f"{max(spec.sweep.inputs)} (sweep.inputs)")
            count[name] = wanted
            references[name] = reference_accuracy(models[name], wanted)
    return [GroupTask(g, models[g.model.name], count[g.model.name], references[g.model.name])
            for g in groups]


def _executions(tasks: list[GroupTask], compiled: list[Any]) -> list[ExecutionTask]:
    """Groups of one model with the same program share an execution (spec order)."""
    by_group = {c.group_id: c for c in compiled}
    shared: dict[tuple[str, str], list[GroupTask]] = {}
    for task in tasks:
        shared.setdefault((task.group.model.name, by_group[task.group.id].digest),
                          []).append(task)
    return [ExecutionTask(groups, by_group[groups[0].group.id]) for groups in shared.values()]


Runner = Callable[[Callable[[Any], Any], list[Any]], Iterator[Any]]


@contextlib.contextmanager
def _workers(workers: int, ray_address: str | None, tasks: int) -> Iterator[Runner]:
    """A `run(function, tasks)` yielding results as tasks finish, on the chosen workers."""
    if ray_address is not None:
        with _ray(workers, ray_address) as run:
            yield run
    elif workers == 1 or tasks <= 1:  # esact-sweep's process sized its BLAS (thread_policy)
        yield lambda function, items: map(function, items)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: workers start clean (no onnxruntime threads or locks copied from here); each
        # gets its share of the idle cores for BLAS (2 workers with a 2-thread BLAS each on 2
        # cores: 1.34x the 1-worker speed instead of 1.8x)
        pool_size = min(workers, tasks)
        with ProcessPoolExecutor(pool_size, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=set_blas_threads,
                                 initargs=(blas_threads_for(pool_size),)) as pool:
            yield lambda function, items: _on_pool(pool, function, items)


def _on_pool(pool: Any, function: Callable[[Any], Any], items: list[Any]) -> Iterator[Any]:
    from concurrent.futures import as_completed

    futures = [pool.submit(function, item) for item in items]
    try:
        for future in as_completed(futures):
            yield future.result()
    finally:
        for future in futures:
            future.cancel()


def _on_one_cpu(function: Callable[[Any], Any], item: Any) -> Any:
    """`function(item)` in a Ray task, its BLAS on the one CPU the task reserves (unless the
    user's environment sets a thread count)."""
    set_blas_threads(chosen_blas_threads(1, 0.0, os.environ))
    return function(item)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs ray, which is not installed "
                         "(pip install 'esact-cc[sweep]')") from None
    return ray


@contextlib.contextmanager
def _ray(workers: int, address: str) -> Iterator[Runner]:
    ray = _import_ray()
    if address == "local":
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)

    def run(function: Callable[[Any], Any], items: list[Any]) -> Iterator[Any]:
        remote = ray.remote(num_cpus=1)(_on_one_cpu)
        waiting = [remote.remote(function, item) for item in items]
        while waiting:
            finished, waiting = ray.wait(waiting, num_returns=1)
            yield ray.get(finished[0])

    try:
        yield run
    finally:
        ray.shutdown()
