"""GATHER_ADD (disentangled attention's position scores, runtime/isa_disentangled.py): the
kernel against a hand computation, the instruction on the functional model in both gather
directions, what the SFU is charged, and an index outside the table as a program error."""

from __future__ import annotations

import math

import numpy as np
import pytest
from instruction_machine import CFG, get, machine_for, put
from esact_cc.runtime.errors import ProgramError
from esact_cc.runtime.isa import INSTRUCTION_SPECS, Buffer, Instruction, Queue, Unit, Work
from esact_cc.runtime.isa_disentangled import gather_add
from esact_cc.runtime.work_table import sfu_passes_column

SRC = np.array([[10.0, 20.0, 30.0],
                [40.0, 50.0, 60.0]], np.float32)
INDEX = np.array([[2, 0],
                  [1, 1]], np.int64)
DST = np.array([[1.0, 2.0],
                [3.0, 4.0]], np.float32)


def test_kernel_gathers_by_query_row_or_by_key_column() -> None:
    # by row r:    dst[r, c] + src[r, index[r, c]]
    np.testing.assert_array_equal(gather_add(DST, SRC, INDEX, False),
                                  [[1 + 30, 2 + 10], [3 + 50, 4 + 50]])
    # by column c: dst[r, c] + src[c, index[r, c]]
    np.testing.assert_array_equal(gather_add(DST, SRC, INDEX, True),
                                  [[1 + 30, 2 + 40], [3 + 20, 4 + 50]])


def test_kernel_rounds_the_float64_sum_once_to_float32() -> None:
    dst = np.array([[1.0]], np.float32)
    src = np.array([[np.float32(2.0 ** -30)]], np.float32)
    got = gather_add(dst, src, np.zeros((1, 1), np.int64), False)
    assert got.dtype == np.float32 and got[0, 0] == np.float32(1.0 + 2.0 ** -30)


def _int16_bytes(index: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(index.astype("<i2")).view(np.uint8)


@pytest.mark.parametrize("transposed", [0, 1])
def test_instruction_on_the_functional_model_equals_the_kernel(transposed: int) -> None:
    rng = np.random.default_rng(3)
    rows, cols, positions, stride = 3, 5, 7, 8
    src_rows = cols if transposed else rows
    dst = rng.standard_normal((rows, stride)).astype(np.float32)
    src = rng.standard_normal((src_rows, positions)).astype(np.float32)
    index = rng.integers(0, positions, (rows, cols))
    instr = Instruction.make("gather_add", dst_addr=0, src_addr=100, idx_addr=0, rows=rows,
                             cols=cols, src_cols=positions, dst_stride=stride,
                             transposed=transposed)
    m = machine_for(instr)
    put(m, Buffer.VBUF, 0, dst)
    put(m, Buffer.VBUF, 100, src)
    put(m, Buffer.MBUF, 0, _int16_bytes(index))
    work = m.step(0, instr)
    expected = gather_add(dst[:, :cols], src, index, bool(transposed))
    np.testing.assert_array_equal(get(m, Buffer.VBUF, 0, rows, cols, stride), expected)
    np.testing.assert_array_equal(get(m, Buffer.VBUF, 0, rows, stride, stride)[:, cols:],
                                  dst[:, cols:])  # the stride's gap is untouched
    assert work.sfu_elements == rows * cols


def test_the_sfu_pays_one_pass_per_score() -> None:
    spec = INSTRUCTION_SPECS["gather_add"]
    assert (spec.queue, spec.unit) == (Queue.SFU, Unit.SFU)
    rows, cols = 64, 100
    cycles = spec.cost({"rows": rows, "cols": cols}, CFG, Work(sfu_elements=rows * cols))
    assert cycles == math.ceil(rows * cols / CFG.sfu_lanes) + 1
    assert list(sfu_passes_column(["gather_add"])) == [1]  # the energy model's count too


def test_an_index_outside_the_table_is_a_program_error() -> None:
    instr = Instruction.make("gather_add", dst_addr=0, src_addr=100, idx_addr=0, rows=2, cols=2,
                             src_cols=3, transposed=0)
    m = machine_for(instr)
    put(m, Buffer.MBUF, 0, _int16_bytes(np.array([[0, 1], [3, 2]])))
    with pytest.raises(ProgramError, match=r"idx_addr.*index \[1, 0\] = 3 is outside "
                                           r"\[0, src_cols = 3\)"):
        m.step(0, instr)
