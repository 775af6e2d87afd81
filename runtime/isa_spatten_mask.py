"""SPATTEN_MASK: one head's SpAtten element mask rows, expanded on chip from the keep vectors,
registered with `isa_table.register_instruction` by `register()` (runtime/isa.py calls it).

At long sequences the [H, L, L] element mask SPATTEN_TOPK writes does not fit MBUF; SPATTEN_TOPK
then writes only the token and head keep vectors (its `no_mask` flag), and the masked attention
expands the rows of each head and query tile it is about to read with SPATTEN_MASK
(passes/lower_spatten.py, passes/lower_attention.py `SpaRows`): rows [first_row, first_row +
rows) of head `head` of spatten_kernels.element_mask(tokens, heads, length), the same bytes the
whole mask holds there. Cost (our model): one compare per mask element on the TOPK lanes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from . import spatten_kernels
from .isa_costs import topk_cost
from .isa_fields import DIM_BITS, SRAM_ADDR_BITS, Buffer, FieldSpec, Queue, Unit
from .isa_spec import Operand
from .isa_table import INSTRUCTION_SPECS, define_instruction, register_instruction

MASK_OPCODE = 0x3A
HEAD_BITS = 8


def _f(name: str) -> Any:
    return lambda f: f[name]


def _run_mask(machine: Any, f: Mapping[str, int]) -> None:
    tokens = machine.vector("tokens_addr") != 0
    heads = machine.vector("heads_addr") != 0
    if f["head"] >= f["heads"] or f["first_row"] + f["rows"] > f["length"]:
        raise machine.fail(f"head {f['head']} / rows [{f['first_row']}, "
                           f"{f['first_row'] + f['rows']}) outside {f['heads']} heads x "
                           f"{f['length']} rows")
    rows = slice(f["first_row"], f["first_row"] + f["rows"])
    mask = spatten_kernels.element_mask(tokens, heads, f["length"])[f["head"], rows]
    machine.view("mask_addr")[...] = mask.astype(np.uint8)
    machine.work.compare_ops = f["rows"] * f["length"]


SPATTEN_MASK = define_instruction(
    "spatten_mask", MASK_OPCODE, Queue.PREDICT, Unit.TOPK, (
        FieldSpec("tokens_addr", SRAM_ADDR_BITS, doc="MBUF: token keep vector, length bytes"),
        FieldSpec("heads_addr", SRAM_ADDR_BITS, doc="MBUF: head keep vector, heads bytes"),
        FieldSpec("mask_addr", SRAM_ADDR_BITS, doc="MBUF: rows x length element mask out"),
        FieldSpec("length", DIM_BITS, min_value=1),
        FieldSpec("heads", HEAD_BITS, min_value=1),
        FieldSpec("head", HEAD_BITS, doc="the head whose mask rows are written"),
        FieldSpec("first_row", DIM_BITS, doc="first query row written"),
        FieldSpec("rows", DIM_BITS, min_value=1),
    ), (
        Operand("tokens_addr", Buffer.MBUF, lambda f: 1, _f("length"), "r"),
        Operand("heads_addr", Buffer.MBUF, lambda f: 1, _f("heads"), "r"),
        Operand("mask_addr", Buffer.MBUF, _f("rows"), _f("length"), "w"),
    ), topk_cost,
    """mask[r, c] = heads[head] & tokens[first_row + r] & tokens[c] for r < rows, c < length:
    rows [first_row, first_row + rows) of head `head` of spatten_kernels.element_mask.""")


def register() -> None:
    """Add SPATTEN_MASK to the ISA table (once; runtime/isa.py calls this)."""
    if SPATTEN_MASK.name not in INSTRUCTION_SPECS:
        register_instruction(SPATTEN_MASK, _run_mask)
