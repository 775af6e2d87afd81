"""`--mlir-timing` (esact-cc, esact-opt; `--time-passes` is esact-opt's former spelling): the
wall and CPU time of every pass, reported as a table on stderr when the pipeline ends, like
mlir-opt's execution time report; never on stdout, where the output goes. CPU time is this
process's (all its threads): on a shared machine wall time mostly measures the others."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # xdsl is not needed to build the parser (esact-cc --help)
    from xdsl.passes import ModulePass


def add_timing_argument(parser: argparse.ArgumentParser, *aliases: str) -> None:
    parser.add_argument("--mlir-timing", *aliases, dest="mlir_timing", action="store_true",
                        help="report the wall and CPU time of every pass on stderr"
                        + (f" ({', '.join(aliases)}: former spelling)" if aliases else ""))


class PassTimer:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []  # pass, wall s, CPU s
        self._start = (0.0, 0.0)

    def start(self, module_pass: ModulePass) -> None:
        self._start = (time.perf_counter(), time.process_time())

    def stop(self, module_pass: ModulePass) -> None:
        wall, cpu = self._start
        self.rows.append((module_pass.name, time.perf_counter() - wall,
                          time.process_time() - cpu))

    def report(self) -> None:
        from rich.console import Console
        from rich.table import Table

        total = sum(seconds for _, seconds, _ in self.rows)
        total_cpu = sum(cpu for _, _, cpu in self.rows)
        console = Console(file=sys.stderr, width=100)
        console.print(f"===- Execution time report -=== total {total:.4f} s wall, "
                      f"{total_cpu:.4f} s CPU")
        table = Table()
        table.add_column("wall time (s)", justify="right")
        table.add_column("%", justify="right")
        table.add_column("CPU time (s)", justify="right")
        table.add_column("pass")
        for name, seconds, cpu in self.rows:
            table.add_row(f"{seconds:.4f}", f"{100 * seconds / total if total else 0:.1f}",
                          f"{cpu:.4f}", name)
        console.print(table)
