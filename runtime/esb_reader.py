"""Reading a well-formed .esb file piece by piece: every payload read once, never copied.

`esb.read_esb` reads a binary of hundreds of MB. Read whole and sliced, it was in memory twice
(the file, then each data segment and host model copied out of it: 0.35 GB and 0.3 s of
BERT-base's load). Here the sections' layout comes from the header, the section table and
META, all read first: the DATA section is read as one bytes object (the data segments are
views of it), and each host model as its own bytes object (what onnxruntime takes, so no
copy for it either), while one SHA-256 runs over every piece in file order.

Only the layout the writer produces takes this path: a regular file of the declared size,
the current format version, the four sections in order, and a META whose data and host tables
tile their sections. For anything else `read_pieces` returns no pieces and the bytes it read,
and read_esb reads the rest and lets parse_esb report what is wrong, so every error is the
same either way. The checksum is verified before anything but that layout is used; the
Program is then built and validated as parse_esb does (esb.program_from_sections).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from .errors import BinaryFormatError, UsageError
from .esb import (CHECKSUM_BYTES, FORMAT_VERSION, HEADER, SECTION_ENTRY, SECTION_KINDS)

Pieces = tuple[bytes, bytes, bytes, bytes, list[bytes]]
"""config hash, TEXT, META, DATA, the host models: esb.program_from_sections' arguments."""


def read_pieces(handle: BinaryIO, head: bytes, total: int, path: Path
                ) -> tuple[Pieces | None, bytes]:
    """The checksummed sections of the binary whose 64-byte header `head` was read from
    `handle` and declares `total` bytes; or (None, every byte read so far) when the file is
    not a regular file of that size or its layout is not the writer's."""
    try:
        status = os.fstat(handle.fileno())
    except OSError as e:
        raise UsageError(f"cannot read binary '{path}': {e.strerror or e}") from None
    _magic, version, count, config_hash, _total, reserved = HEADER.unpack(head)
    if (not stat.S_ISREG(status.st_mode) or status.st_size != total
            or version != FORMAT_VERSION or count != len(SECTION_KINDS) or reserved):
        return None, head
    read = _Reader(handle, path, head)
    table = read(SECTION_ENTRY.size * count)
    sizes = _section_sizes(table, total)
    if sizes is None:
        return None, read.so_far()
    text, meta = read(sizes[0]), read(sizes[1])
    host_sizes = _host_sizes(meta, sizes[2], sizes[3])
    if host_sizes is None:
        return None, read.so_far()
    data = read(sizes[2])
    hosts = [read(size) for size in host_sizes]
    checksum = read(CHECKSUM_BYTES)
    if read.digest() != checksum:
        raise BinaryFormatError("checksum mismatch (file is corrupt or truncated)")
    if handle.read(1):  # the file grew since it was measured
        raise BinaryFormatError(f"header says {total} bytes, file has more")
    return (config_hash, text, meta, data, hosts), b""


class _Reader:
    """Reads exact byte counts, hashing all of them (the ones before the checksum) in order."""

    def __init__(self, handle: BinaryIO, path: Path, head: bytes) -> None:
        self.handle, self.path = handle, path
        self.pieces = [head]
        self.hash = hashlib.sha256(head)

    def __call__(self, size: int) -> bytes:
        try:
            piece = self.handle.read(size)
        except OSError as e:
            raise UsageError(f"cannot read binary '{self.path}': {e.strerror or e}") from None
        if len(piece) != size:  # the file shrank since it was measured
            raise BinaryFormatError(f"'{self.path}' is shorter than its header says")
        self.pieces.append(piece)
        return piece

    def digest(self) -> bytes:
        """SHA-256 of every piece but the last (the checksum itself)."""
        for piece in self.pieces[1:-1]:
            self.hash.update(piece)
        return self.hash.digest()

    def so_far(self) -> bytes:
        return b"".join(self.pieces)


def _section_sizes(table: bytes, total: int) -> list[int] | None:
    """TEXT, META, DATA and HOST sizes when the table lists them in that order, contiguous
    from the end of the table to the checksum; else None."""
    sizes, expected = [], HEADER.size + len(table)
    for i, kind in enumerate(sorted(SECTION_KINDS)):
        entry_kind, reserved, offset, size = SECTION_ENTRY.unpack_from(table, i * SECTION_ENTRY.size)
        if entry_kind != kind or reserved or offset != expected:
            return None
        sizes.append(size)
        expected += size
    return sizes if expected == total - CHECKSUM_BYTES else None


def _host_sizes(meta: bytes, data_size: int, host_size: int) -> list[int] | None:
    """Each host model's size when META's data and host tables tile their sections in order
    (as the writer lays them out); else None. Nothing here is trusted beyond splitting the
    reads: the checksum, then program_from_sections, check META in full."""
    try:
        parsed = json.loads(meta.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(parsed, dict):
        return None
    data = _tiling(parsed.get("data"), data_size)
    return _tiling(parsed.get("host"), host_size) if data is not None else None


def _tiling(entries: Any, section_size: int) -> list[int] | None:
    if not isinstance(entries, list):
        return None
    sizes, expected = [], 0
    for entry in entries:
        if not isinstance(entry, dict):
            return None
        offset, size = entry.get("offset"), entry.get("size")
        if type(offset) is not int or type(size) is not int or offset != expected or size < 0:
            return None
        sizes.append(size)
        expected += size
    return sizes if expected == section_size else None
