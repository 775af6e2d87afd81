"""The one error path of every esact tool: `exit_code_of(prog, body)`.

Every console script (esact-cc, esact-opt, esact-run, esact-objdump, esact-as, esact-tune,
esact-demo) runs its body through `exit_code_of`, which decides how a failure ends:

- a user error (an `EsactError`, an `OSError` on a file the user named): one line
  `prog: error: <what, where>` on stderr, exit 1, no traceback;
- running out of a resource (`MemoryError`, `RecursionError` on a deeply nested input): one
  line saying what ran out, exit 1;
- Ctrl-C, SIGTERM or SIGHUP: `finally` blocks run (temporary files are removed), one line,
  exit 128 + signal number;
- anything else is a bug: the traceback, then one line asking for a bug report, exit 70
  (EX_SOFTWARE). Exceptions from libraries (xDSL, numpy, json, onnx, ...) that a user's input
  causes are turned into `EsactError`s where that input is read, naming the file or option,
  so they never reach this function as bare library exceptions.

Usage errors found by argparse keep argparse's own form: `prog: error: ...`, exit 2; a
`CommandLineError` (a bad option value or combination found after parsing) is one such line,
exit 2 too.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import CommandLineError, EsactError
from ..numeric_warnings import numpy_warnings_as_lines

EXIT_USER_ERROR = 1
EXIT_USAGE_ERROR = 2
"""argparse's exit status for a bad command line."""
EXIT_INTERNAL_ERROR = 70
"""sysexits.h EX_SOFTWARE: an internal bug, reported with its traceback."""

TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Signals that end a tool like Ctrl-C does (SIGINT already raises KeyboardInterrupt)."""


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM/SIGHUP. Like KeyboardInterrupt it is not an
    `Exception`, so `except Exception` does not catch it and `finally` blocks clean up."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def _raise_terminated(signum: int, frame: object) -> None:
    # One signal is enough: a second one must not interrupt the cleanup the first started.
    for other in TERMINATING_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(signum)


def _silence_half_built_objects() -> None:
    """An interrupt can land inside a library constructor (zipfile.ZipFile while a weight store
    is written); freeing the half-built object later prints 'Exception ignored in __del__' after
    our one line. The process is ending on the user's signal: drop those reports."""
    sys.unraisablehook = lambda _report: None


@contextmanager
def _terminating_signals_raise() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = {signum: signal.signal(signum, _raise_terminated) for signum in TERMINATING_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _os_error_line(exc: OSError) -> str:
    what = exc.strerror or one_line(exc) or type(exc).__name__
    if getattr(exc, "filename", None) is None:
        return what
    where = f"'{exc.filename}'"
    if getattr(exc, "filename2", None) is not None:
        where += f" -> '{exc.filename2}'"
    return f"{where}: {what}"


def _user_error_line(exc: BaseException) -> str | None:
    """The one line for an exception a user can cause, else None (a bug)."""
    if isinstance(exc, EsactError):
        return one_line(exc) or type(exc).__name__
    if isinstance(exc, OSError):
        return _os_error_line(exc)
    if isinstance(exc, MemoryError):
        detail = one_line(exc)
        return "out of memory" + (f": {detail}" if detail else "")
    if isinstance(exc, RecursionError):
        return "input nested too deeply: out of stack (Python recursion limit reached)"
    return None


def exit_code_of(prog: str, run: Callable[[], int | None]) -> int:
    """Run a tool's body and return its exit code; see the module docstring."""
    def say(line: str) -> None:
        sys.stderr.write(f"{prog}: {line}\n")
        sys.stderr.flush()

    try:
        with _terminating_signals_raise(), numpy_warnings_as_lines(say):
            return run() or 0
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, and keep the interpreter's
        # final flush of stdout from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        _silence_half_built_objects()
        say("error: interrupted")
        return 128 + signal.SIGINT
    except Terminated as exc:
        _silence_half_built_objects()
        say(f"error: terminated by {exc}")
        return 128 + exc.signum
    except Exception as exc:  # noqa: BLE001 - sorted into user errors and bugs just below
        line = _user_error_line(exc)
        if line is None:
            traceback.print_exc()
            say(f"internal error: this is a bug in {prog}; please report it with the command "
                "line and the input files")
            return EXIT_INTERNAL_ERROR
        say(f"error: {line}")
        return EXIT_USAGE_ERROR if isinstance(exc, CommandLineError) else EXIT_USER_ERROR
