"""QUANT_ROWS of attention probabilities (runtime/isa_token_scales.py) under SPLS masks, hand
counted: with a row mask (reused query rows) it reads, computes, writes and is charged for the
kept rows only (codes and scales), the kept rows bit-identical to the unmasked instruction's;
after a top-k SOFTMAX it is on the masked score path (runtime/masked_score_work.py), charged
for the kept probabilities only, as is the ATTN_PV reading its codes. Default 64 SFU lanes."""

from __future__ import annotations

import numpy as np
import pytest
from esact_cc.runtime.esb import Program, check_program_fits, validate_program
from esact_cc.runtime.functional import Machine
from esact_cc.runtime.isa import INSTRUCTION_SPECS, SFU_PASSES, Buffer, Instruction
from esact_cc.runtime.masked_score_work import charge_kept_scores
from instruction_machine import CFG, get, machine_for, put

ROWS, COLS = 8, 16
ROW_MASK = np.array([0, 1, 0, 0, 1, 0, 0, 1], np.uint8)  # 3 of 8 rows kept
SRC, DST, SCALES, MASK_AT = 0, 512, 1024, 0
SENTINEL_CODE, SENTINEL_SCALE = -9, -7.0  # what a dropped row leaves as it was
assert CFG.sfu_lanes == 64 and SFU_PASSES["quant_rows"] == 2  # the hand counts below


def quant_rows(masked: bool):
    instr = Instruction.make("quant_rows", dst_addr=DST, src_addr=SRC, rows=ROWS, cols=COLS,
                             scale_addr=SCALES, has_row_mask=int(masked), row_mask_addr=MASK_AT)
    m = machine_for(instr)
    put(m, Buffer.VBUF, SRC, np.random.default_rng(5).random(ROWS * COLS).astype(np.float32))
    put(m, Buffer.ABUF, DST, np.full(ROWS * COLS, SENTINEL_CODE, np.int8))
    put(m, Buffer.VBUF, SCALES, np.full(ROWS, SENTINEL_SCALE, np.float32))
    put(m, Buffer.MBUF, MASK_AT, ROW_MASK)
    work = m.step(0, instr)
    return (instr, work, get(m, Buffer.ABUF, DST, ROWS, COLS),
            get(m, Buffer.VBUF, SCALES, 1, ROWS)[0])


def test_a_row_masked_quant_rows_moves_and_evaluates_its_kept_rows_only() -> None:
    instr, work, _, _ = quant_rows(masked=True)
    # 3 kept rows x 16 FP32 probabilities read; the row mask (8 bytes) read whole
    assert work.sram_read_bytes == {"vbuf": 3 * 16 * 4, "mbuf": 8}
    # 3 x 16 INT8 codes and 3 FP32 scales written
    assert work.sram_write_bytes == {"abuf": 3 * 16, "vbuf": 3 * 4}
    assert work.sfu_elements == 48
    assert (work.rows_total, work.rows_executed) == (8, 3)
    # cycles: ceil(48 elements x 2 passes / 64 lanes) + 1 issue = 3 (unmasked: 128 -> 5)
    assert INSTRUCTION_SPECS["quant_rows"].cost(instr.fields, CFG, work) == 3


def test_kept_rows_are_the_unmasked_codes_and_scales_and_dropped_rows_untouched() -> None:
    _, dense_work, dense_codes, dense_scales = quant_rows(masked=False)
    _, _, codes, scales = quant_rows(masked=True)
    kept = ROW_MASK != 0
    np.testing.assert_array_equal(codes[kept], dense_codes[kept])
    np.testing.assert_array_equal(scales[kept].view(np.uint32), dense_scales[kept].view(np.uint32))
    assert (codes[~kept] == SENTINEL_CODE).all() and (scales[~kept] == SENTINEL_SCALE).all()
    assert dense_work.sfu_elements == ROWS * COLS and dense_work.rows_total == 0


LQ, LK, D = 4, 6, 8
TILE = LQ * LK
ELEM_MASK = np.array([[1, 0, 0, 1, 0, 0],
                      [1, 1, 1, 0, 0, 0],
                      [0, 0, 0, 0, 0, 1],
                      [1, 1, 0, 0, 1, 1]], np.uint8)
HEAD_ROWS = np.array([1, 0, 1, 1], np.uint8)  # query row 1 reused
KEPT = int(ELEM_MASK.sum())  # 11 of 24
KEPT_IN_ROWS = int(ELEM_MASK[HEAD_ROWS != 0].sum())  # 8: rows 0, 2, 3


def head_works(row_masked: bool) -> list:
    """One top-k head: ATTN_QK -> DEQUANT -> SOFTMAX -> QUANT_ROWS -> ATTN_PV, element-masked,
    and row-masked (row mask at MBUF 100) when `row_masked`."""
    rows = {"has_row_mask": int(row_masked), "row_mask_addr": 100}
    instructions = [
        Instruction.make("attn_qk", scores_addr=0, q_addr=0, k_addr=100, lq=LQ, lk=LK, d=D,
                         has_mask=1, mask_addr=0, **rows),
        Instruction.make("dequant", dst_addr=100, src_addr=0, rows=LQ, cols=LK, scale_addr=0,
                         **rows),
        Instruction.make("softmax", dst_addr=100, src_addr=100, rows=LQ, cols=LK, scale=1.0,
                         has_elem_mask=1, elem_mask_addr=0, **rows),
        Instruction.make("quant_rows", dst_addr=300, src_addr=100, rows=LQ, cols=LK,
                         scale_addr=200, **rows),
        Instruction.make("attn_pv", out_addr=64, p_addr=300, v_addr=400, lq=LQ, lk=LK, d=D,
                         has_mask=1, mask_addr=0, **rows),
    ]
    program = Program([*instructions, Instruction.make("halt")], CFG.hash)
    validate_program(program)
    machine = Machine(program, CFG, max(check_program_fits(program, CFG), 1 << 16))
    put(machine, Buffer.ABUF, 0, np.random.default_rng(0).integers(-20, 20, 1000).astype(np.int8))
    put(machine, Buffer.VBUF, 0, np.full(LK, 0.01, np.float32))
    put(machine, Buffer.MBUF, 0, ELEM_MASK)
    put(machine, Buffer.MBUF, 100, HEAD_ROWS)
    works = [machine.step(i, instr) for i, instr in enumerate(instructions)]
    charge_kept_scores(instructions, works)
    return works


@pytest.mark.parametrize("row_masked", [False, True])
def test_quant_rows_after_a_top_k_softmax_is_charged_for_the_kept_probabilities(
        row_masked: bool) -> None:
    _, _, _, quant, pv = head_works(row_masked)
    kept, rows = (KEPT_IN_ROWS, 3) if row_masked else (KEPT, LQ)
    assert quant.sfu_elements == kept
    # kept FP32 probabilities read (+ the row mask); kept INT8 codes and each row's scale out
    assert quant.sram_read_bytes == ({"vbuf": 4 * kept, "mbuf": LQ} if row_masked
                                     else {"vbuf": 4 * kept})
    assert quant.sram_write_bytes == {"abuf": kept, "vbuf": 4 * rows}
    # ATTN_PV reads the kept codes only (and all of V), its element mask's kept rows
    assert pv.sram_read_bytes == {"abuf": kept + LK * D,
                                  "mbuf": rows * LK + (LQ if row_masked else 0)}
