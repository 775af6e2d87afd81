"""Reading (part of) a user's file into memory once, refusing a file that changes meanwhile.

The ONNX frontend reads models and their external data through `read_stable`: the bytes are
copied into memory (never memory-mapped, so a file truncated during compilation cannot kill
the compiler with SIGBUS), only regular files are read (a FIFO or device would never end),
the byte range is checked against the file's size and a cap before anything is allocated,
and a file whose size or modification time differs after the read from before it is one
clear error instead of a half-old, half-new model.
"""

from __future__ import annotations

import mmap
import os
import stat
from pathlib import Path
from typing import BinaryIO

from esact_cc.runtime.errors import CompileError

_POPULATED = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
"""Anonymous pages faulted in by the mmap call itself, not one fault per page as the read
fills them (BERT-base's 415 MB: 0.24-0.27 -> 0.19-0.22 s CPU)."""


def _read_exactly(handle: BinaryIO, length: int) -> memoryview:
    # Anonymous memory (not the file: no SIGBUS), filled from the raw file: bytearray(length)
    # zero-fills first, np.empty asks for huge pages (both ~2x slower for a 415 MB model), and
    # the buffered reader's readinto copies through its buffer.
    data = memoryview(mmap.mmap(-1, length, flags=_POPULATED) if length else bytearray())
    raw = getattr(handle, "raw", handle)
    read = 0
    while read < length:
        count = raw.readinto(data[read:])
        if not count:
            break
        read += count
    return data if read == length else data[:read]


def read_stable(path: str | os.PathLike[str], what: str, cap: int, offset: int = 0,
                length: int | None = None) -> memoryview:
    """`length` bytes of `path` from `offset` (default: to the end), or a `CompileError` naming
    `what` and the path. Writable: the model reader moves each tensor's bytes a little within
    them, to align them (onnx_file_reader.py)."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once (and is refused below).
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            before = os.fstat(handle.fileno())
            if not stat.S_ISREG(before.st_mode):
                raise CompileError(f"{what} '{path}' is not a regular file")
            size = before.st_size
            length = size - offset if length is None else length
            if offset < 0 or length < 0 or offset + length > size:
                raise CompileError(
                    f"{what} '{path}': bytes {offset}..{offset + length} lie outside the file "
                    f"({size} bytes)"
                )
            if length > cap:
                raise CompileError(f"{what} '{path}': {length} bytes, beyond the limit of {cap}")
            handle.seek(offset)
            data = _read_exactly(handle, length)
            after = os.fstat(handle.fileno())
    except OSError as e:
        raise CompileError(f"cannot read {what} '{path}': {e.strerror or e}") from None
    unchanged = (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    if len(data) != length or not unchanged:
        raise CompileError(f"{what} '{path}' changed while being read")
    return data
