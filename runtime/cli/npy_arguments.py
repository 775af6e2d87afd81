"""`--input NAME=FILE.npy` arguments and `<output>.npy` names, shared by esact-cc and esact-run."""

from __future__ import annotations

import re

import numpy as np

from ..errors import UsageError
from ..isa import DRAM_ADDR_BITS
from ..npy_files import read_npy_file

INPUT_ARRAY_CAP = 1 << DRAM_ADDR_BITS
"""4 GiB: an input lives in DRAM, whose address space is this large."""


def load_input_files(specs: list[str]) -> dict[str, np.ndarray]:
    """Each `NAME=FILE.npy` spec read by npy_files.read_npy_file (header checked before any
    allocation, numeric dtypes only, at most INPUT_ARRAY_CAP bytes; an `.npz` is refused, not
    searched for NAME: one array per file); one-line UsageError on a bad one."""
    inputs: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise UsageError(f"bad --input '{spec}': expected NAME=FILE.npy")
        if name in inputs:
            raise UsageError(f"--input {name} given twice")
        inputs[name] = read_npy_file(file, f"--input {name}", INPUT_ARRAY_CAP)
    return inputs


def output_file_name(output_name: str) -> str:
    """`<output>.npy`, with characters that cannot be in a file name replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", output_name).lstrip(".") + ".npy"
