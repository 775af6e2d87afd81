"""The `--input` array cap and `<output>.npy` names, shared by esact-cc and esact-run
(the `--input` bindings themselves: input_bindings.py)."""

from __future__ import annotations

import re

from ..isa import DRAM_ADDR_BITS

INPUT_ARRAY_CAP = 1 << DRAM_ADDR_BITS
"""4 GiB: an input lives in DRAM, whose address space is this large."""


def output_file_name(output_name: str) -> str:
    """`<output>.npy`, with characters that cannot be in a file name replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", output_name).lstrip(".") + ".npy"
