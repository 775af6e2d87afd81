"""GATHER_ADD: the SFU instruction that adds DeBERTa's disentangled position scores to a tile
of attention scores (docs/design.md section 3.3), with its functional kernel and cost.

A disentangled attention's content-to-position term of query i and key j is
(Q_h PK_h^T)[i, c2p_index[i, j]]: a GEMM of the query rows against a constant position table
(on the MAC array: ATTN_QK with the table as K), then a gather of one column per score by a
constant index table. The position-to-content term gathers from (K_h PQ_h^T) by key row:
[j, p2c_index[i, j]]. GATHER_ADD does the gather and the add in one SFU pass over the tile:

    transposed = 0:  dst[r, c] = float32(dst[r, c] + src[r, idx[r, c]])   (src: rows x src_cols)
    transposed = 1:  dst[r, c] = float32(dst[r, c] + src[c, idx[r, c]])   (src: cols x src_cols)

idx is int16 little endian in MBUF (two bytes per element, like a reuse map: a position table
has up to 512 rows in DeBERTa-v3). The sum is computed in float64 and rounded once, as every
SFU instruction; `gather_add` below is also the reference interpreter's definition, so the
binary equals the INT8 interpreter bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .isa_costs import sfu_cost
from .isa_extension import addr, dim, field_value, flag, register_once, stride
from .isa_fields import Buffer, Queue, Unit
from .isa_spec import Operand
from .isa_table import define_instruction

GATHER_ADD_OPCODE = 0x2F
INDEX_BYTES = 2
"""Bytes per index element in MBUF (int16, little endian)."""


def gather_add(dst: np.ndarray, src: np.ndarray, index: np.ndarray, transposed: bool) -> np.ndarray:
    """float32(dst + gathered) with gathered[r, c] = src[r or c, index[r, c]] (module doc);
    dst and index [rows, cols], src [rows or cols, src_cols]. Indices must lie in
    [0, src_cols) (the caller checks)."""
    rows, cols = index.shape
    picked_rows = np.arange(cols)[None, :] if transposed else np.arange(rows)[:, None]
    gathered = np.asarray(src, np.float32)[picked_rows, index]
    return (np.asarray(dst, np.float32).astype(np.float64) + gathered).astype(np.float32)


def _src_rows(f: Mapping[str, int]) -> int:
    return f["cols"] if f["transposed"] else f["rows"]


GATHER_ADD = define_instruction(
    "gather_add", GATHER_ADD_OPCODE, Queue.SFU, Unit.SFU,
    (addr("dst_addr", "VBUF fp32: rows x cols, read and written"),
     addr("src_addr", "VBUF fp32: (transposed ? cols : rows) x src_cols, packed"),
     addr("idx_addr", "MBUF: rows x cols int16 little endian, packed"),
     dim("rows"), dim("cols"), dim("src_cols", "columns of src (the positions)"),
     stride("dst_stride"),
     flag("transposed", "gather from src row c (the key) instead of row r (the query)")),
    (Operand("dst_addr", Buffer.VBUF, field_value("rows"), field_value("cols"), "r", "dst_stride"),
     Operand("src_addr", Buffer.VBUF, _src_rows, field_value("src_cols"), "r"),
     Operand("idx_addr", Buffer.MBUF, field_value("rows"),
             lambda f: INDEX_BYTES * f["cols"], "r"),
     Operand("dst_addr", Buffer.VBUF, field_value("rows"), field_value("cols"), "w", "dst_stride")),
    sfu_cost(1),
    """dst[r, c] = float32(dst[r, c] + src[s, idx[r, c]]) in float64, s = c if transposed
    else r; idx int16 in MBUF, each in [0, src_cols) (disentangled attention's position
    scores).""")


def _run_gather_add(machine: Any, f: Mapping[str, int]) -> None:
    raw = np.ascontiguousarray(machine.view("idx_addr"))
    index = raw.view("<i2").astype(np.int64)
    bad = (index < 0) | (index >= f["src_cols"])
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        raise machine.fail(f"field 'idx_addr': index [{r}, {c}] = {int(index[r, c])} is outside "
                           f"[0, src_cols = {f['src_cols']})")
    dst = machine.view("dst_addr", "w")
    dst[...] = gather_add(machine.view("dst_addr", "r"), machine.view("src_addr"), index,
                          bool(f["transposed"]))
    machine.work.sfu_elements = f["rows"] * f["cols"]


def register() -> None:
    """Add GATHER_ADD to the table (once; `runtime/isa.py` calls this)."""
    register_once(((GATHER_ADD, _run_gather_add),))
