"""Per-instruction cycles of a program from the ISA table's cost functions, by opcode.

A cost marked column-wise in the ISA table (isa_costs._columnwise: written in operations numpy
broadcasts) is called once per opcode with a Work and fields whose values are int64 columns
over that opcode's instructions; any other cost (e.g. a registered instruction's) is called
once per instruction with its record. The queue, pop and push columns come from the same
pass, so the timing model reads the program once.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np

from .hw_config import HardwareConfig
from .isa import INSTRUCTION_SPECS, Queue
from .work_table import WorkTable

DMA_PORT_QUEUES: tuple[Queue, ...] = (Queue.LOAD, Queue.STORE)  # share the DRAM port

_opcode_name = attrgetter("opcode_name")
_fields = attrgetter("fields")
_pop, _push = itemgetter("pop"), itemgetter("push")


class _WorkColumns:
    """A Work whose counts are the rows `index` of a WorkTable's columns (sliced on use)."""

    def __init__(self, table: WorkTable, index: np.ndarray) -> None:
        self._table, self._index = table, index

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_") or name not in self._table.columns:
            raise AttributeError(name)
        column = self._table.columns[name][self._index]
        setattr(self, name, column)
        return column


class _FieldColumns:
    """Instruction fields as int64 columns over the instructions `index` (built on use)."""

    def __init__(self, fields: list[Any], index: np.ndarray) -> None:
        self._fields, self._index = fields, index
        self._columns: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._columns:
            fields = self._fields
            self._columns[name] = np.fromiter(
                (fields[i][name] for i in self._index.tolist()), np.int64, len(self._index))
        return self._columns[name]


def instruction_costs(
    instructions: Sequence[Any],
    works: Sequence[Any],
    config: HardwareConfig,
    work_table: WorkTable | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(queues, pops, pushes, cycles, DRAM port cycles): int64 columns, one row per
    instruction.

    `instructions` are isa.Instruction values, `works` the functional model's isa.Work
    records (what each instruction actually did: masked instructions are charged for the
    rows and keys their masks kept); `work_table` their columns if the caller has them.
    A DMA instruction holds the DRAM port for its bytes / bandwidth and takes at least
    that long (a cost below the port time would beat the bandwidth).
    """
    n = len(instructions)
    if len(works) != n:
        raise ValueError("instruction_costs: one work record per instruction is required")
    table = work_table if work_table is not None else WorkTable.from_records(works)
    names = list(map(_opcode_name, instructions))
    codes = {name: k for k, name in enumerate(dict.fromkeys(names))}
    code = np.fromiter(map(codes.__getitem__, names), np.int64, n)
    specs = [INSTRUCTION_SPECS[name] for name in codes]
    fields = list(map(_fields, instructions))
    cycles = np.zeros(n, dtype=np.int64)
    for k, spec in enumerate(specs):
        index = np.flatnonzero(code == k)
        if getattr(spec.cost, "columnwise", False):
            cycles[index] = spec.cost(_FieldColumns(fields, index), config,
                                      _WorkColumns(table, index))
        else:
            cycles[index] = [int(spec.cost(fields[i], config, works[i])) for i in index.tolist()]
    queue_of = np.array([int(s.queue) for s in specs] or [0], dtype=np.int64)
    queues = queue_of[code]
    moved = table["dram_read_bytes"] + table["dram_write_bytes"]
    dma = np.isin(queues, [int(q) for q in DMA_PORT_QUEUES]) & (moved > 0)
    port = np.zeros(n, dtype=np.int64)
    port[dma] = np.ceil(moved[dma] / config.dram_bytes_per_cycle)
    cycles[dma] = np.maximum(cycles[dma], port[dma])
    pops = np.fromiter(map(_pop, fields), np.int64, n)
    pushes = np.fromiter(map(_push, fields), np.int64, n)
    return queues, pops, pushes, cycles, port
