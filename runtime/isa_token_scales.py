"""Dynamic per-token activation scales: QUANT_ROWS, registered with
`isa_table.register_instruction` by `register()` (runtime/isa.py calls it on import).

QUANT_ROWS quantizes an FP32 block to INT8 with one scale per row (per token) that the SFU
computes from the row itself: scale[r] = max_c |x[r, c]| / 127, written to VBUF, where the
DEQUANT after the GEMM reads it (`has_row_scale`: acc[r, c] * scale[c] * row_scale[r]). A
linear quantized this way needs no calibrated input range, and each token gets the full INT8
resolution whatever the other tokens hold (padding rows, a few large-norm tokens). Attention
probabilities with `p_row_scales` are quantized the same way (each query row's scale is its
largest probability, read back by the DEQUANT after ATTN_PV).

Cost (our model): two lane passes per element on the SFU (`SFU_PASSES["quant_rows"]`): the
running max |x| over the row, then the multiply-round-clip of QUANT; the reciprocal of each
row's scale is one operation per row, hidden in the pipeline between the passes. Energy is
charged per element and pass like every SFU instruction (runtime/energy.py). The row kernels
below are also the reference interpreter's definition (esact_cc/quantized_kernels.py), so the
binary and the interpreter agree bit for bit.

Row mask (`has_row_mask`, SPLS row reuse): QUANT_ROWS of a row-reused attention's P reads,
computes and writes (P rows and scales) its computed query rows only, like the SOFTMAX before
it; a reused row's P and scale are read by nothing (ATTN_PV and the output DEQUANT skip it).
Top-k attention's element mask needs no field: a masked-out probability is 0, its code 0, and
the score path charges QUANT_ROWS for the kept positions only (runtime/masked_score_work.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .int8_codes import INT8_MAX, round_clip_int8
from .isa_costs import SFU_PASSES, sfu_cost
from .isa_extension import addr, flag
from .isa_fields import DIM_BITS, SRAM_ADDR_BITS, STRIDE_BITS, Buffer, FieldSpec, Queue, Unit
from .isa_spec import Operand
from .isa_table import INSTRUCTION_SPECS, define_instruction, register_instruction
from .sfu_loops import compiled_sfu_loops

QUANT_ROWS_OPCODE = 0x2E


def row_scales(x: np.ndarray) -> np.ndarray:
    """FP32 scale of each row of x [rows, cols]: float32(max |x[r, :]| / 127), computed in
    float64, NaN entries skipped (QUANT gives them 0); 1.0 for a row whose peak is 0, inf (the
    row then saturates) or so small that the scale underflows float32, and an all-NaN row."""
    # max |x| is one of the float32 values: taken in float32, then widened exactly.
    peak = np.fmax.reduce(np.abs(np.asarray(x, np.float32)), axis=-1).astype(np.float64)
    with np.errstate(invalid="ignore"):
        scale = (peak / INT8_MAX).astype(np.float32)
    return np.where(np.isfinite(scale) & (scale > 0), scale, np.float32(1)).astype(np.float32)


def quantize_rows(x: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Row r of x times float32(1 / scales[r]) in float64, rounded half to even, clipped to
    +-127 (NaN -> 0, +-inf -> +-127): QUANT with a per-row multiplier."""
    mult = (1.0 / np.asarray(scales, np.float32).astype(np.float64)).astype(np.float32)
    # Widened first, multiplied in place (issue 16: a float32 x float64 multiply runs numpy's
    # buffered casting loop); the product of two float32 values is exact in float64.
    prod = np.array(x, np.float64)
    prod *= mult.astype(np.float64)[:, None]
    return round_clip_int8(prod)


def row_scales_and_codes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`row_scales(x)` and `quantize_rows(x, those scales)`, compiled (runtime/_sfu_loops.c:
    two passes per row where the numpy forms, kept as the reference, take eight over the
    tile; the same bits): BERT-base's 128 x 768 tile ~420 -> ~160 us."""
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or x.strides[1] != x.itemsize or x.strides[0] < 0:
        x = np.ascontiguousarray(x)  # a buffer's rows at a row stride need no copy
    scales, codes = np.empty(x.shape[0], np.float32), np.empty(x.shape, np.int8)
    compiled_sfu_loops().quant_rows(x, scales, codes)
    return scales, codes


def _run_quant_rows(machine: Any, f: Mapping[str, int]) -> None:
    rows, count = machine.sfu_rows(f)  # a dropped row is neither read, evaluated nor written
    scales, codes = row_scales_and_codes(machine.view("src_addr", rows=count)[rows])
    machine.view("scale_addr", "w", cols=count)[0][rows] = scales
    machine.view("dst_addr", rows=count)[rows] = codes


def _f(name: str) -> Any:
    return lambda f: f[name]


QUANT_ROWS = define_instruction(
    "quant_rows", QUANT_ROWS_OPCODE, Queue.SFU, Unit.SFU, (
        FieldSpec("dst_addr", SRAM_ADDR_BITS, doc="ABUF int8"),
        FieldSpec("src_addr", SRAM_ADDR_BITS, doc="VBUF fp32"),
        FieldSpec("rows", DIM_BITS, min_value=1),
        FieldSpec("cols", DIM_BITS, min_value=1),
        FieldSpec("src_stride", STRIDE_BITS, doc="row stride in elements, 0 = packed"),
        FieldSpec("dst_stride", STRIDE_BITS, doc="row stride in elements, 0 = packed"),
        FieldSpec("scale_addr", SRAM_ADDR_BITS, doc="VBUF: the rows' scales out, one FP32 each"),
        flag("has_row_mask", "process only the rows the row mask keeps"),
        addr("row_mask_addr", "MBUF: rows bytes, nonzero = row processed"),
    ), (
        Operand("src_addr", Buffer.VBUF, _f("rows"), _f("cols"), "r", "src_stride"),
        Operand("dst_addr", Buffer.ABUF, _f("rows"), _f("cols"), "w", "dst_stride"),
        Operand("scale_addr", Buffer.VBUF, lambda f: 1, _f("rows"), "w"),
        Operand("row_mask_addr", Buffer.MBUF, lambda f: 1, _f("rows"), "r",
                enabled_by="has_row_mask"),
    ), sfu_cost(SFU_PASSES["quant_rows"]),
    """Per row r, float64: scale[r] = float32(max_c |src[r, c]| / 127), NaN skipped (1.0
    when that is 0 or not finite); dst[r, c] = clip(round_half_even(src[r, c] * float32(1 / scale[r])),
    -127, 127) as int8, NaN gives 0. With has_row_mask, only the rows whose row_mask byte is
    nonzero are read, computed and written (dst rows and scales); the others are left as they
    are.""")


def register() -> None:
    """Add QUANT_ROWS to the ISA table (once; runtime/isa.py calls this)."""
    if QUANT_ROWS.name not in INSTRUCTION_SPECS:
        register_instruction(QUANT_ROWS, _run_quant_rows)
