"""Instruction selection of `transformer.select_rows`: a row copy through VBUF.

With keep-on-chip, a select_rows of one block of rows of a kept tensor is an alias of them
(`OnChipActivations.alias_rows`), and of other rows of a kept tensor a copy VBUF -> VBUF
(`_copy_on_chip`: SCATTER_ROWS with an identity reuse map); else, through DRAM:

Each run of consecutive kept rows of one batch element is LOADed from x's FP32 rows in DRAM in
chunks (one kept row: the batch elements' rows in one strided LOAD) and written as the
result's rows (`write_tile`: the FP32 rows, and the INT8 copy when the result's readers are
linears that quantize it alike, one QUANT per chunk). The DMA and SFU work is charged like any
other; an address-offset view would save it, but the DRAM map holds one contiguous region per
value and the kept rows of several batch elements are not contiguous. The rule registers with
`lowering_state.register_lowering` when this module is imported (by `lower_to_esact.py`).
"""

from __future__ import annotations

import numpy as np
from esact_cc.dialects.select_rows_op import SelectRowsOp
from esact_cc.passes.lowering_state import (
    F32,
    OUT_FRACTION,
    Lowering,
    register_lowering,
    shape_of,
)
from esact_cc.passes.on_chip_activations import rows_on_chip, write_or_keep
from esact_cc.runtime.isa import Buffer


def row_runs(rows: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """(first source row, first result row, count) of each run of consecutive `rows`."""
    runs: list[tuple[int, int, int]] = []
    for position, row in enumerate(rows):
        if runs and runs[-1][0] + runs[-1][2] == row:
            first, at, count = runs[-1]
            runs[-1] = (first, at, count + 1)
        else:
            runs.append((row, position, 1))
    return runs


def lower_select_rows(lw: Lowering, op: SelectRowsOp) -> None:
    x = lw.f32_tensor(op.x, "x")
    batch, length, cols = x.shape
    kept = len(op.kept)
    runs = row_runs(op.kept)
    if batch == 1 and len(runs) == 1 and lw.on_chip is not None \
            and lw.on_chip.alias_rows(op.result, x, runs[0][0]):
        return  # one block of rows of a tensor kept on chip (keep-on-chip): read there
    at = rows_on_chip(lw, x, 0)
    if at is not None and batch * kept * cols <= lw.capacity(Buffer.VBUF) // OUT_FRACTION:
        _copy_on_chip(lw, op, at, runs)
        return
    if kept == 1:  # one row per batch element: the result's rows, one strided LOAD per chunk
        _copy(lw, op, x.address + op.kept[0] * cols * F32, batch, 0, length * cols * F32)
        return
    for b in range(batch):
        for first, at, count in row_runs(op.kept):
            _copy(lw, op, x.address + (b * length + first) * cols * F32, count, b * kept + at, 0)


def _copy_on_chip(lw: Lowering, op: SelectRowsOp, at: int, runs: list[tuple[int, int, int]]
                  ) -> None:
    """x kept on chip at `at`: the kept rows copied VBUF -> VBUF into one tile of the result
    by SCATTER_ROWS with an identity reuse map (every entry -1: each row its own
    representative, a bit copy), one strided copy when one row per batch element is kept,
    instead of x's STORE and the LOADs back."""
    batch, length, cols = shape_of(op.x)
    kept = len(op.kept)
    blocks = ([(op.kept[0], 0, batch, length * cols)] if kept == 1 else
              [(b * length + first, b * kept + to, count, 0)
               for b in range(batch) for first, to, count in runs])
    most = max(count for _, _, count, _ in blocks)
    identity = lw.constant("select_rows.identity_map", np.full(2 * most, 255, np.uint8),
                           ("select_rows.identity_map", most))
    rows_map = lw.alloc(Buffer.MBUF, 2 * most)
    lw.load(Buffer.MBUF, rows_map, identity.address, 1, 2 * most)
    v = lw.alloc(Buffer.VBUF, batch * kept * cols)
    for first, to, count, stride in blocks:
        lw.emit("scatter_rows", "sfu", buf=Buffer.VBUF, dst_addr=v + to * cols,
                src_addr=at + first * cols, rows=count, cols=cols, src_stride=stride,
                dst_stride=0, map_addr=rows_map)
    lw.free(Buffer.MBUF, rows_map)
    if not write_or_keep(lw, op.result, v, 0, batch * kept, 0, cols):
        lw.free(Buffer.VBUF, v)


def _copy(lw: Lowering, op: SelectRowsOp, address: int, rows: int, row0: int, stride: int) -> None:
    """`rows` source rows from `address` (`stride` bytes apart, 0: packed) -> the result's
    rows from `row0`, in VBUF chunks."""
    cols = shape_of(op.x)[-1]
    chunk = lw.stage_rows(cols, rows)
    for r in range(0, rows, chunk):
        n = min(chunk, rows - r)
        v = lw.alloc(Buffer.VBUF, n * cols)
        lw.load(Buffer.VBUF, v, address + r * (stride or cols * F32), n, cols, dram_stride=stride)
        lw.write_tile(op.result, v, row0 + r, n, 0, cols)
        lw.free(Buffer.VBUF, v)


register_lowering(SelectRowsOp, lower_select_rows)  # type: ignore[arg-type]
