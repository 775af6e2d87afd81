"""What a module adding instructions to the ISA table builds its rows from (runtime/isa_sanger.py,
isa_spatten.py, isa_modern_blocks.py, a scheme plugin's): field and operand shorthands, the
additive-mask fields a prediction reads, `register_once`, and `register_installed`: the
instruction modules installed packages declare (entry points in `ENTRY_POINT_GROUP`), which the
decoder loads on meeting an opcode the table lacks, so runtime-only tools (esact-run,
esact-objdump) run a plugin scheme's binary with no runtime file edited.

A row is `isa_table.define_instruction(...)`; its kernel a function of (machine, fields) that
computes through the functional model's views and records its `Work`; its cost an
`isa_costs.CostFn`. Encoder, decoder, assembler, loader checks, footprint and the `esact`
dialect op follow from the row.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping

from .isa_fields import DIM_BITS, SRAM_ADDR_BITS, STRIDE_BITS, Buffer, FieldKind, FieldSpec
from .isa_spec import InstructionSpec, Operand
from .isa_table import INSTRUCTION_SPECS, InstructionKernel, register_instruction

PACKED_STRIDE_DOC = "row stride in elements, 0 = packed"
ENTRY_POINT_GROUP = "esact_cc.instructions"
"""Installed instruction modules: `name = "package.module"`, the module having `register()`."""


def addr(name: str, doc: str) -> FieldSpec:
    """An SRAM address field."""
    return FieldSpec(name, SRAM_ADDR_BITS, doc=doc)


def dim(name: str, doc: str = "") -> FieldSpec:
    """A dimension field (>= 1)."""
    return FieldSpec(name, DIM_BITS, min_value=1, doc=doc)


def flag(name: str, doc: str = "") -> FieldSpec:
    return FieldSpec(name, 1, FieldKind.FLAG, doc=doc)


def stride(name: str, doc: str = PACKED_STRIDE_DOC) -> FieldSpec:
    return FieldSpec(name, STRIDE_BITS, doc=doc)


def field_value(name: str) -> Callable[[Mapping[str, int]], int]:
    """An operand extent read from a field: `field_value("lq")` -> f["lq"]."""
    return lambda f: f[name]


def one(f: Mapping[str, int]) -> int:
    """The extent of a single row."""
    return 1


def vector(address: str, buffer: Buffer, cols: Callable[[Mapping[str, int]], int], access: str,
           **kw) -> Operand:
    """A one-row operand."""
    return Operand(address, buffer, one, cols, access, **kw)


def additive_mask_fields(rows: str, cols: str) -> tuple[FieldSpec, ...]:
    """The attention's additive mask and causality, as a prediction reads them (in this order:
    has_add_mask, add_mask_addr, add_mask_rows, causal)."""
    return (flag("has_add_mask"),
            addr("add_mask_addr", f"VBUF: additive mask, one row of {cols} (or {rows} x {cols})"),
            flag("add_mask_rows", f"the additive mask is a {rows} x {cols} block, not one row"),
            flag("causal"))


def additive_mask_operand(rows: str, cols: str) -> Operand:
    """The VBUF operand of `additive_mask_fields`: one row, or `rows` rows with add_mask_rows."""
    return Operand("add_mask_addr", Buffer.VBUF, lambda f: f[rows] if f["add_mask_rows"] else 1,
                   field_value(cols), "r", enabled_by="has_add_mask")


def register_once(rows: Iterable[tuple[InstructionSpec, InstructionKernel]]) -> None:
    """Add each (spec, kernel) to the ISA table unless it is there already (runtime/isa.py
    registers each module once; a plugin's `register()` may be called again)."""
    for spec, kernel in rows:
        if spec.name not in INSTRUCTION_SPECS:
            register_instruction(spec, kernel)


def register_installed() -> bool:
    """Register the rows of every installed instruction module; whether the table grew."""
    from importlib.metadata import entry_points  # here: a run decoding known opcodes needs none

    before = len(INSTRUCTION_SPECS)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        register = getattr(importlib.import_module(entry.value), "register", None)
        if not callable(register):
            raise ImportError(f"entry point '{entry.name}' = '{entry.value}' "
                              f"({ENTRY_POINT_GROUP}) has no register()")
        register()
    return len(INSTRUCTION_SPECS) > before
