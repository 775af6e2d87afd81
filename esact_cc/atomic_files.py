"""Atomic file writes: a temporary file in the target directory, then os.replace.

Every tool writes its outputs through these, so a failure never leaves a half-written file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np


def write_atomically(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))


def save_npy_atomically(path: str | os.PathLike[str], array: np.ndarray) -> None:
    write_atomically(path, lambda f: np.save(f, array, allow_pickle=False))
