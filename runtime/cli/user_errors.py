"""The one way every esact tool turns a user-facing error into `error: <one line>` + exit 1.

Errors a user can cause are `EsactError`s (or OS errors on their files); anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from ..errors import EsactError


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def exit_code_of(run: Callable[[], int | None]) -> int:
    """Run a tool's body; user errors become one `error:` line on stderr and exit code 1."""
    try:
        return run() or 0
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, and keep the interpreter's
        # final flush of stdout from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except EsactError as exc:
        sys.stderr.write(f"error: {one_line(exc)}\n")
        return 1
    except OSError as exc:
        where = f" '{exc.filename}'" if getattr(exc, "filename", None) else ""
        sys.stderr.write(f"error: {one_line(exc.strerror or exc)}{where}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
