"""Q, K and V handed to an INT8 attention already quantized: the attention QUANTizes each of
them with one multiplier (its q / k / v scale), so when every reader of a value is such an
attention operand (or a linear input quantized alike), its producer writes the INT8 copy
(`Lowering.write_tile`, the QUANT it runs on each output tile) instead of the FP32 one, and
the attention LOADs the INT8 rows straight into ABUF (`quantize_input_rows`) instead of
LOADing FP32 rows and QUANTizing them on chip. The same QUANT of the same FP32 values, moved
into the producer's epilogue: the codes, and so the outputs, are bit for bit those of the
FP32 hand-off; the DRAM traffic of the hand-off is a quarter (BERT-base at 512 tokens: 4.7 MB
of FP32 Q / K / V per layer, STOREd and LOADed back). A value keep-on-chip may keep in VBUF
(BERT-base at 128 tokens) keeps the FP32 hand-off: its QUANT then reads VBUF.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from esact_cc.dialects import transformer
from esact_cc.passes.on_chip_activations import KEEP_FRACTION
from esact_cc.runtime.isa import Buffer
from xdsl.ir import Operation, SSAValue

from esact_cc.quantized_kernels import quant_multiplier

if TYPE_CHECKING:
    from esact_cc.passes.lowering_state import DramTensor, InputFormat, Lowering


def attention_input_format(lw: Lowering, user: Operation, index: int, value: SSAValue
                           ) -> tuple[InputFormat, float] | None:
    """(the InputFormat, the scale) an INT8 attention `user` quantizes its operand `index`
    (`value`) with, when it is Q, K or V (one multiplier over all columns) and keep-on-chip
    could not keep it in VBUF (larger than the kept activations' share: then its QUANT reads
    VBUF, and an INT8 copy would be written for nothing); else None."""
    if not (isinstance(user, transformer.AttentionOp) and user.is_quantized and index < 3):
        return None
    shape = value.type.get_shape()  # type: ignore[attr-defined]
    if lw.on_chip is not None and math.prod(shape) <= lw.capacity(Buffer.VBUF) // KEEP_FRACTION:
        return None
    scale = float(user.int8_scales()[index])  # type: ignore[index]
    return ((0, shape[-1], float(quant_multiplier(scale))),), scale


def quantize_input_rows(lw: Lowering, value: SSAValue, src: DramTensor, row0: int, rows: int,
                        col0: int, cols: int, abuf: int, mult: float) -> None:
    """Rows [row0, row0 + rows) x columns [col0, col0 + cols) of attention input `value`
    (FP32 tensor `src`) quantized with `mult` into ABUF at `abuf` (packed rows of `cols`):
    QUANT from the tile kept on chip, else a LOAD of its INT8 copy when its producer wrote one
    with this multiplier, else LOAD + QUANT of the FP32 rows (`Lowering.quantize_rows`)."""
    groups = ((0, cols, float(mult)),)
    if lw.on_chip is not None and lw.on_chip.quantize(src, row0, rows, col0, cols, abuf, groups):
        return
    copy = lw.int8_tensors.get(value)
    planned = lw.format_of(value)
    if copy is not None and planned is not None and all(
            start <= col0 and col0 + cols <= end and m == float(mult)
            for start, end, m in planned if start < col0 + cols and col0 < end):
        lw.load(Buffer.ABUF, abuf, copy.address + row0 * copy.cols + col0, rows, cols,
                dram_stride=copy.cols)
        return
    lw.quantize_rows(src, row0, rows, col0, cols, abuf, groups)


def int8_copy_fits(lw: Lowering, value: SSAValue, cols: int) -> bool:
    """Whether `Lowering.write_tile` writes `value`'s INT8 copy: not when ABUF has no room to
    stage one row of its codes and no tile of it was written yet (a linear lowered beside an
    SPLS chain on a small ABUF): its INT8 plan is dropped, it goes through DRAM in FP32 and
    its readers QUANTize it themselves, as before the INT8 hand-off."""
    if lw.room(Buffer.ABUF) >= cols or value in lw.int8_tensors:
        return True
    del lw.int8_scale[value]
    return False
