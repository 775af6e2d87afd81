"""Reading a user-named file with a size cap that holds for every kind of file.

`os.stat().st_size` is 0 for devices and FIFOs (`/dev/zero`, a pipe), so a size check on it lets
an endless file through. Every tool reads the files a user names (models, binaries, configs,
assembly, arrays) through `read_bounded`, which counts the bytes it actually reads and stops at
the cap with one clear error, before the allocation that would exhaust memory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import UsageError

MiB = 1 << 20
GiB = 1 << 30

CONFIG_FILE_CAP = 1 * MiB
"""Hardware TOML, SPLS JSON configs and assembly sources are text a person writes."""


CHUNK_BYTES = 16 * MiB
"""Reads go in chunks: `read(cap + 1)` would allocate the whole cap up front."""


def read_bounded(path: str | os.PathLike[str], cap: int, what: str) -> bytes:
    """The bytes of `path`, or a `UsageError` naming `what` and the path if it holds more than
    `cap` bytes (counted while reading, so devices and FIFOs are bounded too)."""
    path = Path(path)
    with open_user_file(path, what) as handle:
        chunks = _read_chunks(handle, cap + 1, path, what)
    if sum(map(len, chunks)) > cap:  # before joining: no second copy of an oversized file
        raise UsageError(f"{what} '{path}' is larger than the {_human(cap)} limit")
    return b"".join(chunks)


@contextlib.contextmanager
def open_user_file(path: Path, what: str) -> Iterator[BinaryIO]:
    """`open(path, "rb")` with a one-line `UsageError` when it cannot be opened."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise UsageError(f"cannot read {what} '{path}': not found") from None
    except IsADirectoryError:
        raise UsageError(f"{what} '{path}' is a directory") from None
    except OSError as e:
        raise UsageError(f"cannot read {what} '{path}': {e.strerror or e}") from None
    with handle:
        yield handle


def read_at_most(handle: BinaryIO, limit: int, path: Path, what: str) -> bytes:
    """Up to `limit` bytes from `handle`, read in chunks (memory grows with what arrives)."""
    return b"".join(_read_chunks(handle, limit, path, what))


def _read_chunks(handle: BinaryIO, limit: int, path: Path, what: str) -> list[bytes]:
    chunks = []
    remaining = limit
    try:
        while remaining > 0:
            chunk = handle.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as e:
        raise UsageError(f"cannot read {what} '{path}': {e.strerror or e}") from None
    return chunks


def read_bounded_text(path: str | os.PathLike[str], cap: int, what: str) -> str:
    """`read_bounded` decoded as UTF-8 (a decoding error names the byte offset)."""
    data = read_bounded(path, cap, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{what} '{path}' is not UTF-8 text (byte {e.start})") from None


def _human(size: int) -> str:
    return f"{size // GiB} GiB" if size >= GiB and size % GiB == 0 else f"{size // MiB} MiB"
