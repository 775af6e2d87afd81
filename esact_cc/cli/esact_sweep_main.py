"""`esact-sweep`: run a design-space sweep (a TOML spec) and write its tidy result table.

    esact-sweep spec.toml -o OUT_DIR [--workers N] [--ray ADDRESS|local]
                [--table csv,parquet] [--plots DIR] [--cpu-times FILE]

Finished points are kept in OUT_DIR/results.jsonl: running the same command again (after a
kill, or with more points in the spec) evaluates only the points not finished yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from esact_cc.runtime.cli.output_paths import check_output_dir, check_output_file
from esact_cc.runtime.cli.user_errors import exit_code_of

PROG = "esact-sweep"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="sweep spec (TOML)")
    parser.add_argument("-o", "--output-dir", required=True,
                        help="results.jsonl (finished points), results.csv/.parquet")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: one per CPU; 1 runs in this process)")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="run on a Ray cluster ('local' starts one with --workers CPUs)")
    parser.add_argument("--table", default="csv",
                        help="comma-separated table formats: csv, parquet (needs pyarrow)")
    parser.add_argument("--plots", metavar="DIR", default=None,
                        help="Pareto-front plots (cycles, energy, accuracy loss) as PNG")
    parser.add_argument("--cpu-times", metavar="FILE", default=None,
                        help="JSON: this process's CPU seconds and each compile's and "
                             "execution's, with the worker that ran it")
    return parser


def write_cpu_times(path: str, outcome: Any) -> None:
    """What the sweep's CPU time went to: this process since it started (imports, the model's
    data and fp32 accuracy, the table, and the tasks when it ran them itself) and each task
    in the process that ran it."""
    from esact_cc.runtime.atomic_write import atomic_write_text

    tasks = [{**asdict(task), "cpu_seconds": round(task.cpu_seconds, 3)}
             for task in outcome.tasks]
    atomic_write_text(Path(path), json.dumps({
        "main_process_id": os.getpid(),
        "main_process_cpu_seconds": round(time.process_time(), 3),
        "tasks_cpu_seconds": round(sum(task["cpu_seconds"] for task in tasks), 3),
        "tasks": tasks}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    def sweep() -> int:
        from esact_cc.runtime.progress import ProgressBar
        from esact_cc.runtime.thread_policy import limit_blas_threads
        from esact_cc.sweep.runner import run_sweep

        args = build_parser().parse_args(argv)
        if args.workers == 1 and args.ray is None:  # a pool's workers size their own
            limit_blas_threads()  # runtime/thread_policy.py: no oversubscribed busy machine
        check_output_dir("--output-dir", args.output_dir)
        if args.cpu_times is not None:
            check_output_file("--cpu-times", args.cpu_times)
        if args.plots is not None:
            check_output_dir("--plots", args.plots)
        bar = ProgressBar(sys.stderr, prog=PROG, unit="points")
        try:
            outcome = run_sweep(args.spec, args.output_dir, workers=args.workers,
                                ray_address=args.ray, formats=args.table.split(","),
                                plots_dir=args.plots, progress=bar)
        finally:
            bar.finish()
        front = sum(row["pareto_front"] for row in outcome.rows)
        print(f"{len(outcome.rows)} points ({outcome.ran} evaluated now in "
              f"{outcome.groups_ran} compile groups, {outcome.executions} distinct programs "
              f"executed; {len(outcome.rows) - outcome.ran} "
              f"finished before) in {outcome.seconds:.1f} s; {front} on a Pareto front")
        if args.cpu_times is not None:
            write_cpu_times(args.cpu_times, outcome)
            outcome.written.append(Path(args.cpu_times))
        for path in outcome.written:
            print(f"wrote {path}")
        return 0

    return exit_code_of(PROG, sweep)


if __name__ == "__main__":
    sys.exit(main())
