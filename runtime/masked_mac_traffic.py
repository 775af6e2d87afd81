"""A row- or column-masked MAC instruction's SRAM bytes charged for what it computes.

The functional model records each operand view whole (Machine._view). A GEMM whose row mask
drops a row (SPLS row reuse) neither reads that row of A from ABUF nor writes its accumulators,
and a dropped column is neither read from WBUF (nor its bias) nor written; ATTN_QK / ATTN_PV
skip a dropped query row's Q / P reads, its mask row and its output writes. Charging them whole
over-charged exactly the traffic the mask exists to save (docs/design.md section 6.3: MiniLM
layer-5 FFN up, MAC energy fell with the mask, ACC did not). So after such an instruction runs,
each operand below is charged for its kept rows x kept columns; an unmasked instruction is left
unchanged to the byte. The row/column mask vectors themselves are read whole (the unit reads
them to find the kept ones). A tile the element mask also thins (ATTN scores, P) is left to
masked_score_work, which charges its kept positions (counted over kept rows only).
"""

from __future__ import annotations

from typing import Any

from .isa_fields import BUFFER_DTYPES
from .isa_footprint import operand_extent

ROW_MASKED: dict[str, tuple[str, ...]] = {
    "gemm": ("a_addr", "acc_addr"),
    "attn_qk": ("q_addr", "scores_addr", "mask_addr"),
    "attn_pv": ("p_addr", "out_addr", "mask_addr"),
}
"""Per opcode, the operands whose rows are the row mask's (the output's rows)."""

COL_MASKED: dict[str, tuple[str, ...]] = {"gemm": ("w_addr", "acc_addr", "bias_addr")}
"""Per opcode, the operands whose columns are the column mask's (the output's columns)."""

ELEMENT_MASKED: dict[str, str] = {"attn_qk": "scores_addr", "attn_pv": "p_addr"}
"""The operand masked_score_work charges per kept position when `has_mask` is set."""


def charge_kept_rows_and_cols(work: Any, instr: Any) -> None:
    """Lower, in place, the SRAM bytes of `instr`'s work record (rows_total / rows_executed,
    cols_total / cols_executed set by its kernel) to its kept rows and columns."""
    name, f = instr.opcode_name, instr.fields
    dropped_rows = work.rows_total - work.rows_executed
    dropped_cols = work.cols_total - work.cols_executed
    if dropped_rows == 0 and dropped_cols == 0:
        return
    skip = ELEMENT_MASKED.get(name) if f.get("has_mask") else None
    for op in instr.spec.operands:
        by_row = op.addr in ROW_MASKED.get(name, ()) and op.addr != skip
        by_col = op.addr in COL_MASKED.get(name, ())
        extent = operand_extent(instr, op) if by_row or by_col else None
        if extent is None or extent[0] is None:
            continue
        rows, cols = op.rows(f), op.cols(f)
        kept = ((rows - dropped_rows) if by_row else rows) * (
            (cols - dropped_cols) if by_col else cols)
        counter = work.sram_read_bytes if op.access == "r" else work.sram_write_bytes
        key = extent[0].name.lower()
        counter[key] -= (rows * cols - kept) * BUFFER_DTYPES[extent[0]].itemsize
