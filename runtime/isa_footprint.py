"""What an instruction touches: `operand_extent` (the memory range of one operand) and
`footprint` (all its reads and writes), derived from the operands in the ISA table. The one
answer the lowering's ordering helpers and the scheduler's token derivation share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .isa_fields import Buffer
from .isa_instruction import Instruction
from .isa_spec import Operand


def operand_extent(instr: Instruction, op: Operand) -> tuple[Buffer | None, int, int] | None:
    """(buffer or None for DRAM, first element/byte, one past the last) of an operand, or
    None when the operand is disabled. Sizes: rows > 0 and cols > 0 assumed validated."""
    f = instr.fields
    if op.enabled_by is not None and not f[op.enabled_by]:
        return None
    rows, cols = op.rows(f), op.cols(f)
    if rows == 0 or cols == 0:
        return None
    buffer: Buffer | None
    if isinstance(op.buffer, str):
        buffer = Buffer(f[op.buffer])
    else:
        buffer = op.buffer
    stride = f[op.stride] if op.stride is not None else 0
    stride = stride or cols
    start = f[op.addr] + (op.offset(f) if op.offset is not None else 0)
    return buffer, start, start + (rows - 1) * stride + cols


Extent = tuple["Buffer | None", int, int]
"""(buffer, or None for DRAM; first element / byte; one past the last)."""


@dataclass(frozen=True)
class Footprint:
    """What one instruction reads and writes, from its operands in the ISA table. `everything`:
    HOST and HALT, whose effects the table does not spell out (a HOST segment's tensors are
    bound outside the instruction), count as touching all memory."""

    reads: tuple[Extent, ...]
    writes: tuple[Extent, ...]
    everything: bool = False

    def touches(self, buffer: Buffer | None, start: int, end: int) -> bool:
        """Does the instruction read or write `buffer`[start, end)?"""
        return self.everything or any(b is buffer and s < end and start < e
                                      for b, s, e in (*self.reads, *self.writes))

    def conflicts(self, other: Footprint) -> bool:
        """Do the two touch a common region, one of them writing? (Operands only.)"""
        return (_overlap(self.writes, (*other.reads, *other.writes))
                or _overlap(self.reads, other.writes))


def _overlap(a: Sequence[Extent], b: Sequence[Extent]) -> bool:
    return any(x[0] is y[0] and x[1] < y[2] and y[1] < x[2] for x in a for y in b)


def footprint(instr: Instruction) -> Footprint:
    """The one answer to 'what does this instruction touch' (lowering order, scheduling)."""
    reads: list[Extent] = []
    writes: list[Extent] = []
    for operand in instr.spec.operands:
        extent = operand_extent(instr, operand)
        if extent is not None:
            (writes if operand.access == "w" else reads).append(extent)
    return Footprint(tuple(reads), tuple(writes), instr.spec.name in ("host", "halt"))

