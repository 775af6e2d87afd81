"""Instruction progress of a run on stderr: a rich bar on a terminal, lines elsewhere.

On a terminal, rich draws a bar with the count, elapsed time and an estimate of the time
left, once the run has taken 0.3 s (short runs print nothing). Elsewhere (a log, a pipe) a
line every 10% once the run has taken more than `quiet_seconds`, so logs stay short.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

DRAW_AFTER_SECONDS = 0.3  # a terminal bar appears only on runs longer than this


class ProgressBar:
    """A `progress(done, total)` callback for run_program; `finish()` when the run ends."""

    def __init__(self, stream: TextIO, quiet_seconds: float = 2.0, prog: str = "esact-run",
                 unit: str = "instructions") -> None:
        self.stream = stream
        self.unit = unit
        self.tty = stream.isatty()
        self.quiet_seconds = quiet_seconds
        self.prog = prog
        self.start = time.monotonic()
        self.last_decile = -1
        self.bar: Any = None  # rich.progress.Progress, made when first drawn
        self.task: Any = None

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - self.start
        if self.tty:
            if self.bar is None and (elapsed < DRAW_AFTER_SECONDS and done < total):
                return
            self._draw(done, total)
            return
        if elapsed >= self.quiet_seconds:
            decile = int((done / total if total else 1.0) * 10)
            if decile > self.last_decile:
                self.stream.write(f"{self.prog}: {done}/{total} {self.unit} ({elapsed:.0f}s)\n")
                self.stream.flush()
                self.last_decile = decile

    def _draw(self, done: int, total: int) -> None:
        if self.bar is None:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            console = Console(file=self.stream, force_terminal=True)
            self.bar = Progress(TextColumn(self.prog), BarColumn(), MofNCompleteColumn(),
                                TextColumn(self.unit), TimeElapsedColumn(),
                                TextColumn("elapsed"), TimeRemainingColumn(), TextColumn("left"),
                                console=console, transient=False)
            self.bar.start()
            self.task = self.bar.add_task(self.prog, total=total)
        self.bar.update(self.task, completed=done, total=total)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
