"""The functional model's DRAM image: zeroed anonymous memory without transparent huge pages,
and the tensors read from and written into it.

A binary's data segments (weights, scales) sit among its activation regions across the whole
DRAM address space. With transparent huge pages on (`always`, as on this project's machines),
the first write into each 2 MiB of a large zeroed allocation faults in the whole huge page:
BERT-base at 512 tokens wrote its 81 MiB of data segments into 126 huge pages, 252 MiB of
resident memory before any activation (esact-run's peak RSS 1.7x the model instead of 1.3x).
The image is therefore mapped privately and marked MADV_NOHUGEPAGE: only the 4 KiB pages the
program touches are resident. Same zeroed bytes, same addresses; memory only.
"""

from __future__ import annotations

import math
import mmap

import numpy as np

from .errors import ProgramError


def allocate_dram_image(nbytes: int) -> np.ndarray:
    """A zeroed, writable uint8 array of `nbytes`, resident only where written (or one line
    naming what did not fit: the binary decides the size)."""
    if nbytes == 0:
        return np.zeros(0, np.uint8)
    try:
        region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, OverflowError, ValueError) as exc:
        raise ProgramError(f"out of memory allocating the DRAM image: {nbytes} bytes "
                           f"({nbytes / (1 << 30):.2f} GiB): {exc}") from None
    if hasattr(mmap, "MADV_NOHUGEPAGE"):  # Linux; elsewhere the default pages
        region.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(region, np.uint8)


def write_tensor(dram: np.ndarray, address: int, array: np.ndarray) -> None:
    """Store `array`'s bytes at `address`."""
    raw = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
    dram[address:address + raw.size] = raw


def read_tensor(dram: np.ndarray, address: int, shape: tuple[int, ...], dtype: str
                ) -> np.ndarray:
    """A copy of the little-endian `dtype` tensor of `shape` at `address`."""
    dt = np.dtype(dtype).newbyteorder("<")
    nbytes = math.prod(shape) * dt.itemsize
    return dram[address:address + nbytes].copy().view(dt).reshape(shape)
