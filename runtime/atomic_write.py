"""File output for every tool: all or nothing for files, write-through for everything else.

Where the output goes decides how it is written:
- a regular file or a new path: a temporary file beside it, then `os.replace`, so a run that
  fails half way (error, Ctrl-C, SIGTERM) leaves no partial binary, IR file, weight store,
  report, trace or output array behind, and the temporary file is removed;
- a symlink: its target is written as above (the link stays a link);
- a device, FIFO or socket (`-o /dev/stdout`, `-o /dev/null`, a pipe): opened and written
  through, never replaced by a regular file.

Errors are `OSError`s naming the output path, never the temporary file.
"""

from __future__ import annotations

import io
import os
import signal
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def writes_through(path: str | os.PathLike[str]) -> bool:
    """True when `path` (after symlinks) exists and is not a regular file or directory:
    a device, FIFO or socket, written in place rather than replaced."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
"""Signals the tools turn into exceptions (runtime/cli/user_errors.py)."""


def _replace_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Held while the temporary file is created: a signal landing between mkstemp creating it
    # and the `try` below would leave it behind. A held signal is delivered on unblocking,
    # inside the `try`, whose handler removes the file.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        # mkstemp creates 0600; give the file the permissions open() would have.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Create or replace `path` with what `write` writes to a binary stream (see above)."""
    path = Path(path)
    # A symlink's target is the output (kept a link); a dangling link creates its target.
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        if writes_through(target):
            with open(target, "wb") as handle:
                write(handle)
        else:
            _replace_atomically(target, write)
    except OSError as exc:
        # Name the output the user gave, not the temporary file (or no file at all).
        if exc.errno is not None and (exc.filename != str(path) or exc.filename2 is not None):
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_save_npy(path: str | os.PathLike[str], array: Any) -> None:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
