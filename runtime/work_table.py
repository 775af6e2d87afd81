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
from itertools import chain
from operator import attrgetter, methodcaller
from typing import Any

import numpy as np

from .isa import SFU_PASSES, Buffer

SCALAR_FIELDS: tuple[str, ...] = (
    "macs_dense",
    "macs_executed",
    "shift_adds",
    "sfu_elements",
    "compare_ops",
    "dram_read_bytes",
    "dram_write_bytes",
    # mask statistics: rows a row mask considered / kept, element-mask positions
    # considered / selected (attention, top-k)
    "rows_total",
    "rows_executed",
    "cols_executed",  # GEMM columns a column mask keeps (the MAC array's tile count)
    "mask_total",
    "mask_kept",
)
# On-chip buffers by their short name (isa.Buffer member names, lower case).
BUFFERS: tuple[str, ...] = tuple(b.name.lower() for b in Buffer)


def _as_mapping(record: Any) -> Mapping[str, Any]:
    if record is None:
        return {}
    if isinstance(record, Mapping):
        return record
    return {name: getattr(record, name, 0) for name in
            (*SCALAR_FIELDS, "sram_read_bytes", "sram_write_bytes")}


def _buffer_key(key: Any) -> str:
    """'WBUF', Buffer.WBUF, 'wbuf' -> 'wbuf'."""
    if type(key) is str:
        return key.lower()
    return str(getattr(key, "name", key)).lower()


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
        n = len(records)
        if any(r is None or isinstance(r, Mapping) for r in records[:1]) or any(
            r is None for r in records
        ):
            records = [_as_mapping(r) for r in records]
        is_map = bool(records) and isinstance(records[0], Mapping)
        columns: dict[str, np.ndarray] = {}
        for name in SCALAR_FIELDS:
            if is_map:
                values = (r.get(name, 0) or 0 for r in records)
            else:  # isa.Work records: attribute fetches at C speed (fast path)
                values = map(attrgetter(name), records)
            columns[name] = np.fromiter(values, np.int64, n)
        for direction in ("read", "write"):
            field_name = f"sram_{direction}_bytes"
            per_record = (
                [r.get(field_name) or {} for r in records] if is_map
                else [d or {} for d in map(attrgetter(field_name), records)]
            )
            columns.update(_buffer_columns(per_record, f"sram_{direction}_", n))
        return cls(n, columns)


_values = methodcaller("values")


def _buffer_columns(per_record: list[Mapping[Any, int]], prefix: str, n: int
                    ) -> dict[str, np.ndarray]:
    """One column per buffer from per-record {buffer: bytes} dicts, flattened at C speed
    (chain over keys and values) rather than one Python step per entry."""
    keys = list(chain.from_iterable(per_record))
    values = np.fromiter(chain.from_iterable(map(_values, per_record)), np.int64,
                         len(keys))
    record = np.repeat(np.arange(n), list(map(len, per_record)))
    position = {buf: k for k, buf in enumerate(BUFFERS)}
    buffer_of = {key: position.get(_buffer_key(key), -1) for key in set(keys)}
    buffer = np.fromiter(map(buffer_of.__getitem__, keys), np.int64, len(keys))
    columns = {}
    for k, buf in enumerate(BUFFERS):
        column = np.zeros(n, dtype=np.int64)
        hit = buffer == k
        column[record[hit]] = values[hit]
        columns[prefix + buf] = column
    return columns


def sfu_passes_column(opcodes: Sequence[str]) -> np.ndarray:
    """Lane passes per SFU element of each instruction (isa.SFU_PASSES, default 1): the
    SFU's work is elements x passes, for its roofline bound and its energy."""
    passes = dict(SFU_PASSES)
    return np.asarray([passes.get(op, 1) for op in opcodes], dtype=np.int64)
