"""Run an esact tool's `main(argv)` inside the test process, the way its console script would.

For tests about what a tool computes or prints, not about the process: the same argv, working
directory, stdin bytes and stdout/stderr bytes as `subprocess.run`, without the ~1 s of
interpreter start and imports each process pays. What only a process shows (start-up, a crash
before `main`, the exit status the OS sees, signals, memory caps) stays covered by the
whole-process tests: every hostile test (test/hostile/) and at least one per tool elsewhere.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path


def tool_main(tool: str) -> Callable[[list[str]], int]:
    """The `main(argv)` of the module an installed console script (e.g. "esact-cc") runs: the
    script's own function may be a wrapper that ends the process (esact-cc's console_main)."""
    (script,) = entry_points(group="console_scripts", name=tool)
    return import_module(script.module).main


def _byte_stream(data: bytes = b"") -> io.TextIOWrapper:
    # write_through: text and .buffer writes stay in order, as on a pipe.
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", write_through=True)


@contextmanager
def _process_state(cwd: Path, stdin: bytes) -> Iterator[tuple[io.TextIOWrapper, io.TextIOWrapper]]:
    """Swap in cwd and the three standard streams; restore them whatever the tool did."""
    saved = os.getcwd(), sys.stdin, sys.stdout, sys.stderr
    out, err = _byte_stream(), _byte_stream()
    os.chdir(cwd)
    sys.stdin, sys.stdout, sys.stderr = _byte_stream(stdin), out, err
    try:
        yield out, err
    finally:
        os.chdir(saved[0])
        sys.stdin, sys.stdout, sys.stderr = saved[1:]


def run_in_process(tool: str, *args: str | os.PathLike[str], cwd: Path,
                   stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run `tool`'s main with `args` in `cwd`, as `subprocess.run(..., capture_output=True)`
    would report it: the exit code is main's return value or its SystemExit's code."""
    argv = [str(a) for a in args]
    main = tool_main(tool)
    with _process_state(cwd, stdin or b"") as (out, err):
        try:
            code = main(argv)
        except SystemExit as stop:  # argparse's --help/--version/usage errors
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        out.flush()
        err.flush()
    return subprocess.CompletedProcess([tool, *argv], int(code or 0), out.buffer.getvalue(),
                                       err.buffer.getvalue())
