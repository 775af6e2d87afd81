"""Instruction selection of `transformer.select_rows`: a row copy through VBUF.

Each run of consecutive kept rows of one batch element is LOADed from x's FP32 rows in DRAM in
chunks (one kept row: the batch elements' rows in one strided LOAD) and written as the
result's rows (`write_tile`: the FP32 rows, and the INT8 copy when the result's readers are
linears that quantize it alike, one QUANT per chunk). The DMA and SFU work is charged like any
other; an address-offset view would save it, but the DRAM map holds one contiguous region per
value and the kept rows of several batch elements are not contiguous. The rule registers with
`lowering_state.register_lowering` when this module is imported (by `lower_to_esact.py`).
"""

from __future__ import annotations

from esact_cc.dialects.select_rows_op import SelectRowsOp
from esact_cc.passes.lowering_state import F32, Lowering, register_lowering, shape_of
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
    if kept == 1:  # one row per batch element: the result's rows, one strided LOAD per chunk
        _copy(lw, op, x.address + op.kept[0] * cols * F32, batch, 0, length * cols * F32)
        return
    for b in range(batch):
        for first, at, count in row_runs(op.kept):
            _copy(lw, op, x.address + (b * length + first) * cols * F32, count, b * kept + at, 0)


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
