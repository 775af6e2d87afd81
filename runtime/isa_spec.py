"""The shape of one ISA table row: `InstructionSpec` (opcode, queue, unit, fields, memory
operands, semantics, cost) and `Operand`, a memory region an instruction reads or writes as a
function of its fields (bounds checks, the functional model's views, SRAM traffic, footprints).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from .isa_fields import OPCODE_BITS, Buffer, FieldSpec, Queue, Unit

if TYPE_CHECKING:
    from .isa_costs import CostFn


@dataclass(frozen=True)
class Operand:
    """A memory region an instruction reads or writes, as a function of its fields.

    `buffer` is a Buffer, the name of an ENUM field holding one, or None for DRAM (then sizes
    are in bytes). `rows`/`cols` are callables of the field dict; `stride` names a stride
    field (0 = packed) or is None (packed). `enabled_by` names a flag field that must be 1
    for the operand to exist. `elem_bytes` (DRAM only) gives the bytes per element moved.
    `offset` (a callable of the fields, default none) is added to the address field: the
    operand is a part of the region the address names (e.g. one row chunk of a reuse map).
    """

    addr: str
    buffer: Buffer | str | None
    rows: Callable[[Mapping[str, int]], int]
    cols: Callable[[Mapping[str, int]], int]
    access: str  # "r" or "w"
    stride: str | None = None
    enabled_by: str | None = None
    offset: Callable[[Mapping[str, int]], int] | None = None


@dataclass(frozen=True)
class InstructionSpec:
    name: str
    opcode: int
    queue: Queue
    unit: Unit
    fields: tuple[FieldSpec, ...]  # includes the common pop/push fields first
    operands: tuple[Operand, ...]
    semantics: str
    cost: CostFn

    def field(self, name: str) -> FieldSpec:
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @cached_property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @cached_property
    def field_name_set(self) -> frozenset[str]:
        return frozenset(self.field_names)

    @cached_property
    def used_bits(self) -> int:
        """Bits of the encoding this instruction uses (the rest must be zero)."""
        return OPCODE_BITS + sum(f.bits for f in self.fields)

    @cached_property
    def field_layout(self) -> tuple[tuple[str, int, int, int], ...]:
        """(name, shift, mask, sign bit or 0) of each field in the encoding, opcode bits
        first: what decoding a word takes per field (encoding.py)."""
        layout, shift = [], OPCODE_BITS
        for f in self.fields:
            layout.append((f.name, shift, (1 << f.bits) - 1, 1 << (f.bits - 1) if f.signed else 0))
            shift += f.bits
        return tuple(layout)

