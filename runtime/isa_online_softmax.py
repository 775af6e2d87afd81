"""SFU instructions of key-blocked softmax: SOFTMAX_STATS folds one key block of scores into a
per-row running max and sum, SOFTMAX_NORM turns a key block of scores into probabilities with
the finished state. Attention whose key rows do not fit on chip runs each query tile over key
blocks twice with them (`passes/lower_attention.py`); both instructions and SOFTMAX compute
the chunked online softmax of `runtime/online_softmax.py`, so key blocks whose first key is a
multiple of `online_softmax.CHUNK` give the whole-row SOFTMAX's probabilities bit for bit.

The state of a row is (max, sum) in float64, spilled to VBUF as `online_softmax.STATE_WORDS`
words (the raw bytes of the two values), written by STATS and read by STATS (with `accumulate`)
and NORM; nothing else reads it. `softmax_logits` is also SOFTMAX's operand reading
(`runtime/functional.py`).

Cost: SOFTMAX's four lane passes split as STATS three (max, exp, sum) and NORM one (exp(z -
max) times 1 / sum, fused in the lane): a blocked row costs the SFU what a whole one does; the
recomputed Q K^T and DEQUANT of the second sweep are the blocked form's extra work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from . import online_softmax
from .isa_costs import sfu_cost
from .isa_extension import addr, dim, field_value, flag, register_once, stride
from .isa_fields import FLOAT_BITS, Buffer, FieldKind, FieldSpec, Queue, Unit
from .isa_spec import Operand
from .isa_table import define_instruction

STATS_OPCODE = 0x50
NORM_OPCODE = 0x51
STATS_PASSES = 3  # max, exp, sum
NORM_PASSES = 1  # exp(z - max) * (1 / sum), one fused lane pass


def _mat(address: str, rows: str, cols: Any, access: str, row_stride: str | None = None,
         buffer: Buffer = Buffer.VBUF) -> Operand:
    return Operand(address, buffer, field_value(rows),
                   cols if callable(cols) else field_value(cols), access, row_stride)


_LOGIT_FIELDS = (
    addr("src_addr", "VBUF fp32: rows x cols scores of keys [key0, key0 + cols)"),
    dim("rows"), dim("cols"), stride("src_stride"),
    FieldSpec("scale", FLOAT_BITS, FieldKind.FLOAT32, doc="logits multiplier"),
    flag("has_add_mask"), addr("add_mask_addr", "VBUF: additive row vector of cols"),
    flag("causal"),
    FieldSpec("causal_offset", 16, FieldKind.SINT,
              doc="causal: column c is masked when c > r + causal_offset"),
)
_STATE = addr("state_addr", f"VBUF: rows x {online_softmax.STATE_WORDS} words, (max, sum) "
                            "float64 per row")


def _state_cols(f: Mapping[str, int]) -> int:
    return online_softmax.STATE_WORDS


_LOGIT_OPERANDS = (
    _mat("src_addr", "rows", "cols", "r", "src_stride"),
    Operand("add_mask_addr", Buffer.VBUF, lambda f: 1, field_value("cols"), "r",
            enabled_by="has_add_mask"),
)

SOFTMAX_STATS = define_instruction(
    "softmax_stats", STATS_OPCODE, Queue.SFU, Unit.SFU,
    (*_LOGIT_FIELDS, _STATE,
     flag("accumulate", "fold into the state there (else start from (-inf, 0))")),
    (*_LOGIT_OPERANDS,
     Operand("state_addr", Buffer.VBUF, field_value("rows"), _state_cols, "r",
             enabled_by="accumulate"),
     _mat("state_addr", "rows", _state_cols, "w")),
    sfu_cost(STATS_PASSES),
    """z = src * scale in float64 (with the mask, float32(z + add_mask[c]): SOFTMAX's logits),
    columns the causal rule excludes invalid;
    fold the block into each row's running (max, sum) in chunks of 64 keys (the first chunk
    starts the block, which starts at a key multiple of 64): max' = max(max, chunk max), sum'
    = sum * exp(max - max') + pairwise-tree sum of exp(z - max'); it starts from
    (-inf, 0) unless `accumulate`.""")

SOFTMAX_NORM = define_instruction(
    "softmax_norm", NORM_OPCODE, Queue.SFU, Unit.SFU,
    (*_LOGIT_FIELDS, addr("dst_addr", "VBUF fp32"), stride("dst_stride"), _STATE),
    (*_LOGIT_OPERANDS, _mat("dst_addr", "rows", "cols", "w", "dst_stride"),
     _mat("state_addr", "rows", _state_cols, "r")),
    sfu_cost(NORM_PASSES),
    """dst = exp(z - max) / sum with the row's finished state, rounded to float32; invalid
    positions 0, a row whose max is not finite all 0 (SOFTMAX's result for the block's
    columns).""")


def softmax_logits(machine: Any, f: Mapping[str, int], rows: Any = slice(None),
                   count: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(float64 logits, valid positions or None) of a SOFTMAX-family instruction, over its
    `rows` (index array or slice; `count` of them, default all: a row mask's kept rows)."""
    add_row = machine.vector("add_mask_addr") if f["has_add_mask"] else None
    z = online_softmax.logits(machine.view("src_addr", rows=count)[rows],
                              machine.float_field("scale"), add_row)
    valid = None
    if f["causal"]:
        valid = (np.arange(f["cols"])[None, :]
                 <= np.arange(f["rows"])[rows][:, None] + f["causal_offset"])
    if f.get("has_elem_mask"):
        mask = machine.view("elem_mask_addr", rows=count)[rows] != 0
        valid = mask if valid is None else valid & mask
    return z, valid


def _run_stats(machine: Any, f: Mapping[str, int]) -> None:
    z, valid = softmax_logits(machine, f)
    start = (online_softmax.unpack_state(machine.view("state_addr", "r")) if f["accumulate"]
             else online_softmax.initial_state(f["rows"]))
    machine.view("state_addr", "w")[...] = online_softmax.pack_state(
        *online_softmax.fold(z, valid, *start))
    machine.work.sfu_elements = f["rows"] * f["cols"]


def _run_norm(machine: Any, f: Mapping[str, int]) -> None:
    z, valid = softmax_logits(machine, f)
    m, s = online_softmax.unpack_state(machine.view("state_addr"))
    machine.view("dst_addr")[...] = online_softmax.normalize(z, valid, m, s)
    machine.work.sfu_elements = f["rows"] * f["cols"]


def register() -> None:
    """Add SOFTMAX_STATS and SOFTMAX_NORM to the table (once; `runtime/isa.py` calls this)."""
    register_once(((SOFTMAX_STATS, _run_stats), (SOFTMAX_NORM, _run_norm)))
