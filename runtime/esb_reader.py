"""Reading a well-formed .esb file mapped, not copied: every payload used in place.

`esb.read_esb` reads a binary of hundreds of MB. Read into memory, the file cost a copy of
every byte into fresh pages before the checksum even began (BERT-base at 128 tokens: 0.27 s
CPU to read and SHA-256 its 180 MB, against 0.15 s mapped). Here the file is mapped read-only:
the header, the section table and META give the layout, one checksum (esb_checksum.py: BLAKE3,
0.04-0.06 s) runs over the mapping, and only then is anything but that layout used. The DATA section stays in the
mapping (the data segments are read-only views of it, copied once, into the functional
model's DRAM image, whose `release_mapped_pages` then returns their pages); each host model
is copied out as its own bytes object (what onnxruntime takes). The mapped pages are released
after the checksum (`madvise(MADV_DONTNEED)`: a later read faults them in again from the page
cache), so the mapping adds nothing to the peak resident memory.

Only the layout the writer produces takes this path: a regular file of the declared size,
the current format version, the four sections in order, and a META whose data and host tables
tile their sections. For anything else (or a file that cannot be mapped) `read_pieces`
returns no pieces and the bytes it read, and read_esb reads the rest and lets parse_esb
report what is wrong, so every error is the same either way. The Program is then built and
validated as parse_esb does (esb.program_from_sections), from copies of TEXT and META.

A mapping shows later writes to the file: the writer replaces a binary by renaming a new file
over it (atomic_write), which leaves a mapped one as it was, but a program that rewrites the
file in place while it is being run changes the weights the run reads (as writing it just
before the run would), and one that truncates it makes the run fail with SIGBUS. The checksum
guards against corruption, not against an attacker (who can compute it); what guards
against a crafted binary is the validation, and it runs on copies, never on the mapping.
"""

from __future__ import annotations

import json
import mmap
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from .errors import BinaryFormatError, UsageError
from .esb import FORMAT_VERSION, HEADER, SECTION_ENTRY, SECTION_KINDS
from .esb_checksum import CHECKSUM_BYTES, checksum

Pieces = tuple[bytes, bytes, bytes, memoryview, list[bytes], bytes]
"""config hash, TEXT, META, DATA, the host models, the verified checksum:
esb.program_from_sections' arguments."""


def read_pieces(handle: BinaryIO, head: bytes, total: int, path: Path
                ) -> tuple[Pieces | None, bytes]:
    """The checksummed sections of the binary whose 64-byte header `head` was read from
    `handle` and declares `total` bytes; or (None, `head`) when the file is not a regular
    file of that size, cannot be mapped, or its layout is not the writer's (`handle` is then
    still just past the header)."""
    try:
        status = os.fstat(handle.fileno())
    except OSError as e:
        raise UsageError(f"cannot read binary '{path}': {e.strerror or e}") from None
    _magic, version, count, config_hash, _total, reserved = HEADER.unpack(head)
    if (not stat.S_ISREG(status.st_mode) or status.st_size != total
            or version != FORMAT_VERSION or count != len(SECTION_KINDS) or reserved):
        return None, head
    try:
        region = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # a file system without mapping: read it
        return None, head
    if region.size() < total:  # the file shrank since it was measured
        raise BinaryFormatError(f"'{path}' is shorter than its header says")
    if region.size() > total:  # it grew
        raise BinaryFormatError(f"header says {total} bytes, file has more")
    whole = memoryview(region)
    table_end = HEADER.size + SECTION_ENTRY.size * count
    if total < table_end + CHECKSUM_BYTES:
        return None, head
    sizes = _section_sizes(bytes(whole[HEADER.size:table_end]), total)
    if sizes is None:
        return None, head
    offsets = [table_end + sum(sizes[:i]) for i in range(len(sizes) + 1)]
    text, meta = bytes(whole[offsets[0]:offsets[1]]), bytes(whole[offsets[1]:offsets[2]])
    host_sizes = _host_sizes(meta, sizes[2], sizes[3])
    if host_sizes is None:
        return None, head
    body_end = total - CHECKSUM_BYTES
    trailer = bytes(whole[body_end:])
    if checksum([whole[:body_end]]) != trailer:
        raise BinaryFormatError("checksum mismatch (file is corrupt or truncated)")
    release_mapped_pages(region)
    hosts, at = [], offsets[3]
    for size in host_sizes:
        hosts.append(bytes(whole[at:at + size]))
        at += size
    release_mapped_pages(region)
    return (config_hash, text, meta, whole[offsets[2]:offsets[3]], hosts, trailer), b""


def release_mapped_pages(region: object) -> None:
    """Drop a read-only file mapping's pages from this process's resident memory (they are
    faulted in again from the page cache if read later); anything else is left alone."""
    if isinstance(region, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        region.madvise(mmap.MADV_DONTNEED)


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
