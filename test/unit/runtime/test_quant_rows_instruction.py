"""QUANT_ROWS (per-token activation scales, runtime/isa_token_scales.py) and DEQUANT's row
scale: the kernels against their formulas, the instructions on the functional model, and what
the SFU is charged for them in cycles (energy: test/e2e/test_token_scales.py)."""

from __future__ import annotations

from instruction_machine import CFG, get, machine_for, put
import numpy as np
from esact_cc.passes.quantize import symmetric_scale
from esact_cc.quantized_kernels import dequantize, quantize_int8
from esact_cc.runtime.isa import (
    INSTRUCTION_SPECS,
    SFU_PASSES,
    Buffer,
    Instruction,
    Queue,
    Unit,
    Work,
)
from esact_cc.runtime.isa_token_scales import quantize_rows, row_scales
from esact_cc.runtime.work_table import sfu_passes_column

RNG = np.random.default_rng(7)




def f32(shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def test_row_scales_are_each_rows_symmetric_scale_with_safe_fallbacks() -> None:
    x = f32((6, 40), 3.0)
    x[1] = 0.0  # an all-zero (padding-like) row
    x[2, 7] = np.nan  # skipped by the max
    x[3, 0] = np.inf
    x[4] = 1e-44  # peak / 127 underflows float32
    x[5, 3] = -250.0  # the peak's sign does not matter
    scales = row_scales(x)
    assert scales.dtype == np.float32
    for r in (0, 2, 5):
        assert scales[r] == np.float32(symmetric_scale(float(np.nanmax(np.abs(x[r])))))
    assert scales[5] == np.float32(250.0 / 127)
    assert [scales[1], scales[3], scales[4]] == [1.0, 1.0, 1.0]
    assert row_scales(np.full((1, 4), np.nan, np.float32))[0] == 1.0


def test_quantize_rows_is_quant_with_each_rows_multiplier() -> None:
    x = f32((5, 33), 2.0)
    x[1] *= 100.0  # a large-norm token does not coarsen the others
    x[2, 4] = np.nan
    scales = row_scales(x)
    q = quantize_rows(x, scales)
    for r in range(5):
        np.testing.assert_array_equal(q[r], quantize_int8(x[r:r + 1], float(scales[r]))[0])
        assert np.abs(q[r]).max() == 127  # every row uses the full INT8 range
    assert q[2, 4] == 0


def test_quant_rows_instruction_writes_codes_and_scales() -> None:
    rows, cols, stride = 4, 10, 16
    instr = Instruction.make("quant_rows", dst_addr=100, src_addr=0, rows=rows, cols=cols,
                             src_stride=stride, dst_stride=stride, scale_addr=512)
    x = f32((rows, stride), 5.0)
    x[2] = 0.0
    m = machine_for(instr)
    put(m, Buffer.VBUF, 0, x)
    work = m.step(0, instr)
    src = x[:, :cols]
    np.testing.assert_array_equal(get(m, Buffer.VBUF, 512, 1, rows)[0], row_scales(src))
    np.testing.assert_array_equal(get(m, Buffer.ABUF, 100, rows, cols, stride),
                                  quantize_rows(src, row_scales(src)))
    assert work.sfu_elements == rows * cols


def test_dequant_row_scale_multiplies_each_row_after_the_column_scale() -> None:
    rows, cols = 3, 8
    instr = Instruction.make("dequant", dst_addr=0, src_addr=0, rows=rows, cols=cols,
                             scale_addr=64, has_bias=1, bias_addr=80, has_row_scale=1,
                             row_scale_addr=96)
    m = machine_for(instr)
    acc = np.arange(-12, 12, dtype=np.int32).reshape(rows, cols) * 1000
    scale, bias, row = f32((cols,)), f32((cols,)), np.abs(f32((rows,))) + 0.1
    put(m, Buffer.ACC, 0, acc)
    put(m, Buffer.VBUF, 64, scale)
    put(m, Buffer.VBUF, 80, bias)
    put(m, Buffer.VBUF, 96, row)
    m.step(0, instr)
    expected = dequantize(acc, scale, bias, row)  # the interpreter's kernel
    manual = (acc.astype(np.float64) * scale.astype(np.float64) * row.astype(np.float64)[:, None]
              + bias.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(expected, manual)
    np.testing.assert_array_equal(get(m, Buffer.VBUF, 0, rows, cols), expected)


def test_the_sfu_pays_two_passes_per_element_for_quant_rows() -> None:
    spec = INSTRUCTION_SPECS["quant_rows"]
    assert (spec.queue, spec.unit) == (Queue.SFU, Unit.SFU)
    assert SFU_PASSES["quant_rows"] == 2
    work = Work(sfu_elements=128 * 384)
    quant_cycles = INSTRUCTION_SPECS["quant"].cost({}, CFG, work)
    rows_cycles = spec.cost({}, CFG, work)
    assert rows_cycles - 1 == 2 * (quant_cycles - 1)  # both: ceil(elements x passes / lanes) + 1
    # The energy model charges SFU energy per element and lane pass: twice a QUANT's.
    assert list(sfu_passes_column(["quant", "quant_rows", "dequant"])) == [1, 2, 1]
