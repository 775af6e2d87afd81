"""esact-sweep on the bundled digits ViT: 1 vs 2 workers, local pool vs Ray, kill + resume.

Runs bench/sweeps/sweep_digits_512.toml (512 points, 16 compile groups; accuracy on the
whole test split) through the `esact-sweep` command, each run in a fresh output directory:
  1 worker (in process), 2 workers (local process pool), 2 workers on a local Ray cluster,
  and a 2-worker run killed (SIGKILL, whole process group) once half the points are stored,
  then restarted. Records wall times (and CPU times of esact-sweep and its pool workers: on a
  shared machine they show how much of the wall time was waiting for a core), the speed-up,
  whether every table is identical to the 1-worker one, and how many points the restart
  evaluated. For the 1- and 2-worker runs, where the CPU time went (esact-sweep --cpu-times):
  the main process, each compile and each execution, and the pool's own cost (the workers'
  start-up: the sweep's and its children's CPU minus the main process and the tasks); CPU
  time, unlike wall time, means something on a loaded machine.

Run:  python bench/bench_sweep.py [--spec FILE] [--json bench/results/sweep.json]
      [--runs one,two,ray,kill]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from esact_cc.sweep.points import expand
from esact_cc.sweep.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "bench" / "sweeps" / "sweep_digits_512.toml"
SUMMARY = re.compile(r"^(\d+) points \((\d+) evaluated now in (\d+) compile groups", re.M)


def sweep_command(spec: Path, out: Path, *extra: str) -> list[str]:
    exe = shutil.which("esact-sweep")
    assert exe is not None, "esact-sweep is not installed (pip install -e '.[sweep]')"
    return [exe, str(spec), "-o", str(out), *extra]


def children_cpu_seconds() -> float:
    """CPU time of waited-for descendants: esact-sweep and its pool workers (not Ray's)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(spec: Path, out: Path, *extra: str) -> dict:
    cpu_times = out.with_name(out.name + "-cpu.json")
    started, cpu = time.perf_counter(), children_cpu_seconds()
    load = os.getloadavg()
    done = subprocess.run(sweep_command(spec, out, *extra, "--cpu-times", str(cpu_times)),
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    cpu = children_cpu_seconds() - cpu
    if done.returncode != 0:
        raise SystemExit(f"esact-sweep {' '.join(extra)} failed:\n{done.stderr[-2000:]}")
    points, ran, groups = map(int, SUMMARY.search(done.stdout).groups())
    return {"args": list(extra), "wall_seconds": round(wall, 2),
            "cpu_seconds_sweep_and_pool": round(cpu, 2), "points": points,
            "evaluated": ran, "groups": groups, "load_average_before": load,
            "load_average_after": os.getloadavg(),
            "cpu": cpu_breakdown(json.loads(cpu_times.read_text()), cpu, "--ray" in extra)}


def cpu_breakdown(times: dict, sweep_and_pool: float, on_ray: bool) -> dict:
    """esact-sweep --cpu-times summed by kind; the pool's own cost is what the children's CPU
    time holds beyond the main process and the tasks (Ray's workers are not our children)."""
    tasks = times["tasks"]
    workers = sorted({task["worker"] for task in tasks})
    by_worker = {str(w): round(sum(t["cpu_seconds"] for t in tasks if t["worker"] == w), 2)
                 for w in workers}
    main = times["main_process_cpu_seconds"]
    in_main = sum(t["cpu_seconds"] for t in tasks if t["worker"] == times["main_process_id"])
    summary = {"main_process": main,
               "compiles": round(sum(t["cpu_seconds"] for t in tasks if t["kind"] == "compile"), 2),
               "executions": round(sum(t["cpu_seconds"] for t in tasks
                                       if t["kind"] == "execute"), 2),
               "tasks_by_worker": by_worker,
               "compile_per_group": [t["cpu_seconds"] for t in tasks if t["kind"] == "compile"],
               "execution_per_program": [
                   {"groups": len(t["groups"]), "points": t["points"],
                    "cpu_seconds": t["cpu_seconds"]} for t in tasks if t["kind"] == "execute"]}
    if not on_ray:
        summary["pool_overhead"] = round(sweep_and_pool - main - times["tasks_cpu_seconds"]
                                         + in_main, 2)
    return summary


def print_cpu(name: str, run: dict) -> None:
    cpu = run["cpu"]
    print(f"{name}: CPU main process {cpu['main_process']} s, compiles {cpu['compiles']} s, "
          f"executions {cpu['executions']} s, pool start-up "
          f"{cpu.get('pool_overhead', 'n/a (Ray)')} s; tasks by worker {cpu['tasks_by_worker']}",
          flush=True)
    for task in cpu["execution_per_program"]:
        print(f"  execution of {task['groups']} group(s), {task['points']} points: "
              f"{task['cpu_seconds']} s CPU", flush=True)


def killed_and_resumed(spec: Path, out: Path, points: int) -> dict:
    """Kill a 2-worker sweep once half its points are stored; run it again."""
    process = subprocess.Popen(sweep_command(spec, out, "--workers", "2"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    stored = out / "results.jsonl"
    while process.poll() is None:
        time.sleep(0.5)
        if stored.exists() and len(stored.read_bytes().splitlines()) >= points // 2:
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.wait()
    before_restart = len(stored.read_bytes().splitlines())
    resumed = timed_run(spec, out, "--workers", "2")
    return {"stored_when_killed": before_restart, "restart": resumed,
            "restart_evaluated_only_the_rest": resumed["evaluated"] == points - before_restart}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument("--runs", default="one,two,ray,kill")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    runs = args.runs.split(",")
    result: dict = {"spec": str(args.spec.relative_to(ROOT) if args.spec.is_relative_to(ROOT)
                                 else args.spec), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        tables = {}
        for name, extra in (("one", ("--workers", "1")), ("two", ("--workers", "2")),
                            ("ray", ("--workers", "2", "--ray", "local"))):
            if name in runs:
                result[name] = timed_run(args.spec, Path(tmp) / name, *extra)
                tables[name] = (Path(tmp) / name / "results.csv").read_bytes()
                print(f"{name}: {result[name]['wall_seconds']} s, "
                      f"{result[name]['points']} points", flush=True)
                print_cpu(name, result[name])
        if "one" in tables:
            for name in ("two", "ray"):
                if name in tables:
                    result[name]["table_identical_to_one"] = tables[name] == tables["one"]
        if "one" in result and "two" in result:
            result["speedup_two_vs_one"] = round(
                result["one"]["wall_seconds"] / result["two"]["wall_seconds"], 2)
        if "kill" in runs:
            groups = expand(load_spec(args.spec), args.spec.parent, str(args.spec))
            points = sum(len(group.points) for group in groups)
            result["kill"] = killed_and_resumed(args.spec, Path(tmp) / "kill", points)
            table = (Path(tmp) / "kill" / "results.csv").read_bytes()
            if "one" in tables:
                result["kill"]["table_identical_to_one"] = table == tables["one"]
            print(f"kill: {result['kill']['stored_when_killed']} stored when killed, restart "
                  f"evaluated {result['kill']['restart']['evaluated']}", flush=True)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
