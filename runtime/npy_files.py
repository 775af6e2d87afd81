"""Reading user-supplied `.npy` arrays and `.npz` archives, header first.

`np.load` trusts the file: a 100-byte `.npy` whose header claims a 4 TiB shape makes it
allocate 4 TiB (MemoryError, or a traceback), an `.npz` given where one array is expected
returns an archive object, and a deflated member can expand without bound. Here the `.npy`
header (numpy's own parser, at most NPY_HEADER_CAP bytes) is checked first: plain numeric or
bool dtype (no objects, so no pickles; no strings or records), declared size within the
caller's cap and consistent with the file, and only then is memory allocated and exactly the
declared number of bytes read. An `.npz` is an archive of such members, each checked the same
way, read from a bounded copy of the file.
"""

from __future__ import annotations

import io
import math
import os
import stat
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .bounded_read import open_user_file, read_bounded
from .errors import UsageError

NPY_HEADER_CAP = 10_000
"""numpy's own default cap on a .npy header (numpy.lib.format)."""
NUMERIC_KINDS = "biuf"
"""bool, signed and unsigned integers, floats: the dtypes a tensor input can have."""
ZIP_MAGIC = b"PK"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def parse_npy_header(stream: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the `.npy` header at the stream's position, header size
    capped; any dtype. Raises what numpy raises (ValueError, EOFError, SyntaxError, ...): callers
    word the error for their file."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(
            stream, max_header_size=NPY_HEADER_CAP)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(
            stream, max_header_size=NPY_HEADER_CAP)
    else:
        raise ValueError(f"format version {version[0]}.{version[1]} is not supported")
    return tuple(shape), fortran_order, dtype


def read_npy_header(stream: BinaryIO, what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the `.npy` header at the stream's position; refuses
    every dtype but numeric and bool ones. Raises UsageError naming `what`."""
    try:
        header = parse_npy_header(stream)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, SyntaxError) as e:
        raise UsageError(f"cannot read {what}: not a .npy array: {_one_line(e)}") from None
    shape, fortran_order, dtype = header
    if dtype.kind not in NUMERIC_KINDS or dtype.names is not None or dtype.subdtype is not None:
        kind = "Python objects (pickles are refused)" if dtype.hasobject else f"dtype {dtype}"
        raise UsageError(f"cannot read {what}: it holds {kind}, not a numeric array")
    return tuple(shape), fortran_order, dtype


def read_npy_stream(stream: BinaryIO, what: str, cap: int,
                    available: int | None = None) -> np.ndarray:
    """The array of the `.npy` data at the stream's position. `cap` bounds the declared data
    size, checked before allocating; `available` (bytes left in the stream, when known) lets
    a truncated file be refused before allocating too."""
    start = stream.tell()
    shape, fortran_order, dtype = read_npy_header(stream, what)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > cap:
        raise UsageError(f"cannot read {what}: it declares a {list(shape)} {dtype} array of "
                         f"{nbytes} bytes, more than the {cap} bytes allowed")
    data_bytes = None if available is None else available - (stream.tell() - start)
    if data_bytes is not None and data_bytes != nbytes:
        raise UsageError(f"cannot read {what}: it declares {list(shape)} {dtype} ({nbytes} "
                         f"bytes of data) but holds {data_bytes} bytes")
    try:
        array = np.empty(shape, dtype, order="F" if fortran_order else "C")
    except MemoryError:
        raise UsageError(f"cannot read {what}: out of memory for its {nbytes} bytes") from None
    view = memoryview(array.reshape(-1, order="A")).cast("B") if nbytes else memoryview(b"")
    filled = 0
    try:
        while filled < nbytes:
            count = stream.readinto(view[filled:])
            if not count:
                raise UsageError(f"cannot read {what}: truncated after {filled} of its {nbytes} "
                                 f"bytes of data")
            filled += count
        if stream.read(1):
            raise UsageError(f"cannot read {what}: bytes after its {nbytes} bytes of data")
    except (OSError, zipfile.BadZipFile) as e:  # a member's bad CRC shows at its end
        raise UsageError(f"cannot read {what}: {_one_line(e)}") from None
    return array


def _regular_size(handle: BinaryIO) -> int | None:
    info = os.fstat(handle.fileno())
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def read_npy_file(path: str | os.PathLike[str], what: str, cap: int) -> np.ndarray:
    """The one array in the `.npy` file `path` (an `.npz` archive is refused: one array per
    file). `what` says what the file is for, e.g. "--input x"."""
    path = Path(path)
    label = f"{what} '{path}'"
    with open_user_file(path, what) as handle:
        if handle.peek(len(ZIP_MAGIC))[:len(ZIP_MAGIC)] == ZIP_MAGIC:
            raise UsageError(f"cannot read {label}: it is an .npz archive; give one array as a "
                             f".npy file (numpy.save)")
        return read_npy_stream(handle, label, cap, _regular_size(handle))


def read_npz_bytes(data: bytes, what: str, cap: int) -> dict[str, np.ndarray]:
    """Every array of the `.npz` archive `data` by name (member name without `.npy`), at most
    `cap` bytes of arrays together. `what` names the archive in errors."""
    if not data.startswith(ZIP_MAGIC):
        raise UsageError(f"cannot read {what}: not an .npz archive (numpy.savez)")
    arrays: dict[str, np.ndarray] = {}
    budget = cap
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                if info.is_dir() or name == info.filename or name in arrays:
                    raise UsageError(f"cannot read {what}: member {info.filename!a} is not a "
                                     f".npy array with a name of its own")
                with archive.open(info) as member:
                    array = read_npy_stream(member, f"{what} member {info.filename!a}",
                                            budget, info.file_size)
                arrays[name] = array
                budget -= array.nbytes
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as e:
        raise UsageError(f"cannot read {what}: {_one_line(e)}") from None
    return arrays


def read_npz_file(path: str | os.PathLike[str], what: str, cap: int) -> dict[str, np.ndarray]:
    """`read_npz_bytes` of the file `path`, itself at most `cap` bytes (read_bounded)."""
    return read_npz_bytes(read_bounded(path, cap, what), f"{what} '{path}'", cap)
