"""`--input NAME=FILE.npy` arguments and `<output>.npy` names, shared by esact-cc and esact-run."""

from __future__ import annotations

import re

import numpy as np

from ..errors import UsageError


def load_input_files(specs: list[str]) -> dict[str, np.ndarray]:
    """Each `NAME=FILE.npy` spec loaded (no pickles); one-line UsageError on a bad one."""
    inputs: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise UsageError(f"bad --input '{spec}': expected NAME=FILE.npy")
        if name in inputs:
            raise UsageError(f"--input {name} given twice")
        try:
            inputs[name] = np.load(file, allow_pickle=False)
        except FileNotFoundError:
            raise UsageError(f"cannot read --input {name}: file '{file}' not found") from None
        except (OSError, ValueError, EOFError) as exc:
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise UsageError(f"cannot read --input {name}: '{file}' is not a .npy file: {detail}") from None
    return inputs


def output_file_name(output_name: str) -> str:
    """`<output>.npy`, with characters that cannot be in a file name replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", output_name).lstrip(".") + ".npy"
