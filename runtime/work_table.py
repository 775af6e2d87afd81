"""Column arrays of the functional model's per-instruction work records.

The functional model (runtime/functional.py) returns one work record per instruction
(MACs dense and executed, shift-adds, SFU elements, compares, DRAM and SRAM bytes).
The timing, energy and report code wants them as numpy columns so that totals, per-
component sums and energies are vectorised; this module is the one adapter between
the two shapes, so a renamed record field is fixed here only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SCALAR_FIELDS: tuple[str, ...] = (
    "macs_dense",
    "macs_executed",
    "shift_adds",
    "sfu_elements",
    "compare_ops",
    "dram_read_bytes",
    "dram_write_bytes",
)
# On-chip buffers by their short name; energy.py maps each to its config size.
BUFFERS: tuple[str, ...] = ("wbuf", "abuf", "acc", "vbuf", "mbuf")


def _get(record: Any, name: str, default: Any = 0) -> Any:
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


def _buffer_key(key: Any) -> str:
    """'WBUF', Buffer.WBUF, 'wbuf' -> 'wbuf'."""
    name = getattr(key, "name", key)
    return str(name).lower()


@dataclass
class WorkTable:
    """One int64 column per scalar field and per (buffer, read/write)."""

    n: int
    columns: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def total(self, name: str) -> int:
        return int(self.columns[name].sum())

    @classmethod
    def zeros(cls, n: int) -> WorkTable:
        names = list(SCALAR_FIELDS) + [f"sram_{d}_{b}" for b in BUFFERS for d in ("read", "write")]
        return cls(n, {name: np.zeros(n, dtype=np.int64) for name in names})

    @classmethod
    def from_records(cls, records: Sequence[Any]) -> WorkTable:
        table = cls.zeros(len(records))
        cols = table.columns
        for i, rec in enumerate(records):
            if rec is None:
                continue
            for name in SCALAR_FIELDS:
                value = _get(rec, name)
                if value:
                    cols[name][i] = int(value)
            for direction in ("read", "write"):
                per_buffer = _get(rec, f"sram_{direction}_bytes", None)
                if not per_buffer:
                    continue
                for key, value in dict(per_buffer).items():
                    col = f"sram_{direction}_{_buffer_key(key)}"
                    if col in cols and value:
                        cols[col][i] = int(value)
        return table


def sfu_passes_column(opcodes: Sequence[str]) -> np.ndarray:
    """Lane passes per SFU element of each instruction (isa.SFU_PASSES, default 1): the
    SFU's work is elements x passes, for its roofline bound and its energy."""
    from .isa import SFU_PASSES

    return np.asarray([SFU_PASSES.get(op, 1) for op in opcodes], dtype=np.int64)
