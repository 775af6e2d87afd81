"""Running a sweep: the groups whose points are not finished yet, on this process
(`workers=1`), a local process pool, or a Ray cluster (`ray_address`: an address, or
"local" to start one on this machine with `workers` CPUs; workers must see the spec's files
at the same paths). Two waves: every group compiled, then every distinct program executed
and its points re-timed (evaluate.py), on a pool or Ray in PARTS_PER_WORKER parts per worker
(consecutive test samples). A program's rows are stored once all its parts are done, so a
killed sweep resumes. A pool's workers start, and import the compiler, while this process
reads the models.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from esact_cc.runtime.errors import UsageError
from esact_cc.runtime.thread_policy import blas_threads_for, chosen_blas_threads, set_blas_threads

from .evaluate import (
    CompiledGroup,
    ExecutionPart,
    GroupTask,
    compile_task,
    evaluate_execution,
    execution_tasks,
    load_model_data,
    program_rows,
    reference_accuracy,
)
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
    tasks: list[TaskTime]  # this call's compiles and executions, in the order they finished


@dataclass(frozen=True)
class TaskTime:
    """A task's CPU seconds in the process that ran it (a worker's pid, or this one's)."""

    kind: str  # "compile" (one group) or "execute" (a distinct program, its groups' points)
    groups: list[str]
    points: int
    cpu_seconds: float
    worker: int


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
    times: list[TaskTime] = []
    # the pool's workers start (and import the compiler) while this process reads the models
    with _workers(workers, ray_address, bool(pending)) as (run, parts):
        tasks = _tasks(pending, spec, spec_path.parent, out_dir)
        executions = _executions(tasks, _compile(run, tasks, times))
        for rows in _execute(run, executions, parts, times):
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
                        len(executions), time.perf_counter() - started, written, times)


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


def _executions(tasks: list[GroupTask],
                compiled: list[CompiledGroup]) -> list[tuple[list[GroupTask], CompiledGroup]]:
    """Groups of one model with the same program share an execution (spec order): the
    groups and the first one's program."""
    by_group = {c.group_id: c for c in compiled}
    shared: dict[tuple[str, str], list[GroupTask]] = {}
    for task in tasks:
        shared.setdefault((task.group.model.name, by_group[task.group.id].digest),
                          []).append(task)
    return [(groups, by_group[groups[0].group.id]) for groups in shared.values()]


def _compile(run: Runner, tasks: list[GroupTask], times: list[TaskTime]) -> list[CompiledGroup]:
    compiled = []
    for task, (program, cpu, worker) in run(_measured(compile_task), tasks):
        compiled.append(program)
        times.append(TaskTime("compile", [task.group.id], len(task.group.points), cpu, worker))
    return compiled


def _execute(run: Runner, executions: list[tuple[list[GroupTask], CompiledGroup]], parts: int,
             times: list[TaskTime]) -> Iterator[list[dict[str, Any]]]:
    """Each program's rows once all its parts ran; every program's first part (with the
    re-timings: the longest) is queued before the others."""
    split = [execution_tasks(groups, program, parts) for groups, program in executions]
    order = sorted(((k, i) for k, tasks in enumerate(split) for i in range(len(tasks))),
                   key=lambda ki: ki[1])
    position = {id(split[k][i]): (k, i) for k, i in order}
    finished: dict[int, dict[int, ExecutionPart]] = {k: {} for k in range(len(split))}
    for task, (part, cpu, worker) in run(_measured(evaluate_execution),
                                         [split[k][i] for k, i in order]):
        times.append(TaskTime("execute", [g.group.id for g in task.groups], len(part.rows),
                              cpu, worker))
        k, i = position[id(task)]
        finished[k][i] = part
        if len(finished[k]) == len(split[k]):
            yield program_rows(task.groups[0], [finished[k][j] for j in range(len(split[k]))])


Runner = Callable[[Callable[[Any], Any], list[Any]], Iterator[tuple[Any, Any]]]


def _measured(function: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, float, int]]:
    return functools.partial(_measure, function)


def _measure(function: Callable[[Any], Any], item: Any) -> tuple[Any, float, int]:
    """`function(item)`, the CPU seconds it took in this process, and this process's pid."""
    started = time.process_time()
    result = function(item)
    return result, time.process_time() - started, os.getpid()


PARTS_PER_WORKER = 2
"""A program's execution is split into this many tasks per worker: 6 programs of unequal cost
on 2 workers left one idle at the end; the parts' fixed cost (parse the program, set up) is
small beside ~90 samples each."""


@contextlib.contextmanager
def _workers(workers: int, ray_address: str | None,
             any_work: bool) -> Iterator[tuple[Runner, int]]:
    """A `run(function, tasks)` yielding (task, result) as tasks finish, on the chosen
    workers, and the number of parts to split a program's execution into."""
    if ray_address is not None:
        with _ray(workers, ray_address) as run:
            yield run, PARTS_PER_WORKER * workers
    elif workers == 1 or not any_work:  # esact-sweep's process sized its BLAS (thread_policy)
        yield (lambda function, items: ((item, function(item)) for item in items)), 1
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: workers start clean (no onnxruntime threads or locks copied from here); each
        # gets its share of the idle cores for BLAS (2 workers with a 2-thread BLAS each on 2
        # cores: 1.34x the 1-worker speed instead of 1.8x)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start_worker,
                                 initargs=(blas_threads_for(workers),)) as pool:
            for _ in range(workers):  # each submit to a pool with no idle worker starts one
                pool.submit(int)
            yield (lambda function, items: _on_pool(pool, function, items)), \
                PARTS_PER_WORKER * workers


def _start_worker(blas_threads: int | None) -> None:
    """A pool worker's start: its BLAS share, and the compiler and hardware model imported
    (the first compile's imports, while the main process still reads the models)."""
    set_blas_threads(blas_threads)


def _on_pool(pool: Any, function: Callable[[Any], Any],
             items: list[Any]) -> Iterator[tuple[Any, Any]]:
    from concurrent.futures import as_completed

    futures = {pool.submit(function, item): item for item in items}
    try:
        for future in as_completed(futures):
            yield futures[future], future.result()
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

    def run(function: Callable[[Any], Any], items: list[Any]) -> Iterator[tuple[Any, Any]]:
        remote = ray.remote(num_cpus=1)(_on_one_cpu)
        by_ref = {remote.remote(function, item): item for item in items}
        waiting = list(by_ref)
        while waiting:
            finished, waiting = ray.wait(waiting, num_returns=1)
            yield by_ref[finished[0]], ray.get(finished[0])

    try:
        yield run
    finally:
        ray.shutdown()
