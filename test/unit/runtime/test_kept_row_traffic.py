"""A row- and column-masked MAC instruction is charged SRAM bytes for the rows and columns it
computes (Machine.view charges the rows and columns its kernel touches); an unmasked one as
before, every operand whole."""

from __future__ import annotations

import numpy as np
from esact_cc.runtime.esb import Program, check_program_fits, validate_program
from esact_cc.runtime.functional import Machine
from esact_cc.runtime.isa import Buffer, Instruction
from esact_cc.runtime.masked_score_work import charge_kept_scores
from instruction_machine import CFG, put

M, K, N = 8, 16, 6
ROW_MASK = np.array([0, 1, 0, 0, 1, 0, 0, 1], np.uint8)  # 3 of 8 rows kept
COL_MASK = np.array([1, 0, 1, 1, 0, 1], np.uint8)  # 4 of 6 columns kept
ROWS, COLS = int(ROW_MASK.sum()), int(COL_MASK.sum())
ROW_MASK_AT, COL_MASK_AT, ELEMENT_MASK_AT = 0, 16, 32
LQ, LK, D = M, 5, 4


def run(instructions: list[Instruction]) -> tuple[list, Machine]:
    program = Program([*instructions, Instruction.make("halt")], CFG.hash)
    validate_program(program)
    machine = Machine(program, CFG, max(check_program_fits(program, CFG), 1 << 16))
    rng = np.random.default_rng(1)
    put(machine, Buffer.ABUF, 0, rng.integers(-100, 100, 1024).astype(np.int8))
    put(machine, Buffer.WBUF, 0, rng.integers(-100, 100, K * N).astype(np.int8))
    put(machine, Buffer.ACC, 512, rng.integers(-1000, 1000, N).astype(np.int32))  # bias
    put(machine, Buffer.ACC, 0, np.arange(M * N, dtype=np.int32))  # accumulated onto
    put(machine, Buffer.MBUF, ROW_MASK_AT, ROW_MASK)
    put(machine, Buffer.MBUF, COL_MASK_AT, COL_MASK)
    put(machine, Buffer.MBUF, ELEMENT_MASK_AT, (rng.random(LQ * LK) < 0.5).astype(np.uint8))
    return [machine.step(i, instr) for i, instr in enumerate(instructions)], machine


def gemm(masked: bool, accumulate: int = 0) -> Instruction:
    return Instruction.make("gemm", acc_addr=0, a_addr=0, w_addr=0, m=M, k=K, n=N,
                            has_bias=1, bias_addr=512, accumulate=accumulate,
                            has_row_mask=int(masked), row_mask_addr=ROW_MASK_AT,
                            has_col_mask=int(masked), col_mask_addr=COL_MASK_AT)


def test_masked_gemm_moves_the_kept_rows_and_columns_only() -> None:
    for accumulate in (0, 1):
        (work,), _ = run([gemm(True, accumulate)])
        assert work.sram_read_bytes == {"abuf": ROWS * K, "wbuf": K * COLS,
                                        "acc": 4 * COLS, "mbuf": M + N}
        assert work.sram_write_bytes == {"acc": 4 * ROWS * COLS}
        assert (work.rows_executed, work.cols_executed) == (ROWS, COLS)


def test_unmasked_gemm_is_charged_every_operand_whole() -> None:
    (work,), _ = run([gemm(False)])
    assert work.sram_read_bytes == {"abuf": M * K, "wbuf": K * N, "acc": 4 * N}
    assert work.sram_write_bytes == {"acc": 4 * M * N}


def test_the_charge_does_not_change_what_is_computed() -> None:
    _, masked = run([gemm(True, 1)])
    _, dense = run([gemm(False, 1)])
    acc_masked = masked.buffers[Buffer.ACC][:M * N].reshape(M, N)
    acc_dense = dense.buffers[Buffer.ACC][:M * N].reshape(M, N)
    keep = np.ix_(np.flatnonzero(ROW_MASK), np.flatnonzero(COL_MASK))
    np.testing.assert_array_equal(acc_masked[keep], acc_dense[keep])
    untouched = np.ones((M, N), bool)
    untouched[keep] = False
    np.testing.assert_array_equal(acc_masked[untouched],
                                  np.arange(M * N, dtype=np.int32).reshape(M, N)[untouched])


def attention(row_masked: bool, element_masked: bool) -> list[Instruction]:
    flags = {"has_row_mask": int(row_masked), "row_mask_addr": ROW_MASK_AT,
             "has_mask": int(element_masked), "mask_addr": ELEMENT_MASK_AT}
    return [Instruction.make("attn_qk", scores_addr=0, q_addr=0, k_addr=200, lq=LQ, lk=LK,
                             d=D, **flags),
            Instruction.make("attn_pv", out_addr=256, p_addr=300, v_addr=400, lq=LQ, lk=LK,
                             d=D, **flags)]


def test_row_masked_attention_moves_the_kept_query_rows_only() -> None:
    (qk, pv), _ = run(attention(row_masked=True, element_masked=False))
    assert qk.sram_read_bytes == {"abuf": ROWS * D + LK * D, "mbuf": LQ}
    assert qk.sram_write_bytes == {"acc": 4 * ROWS * LK}
    assert pv.sram_read_bytes == {"abuf": ROWS * LK + LK * D, "mbuf": LQ}
    assert pv.sram_write_bytes == {"acc": 4 * ROWS * D}
    (qk, pv), _ = run(attention(row_masked=False, element_masked=False))
    assert qk.sram_read_bytes == {"abuf": LQ * D + LK * D}
    assert qk.sram_write_bytes == {"acc": 4 * LQ * LK}
    assert pv.sram_read_bytes == {"abuf": LQ * LK + LK * D}
    assert pv.sram_write_bytes == {"acc": 4 * LQ * D}


def test_element_masked_tiles_move_their_kept_rows_before_the_score_path_charge() -> None:
    # scores and P move per kept row here; masked_score_work (after the run) lowers a score
    # tile it follows to its kept positions. P at 300 is no QK's tile: its kept rows stay.
    (qk, pv), _ = run(attention(row_masked=True, element_masked=True))
    assert qk.sram_read_bytes == {"abuf": ROWS * D + LK * D, "mbuf": LQ + ROWS * LK}
    assert qk.sram_write_bytes == {"acc": 4 * ROWS * LK}
    assert pv.sram_read_bytes == {"abuf": ROWS * LK + LK * D, "mbuf": LQ + ROWS * LK}
    assert pv.sram_write_bytes == {"acc": 4 * ROWS * D}


def test_scores_of_a_row_and_element_masked_qk_are_its_kept_positions_once() -> None:
    instructions = attention(row_masked=True, element_masked=True)
    works, machine = run(instructions)
    charge_kept_scores(instructions, works)
    qk = works[0]
    element_mask = machine.buffers[Buffer.MBUF][ELEMENT_MASK_AT:][:LQ * LK].reshape(LQ, LK)
    kept = int(element_mask[np.flatnonzero(ROW_MASK)].sum())
    assert qk.mask_kept == kept
    assert qk.sram_write_bytes == {"acc": 4 * kept}


REUSE_MAP = np.array([-1, 0, 0, -1, 3, -1, 5, 5], "<i2")  # 3 of 8 rows computed, 5 reused
SCATTER_COLS = 6


def scatter(in_place: bool, compact: int = 0) -> Instruction:
    return Instruction.make("scatter_rows", buf=Buffer.VBUF, dst_addr=0 if in_place else 64,
                            src_addr=0, rows=M, cols=SCATTER_COLS, map_addr=ROW_MASK_AT,
                            compact=compact)


def run_rows(instr: Instruction) -> tuple:
    program = Program([instr, Instruction.make("halt")], CFG.hash)
    validate_program(program)
    machine = Machine(program, CFG, max(check_program_fits(program, CFG), 1 << 16))
    put(machine, Buffer.VBUF, 0, np.arange(M * SCATTER_COLS, dtype=np.float32))
    put(machine, Buffer.MBUF, ROW_MASK_AT, REUSE_MAP.view(np.uint8))
    work = machine.step(0, instr)
    return work, machine.buffers[Buffer.VBUF][int(instr["dst_addr"]):][:M * SCATTER_COLS]


def test_an_in_place_scatter_moves_the_reused_rows_only() -> None:
    work, in_place = run_rows(scatter(in_place=True))
    _, copied = run_rows(scatter(in_place=False))
    np.testing.assert_array_equal(in_place, copied)  # same rows as the copy into dst
    reused = int((REUSE_MAP != -1).sum())  # 5: the computed rows are already in place
    assert work.sram_read_bytes == {"vbuf": 4 * reused * SCATTER_COLS, "mbuf": 2 * M}
    assert work.sram_write_bytes == {"vbuf": 4 * reused * SCATTER_COLS}
    assert work.sfu_elements == reused * SCATTER_COLS


def test_a_scatter_into_other_rows_moves_every_row() -> None:
    work, _ = run_rows(scatter(in_place=False))
    assert work.sram_read_bytes == {"vbuf": 4 * M * SCATTER_COLS, "mbuf": 2 * M}
    assert work.sram_write_bytes == {"vbuf": 4 * M * SCATTER_COLS}
    assert work.sfu_elements == M * SCATTER_COLS


def test_a_gather_moves_the_computed_rows_only() -> None:
    instr = Instruction.make("gather_rows", buf=Buffer.VBUF, dst_addr=64, src_addr=0, rows=M,
                             cols=SCATTER_COLS, map_addr=ROW_MASK_AT)
    work, _ = run_rows(instr)
    computed = int((REUSE_MAP == -1).sum())
    assert work.sram_read_bytes == {"vbuf": 4 * computed * SCATTER_COLS, "mbuf": 2 * M}
    assert work.sram_write_bytes == {"vbuf": 4 * computed * SCATTER_COLS}
