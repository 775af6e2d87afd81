"""Opening a weight store `.npz` that came from outside, with its size checked first.

A weight store named by an IR file is untrusted input: a 1.6 MB deflated archive can expand
to 1.6 GB, a member can claim any shape, and a member can be something other than an array.
`open_weight_store_archive` reads only the zip directory and each member's `.npy` header, and
refuses the archive before any tensor is read when:
- a member is not a `.npy` array (another file, a duplicate name, an object/pickle dtype, a
  header whose shape and dtype disagree with the member's size);
- the tensors together exceed `MAX_WEIGHT_STORE_BYTES`;
- deflated members expand more than `MAX_EXPANSION` times in total (stores this project
  writes are stored uncompressed; `np.savez_compressed` on real weights gives about 1.1x).
Corrupt member data (a bad CRC) is reported when it is read: here for members small enough to
be read whole with their header, else when the tensor is first used (weight_store.py).
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
from pathlib import Path


from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.npy_files import parse_npy_header

MAX_WEIGHT_STORE_BYTES = 4 << 30
"""Cap on a weight store's tensors together (GPT-2 small's fp32 weights are 0.5 GB)."""
MAX_EXPANSION = 64
"""Cap on how much the deflated members of a store may expand, in total."""
_EXPANSION_SLACK_BYTES = 1 << 20  # tiny archives of zeros are harmless
_NPY_SUFFIX = ".npy"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _member_tensor_bytes(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> int:
    """The tensor size a member's `.npy` header declares, checked against the member size."""
    try:
        with zf.open(info) as member:
            shape, _, dtype = parse_npy_header(member)
            header_bytes = member.tell()
    except zipfile.BadZipFile as e:  # a small member is read whole, CRC check included
        raise CompileError(f"{where}: member '{info.filename}' is corrupt: {_one_line(e)}") \
            from None
    except (ValueError, EOFError, OSError, NotImplementedError, SyntaxError) as e:
        raise CompileError(f"{where}: member '{info.filename}' is not a .npy array: "
                           f"{_one_line(e)}") from None
    if dtype.hasobject:
        raise CompileError(f"{where}: member '{info.filename}' holds Python objects "
                           "(pickles are refused)")
    tensor_bytes = math.prod(shape) * dtype.itemsize
    if header_bytes + tensor_bytes != info.file_size:
        raise CompileError(f"{where}: member '{info.filename}' declares {list(shape)} {dtype} "
                           f"({tensor_bytes} bytes) but holds {info.file_size - header_bytes}")
    return tensor_bytes


def check_weight_store_archive(path: Path) -> None:
    """Raise a one-line CompileError unless `path` is a weight store within the caps above."""
    where = f"weight store '{path}'"
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise CompileError(f"cannot read {where}: {e.strerror or _one_line(e)}") from None
    if not stat.S_ISREG(mode):
        raise CompileError(f"{where} is not a regular file")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [info.filename for info in infos]
            if len(set(names)) != len(names):
                raise CompileError(f"{where} has duplicate members")
            total = expanded = deflated = 0
            for info in infos:
                if not info.filename.endswith(_NPY_SUFFIX) or info.is_dir():
                    raise CompileError(f"{where}: member '{info.filename}' is not a .npy array")
                total += info.file_size
                if info.compress_type != zipfile.ZIP_STORED:
                    expanded += info.file_size
                    deflated += info.compress_size
            if total > MAX_WEIGHT_STORE_BYTES:
                raise CompileError(f"{where} holds {total} bytes of tensors, more than the "
                                   f"{MAX_WEIGHT_STORE_BYTES} bytes a weight store may hold")
            if expanded > MAX_EXPANSION * deflated + _EXPANSION_SLACK_BYTES:
                raise CompileError(f"{where}: compressed members expand from {deflated} to "
                                   f"{expanded} bytes, more than {MAX_EXPANSION}x (a zip bomb?)")
            for info in infos:
                _member_tensor_bytes(zf, info, where)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise CompileError(f"cannot read {where}: {_one_line(e)}") from None
