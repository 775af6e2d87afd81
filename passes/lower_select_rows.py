"""Instruction selection of `transformer.select_rows`: a row copy through VBUF.

Each run of consecutive kept rows of one batch element is LOADed from x's FP32 rows in DRAM in
chunks and written as the result's rows (`write_tile`: the FP32 rows, and the INT8 copy when
the result's readers are linears that quantize it alike, one QUANT per chunk). The DMA and SFU
work is charged like any other; an address-offset view would save it but the DRAM map holds
one contiguous region per value, and the kept rows of several batch elements are not
contiguous. The rule registers with `lowering_state.register_lowering` when this module is
imported (by `lower_to_esact.py`).
"""

from __future__ import annotations

from esact_cc.dialects.select_rows_op import SelectRowsOp
from esact_cc.passes.lowering_state import F32, Lowering, register_lowering
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
    chunk = lw.stage_rows(cols, kept)
    for b in range(batch):
        for first, at, count in row_runs(op.kept):
            for r in range(0, count, chunk):
                n = min(chunk, count - r)
                v = lw.alloc(Buffer.VBUF, n * cols)
                lw.load(Buffer.VBUF, v, x.address + (b * length + first + r) * cols * F32, n, cols)
                lw.write_tile(op.result, v, b * kept + at + r, n, 0, cols)
                lw.free(Buffer.VBUF, v)


register_lowering(SelectRowsOp, lower_select_rows)  # type: ignore[arg-type]
