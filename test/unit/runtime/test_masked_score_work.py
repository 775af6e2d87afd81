"""A masked attention's score path is charged per kept position (runtime/masked_score_work.py):
one head's ATTN_QK -> DEQUANT -> mask ADD -> SOFTMAX -> QUANT -> ATTN_PV run on the functional
model, its work records, cycles and energies checked against a hand count."""

from __future__ import annotations

import numpy as np
from instruction_machine import CFG, put

from esact_cc.runtime.energy import EnergyModel
from esact_cc.runtime.esb import Program, check_program_fits, validate_program
from esact_cc.runtime.functional import Machine
from esact_cc.runtime.isa import SFU_PASSES, Buffer, Instruction
from esact_cc.runtime.isa_costs import sfu_cost
from esact_cc.runtime.masked_score_work import charge_kept_scores
from esact_cc.runtime.work_table import WorkTable

LQ, LK, D = 4, 6, 8
TILE = LQ * LK
MASK = np.array([[1, 0, 0, 1, 0, 0],
                 [1, 1, 1, 0, 0, 0],
                 [0, 0, 0, 0, 0, 1],
                 [1, 1, 0, 0, 1, 1]], np.uint8)
KEPT = int(MASK.sum())  # 11 of 24


def head_program(masked: bool) -> list[Instruction]:
    flag = int(masked)
    return [
        Instruction.make("attn_qk", scores_addr=0, q_addr=0, k_addr=100, lq=LQ, lk=LK, d=D,
                         has_mask=flag, mask_addr=0),
        Instruction.make("dequant", dst_addr=100, src_addr=0, rows=LQ, cols=LK, scale_addr=0),
        Instruction.make("add", dst_addr=100, a_addr=100, b_addr=200, rows=LQ, cols=LK),
        Instruction.make("softmax", dst_addr=100, src_addr=100, rows=LQ, cols=LK, scale=1.0,
                         has_elem_mask=flag, elem_mask_addr=0),
        Instruction.make("quant", dst_addr=300, src_addr=100, rows=LQ, cols=LK, mult=100.0),
        Instruction.make("attn_pv", out_addr=64, p_addr=300, v_addr=400, lq=LQ, lk=LK, d=D,
                         has_mask=flag, mask_addr=0),
        # the same ACC tile overwritten by a GEMM, then dequantized: not a score path any more
        Instruction.make("gemm", acc_addr=0, a_addr=0, w_addr=0, m=LQ, n=LK, k=D),
        Instruction.make("dequant", dst_addr=100, src_addr=0, rows=LQ, cols=LK, scale_addr=0),
    ]


def run_head(masked: bool) -> list:
    instructions = head_program(masked)
    program = Program([*instructions, Instruction.make("halt")], CFG.hash)
    validate_program(program)
    machine = Machine(program, CFG, max(check_program_fits(program, CFG), 1 << 16))
    rng = np.random.default_rng(0)
    put(machine, Buffer.ABUF, 0, rng.integers(-20, 20, 1000).astype(np.int8))
    put(machine, Buffer.VBUF, 0, np.full(LK, 0.01, np.float32))
    put(machine, Buffer.VBUF, 200, np.zeros(TILE, np.float32))
    put(machine, Buffer.MBUF, 0, MASK)
    works = [machine.step(i, instr) for i, instr in enumerate(instructions)]
    charge_kept_scores(instructions, works)
    return works


def test_every_score_path_instruction_is_charged_for_the_kept_positions() -> None:
    qk, dequant, add, softmax, quant, pv, gemm, unrelated = run_head(masked=True)
    assert qk.mask_kept == KEPT
    # ATTN_QK writes only the kept int32 scores to ACC; Q and K are read whole
    assert qk.sram_write_bytes["acc"] == 4 * KEPT
    assert qk.sram_read_bytes["abuf"] == (LQ + LK) * D
    # DEQUANT: kept int32 in, kept fp32 out; the scale vector (LK fp32) read whole
    assert dequant.sfu_elements == KEPT
    assert dequant.sram_read_bytes == {"acc": 4 * KEPT, "vbuf": 4 * LK}
    assert dequant.sram_write_bytes == {"vbuf": 4 * KEPT}
    # the additive mask ADD reads the kept scores and the kept mask values
    assert add.sfu_elements == KEPT
    assert add.sram_read_bytes == {"vbuf": 2 * 4 * KEPT}
    assert add.sram_write_bytes == {"vbuf": 4 * KEPT}
    # SOFTMAX: kept positions only; its element mask (MBUF, one byte each) is read whole
    assert softmax.sfu_elements == KEPT
    assert softmax.sram_read_bytes == {"vbuf": 4 * KEPT, "mbuf": TILE}
    assert softmax.sram_write_bytes == {"vbuf": 4 * KEPT}
    assert quant.sfu_elements == KEPT
    assert quant.sram_read_bytes == {"vbuf": 4 * KEPT}
    assert quant.sram_write_bytes == {"abuf": KEPT}
    # ATTN_PV: kept int8 probabilities and all of V; its mask read whole
    assert pv.sram_read_bytes == {"abuf": KEPT + LK * D, "mbuf": TILE}
    # after the GEMM overwrote the tile, a DEQUANT of it is charged in full
    assert gemm.sram_write_bytes == {"acc": 4 * TILE}
    assert unrelated.sfu_elements == TILE
    assert unrelated.sram_read_bytes == {"acc": 4 * TILE, "vbuf": 4 * LK}


def test_an_unmasked_head_keeps_its_dense_charge() -> None:
    qk, dequant, add, softmax, quant, pv, _, _ = run_head(masked=False)
    assert qk.sram_write_bytes["acc"] == 4 * TILE
    assert [w.sfu_elements for w in (dequant, add, softmax, quant)] == [TILE] * 4
    assert softmax.sram_read_bytes == {"vbuf": 4 * TILE}
    assert pv.sram_read_bytes == {"abuf": TILE + LK * D}


def test_softmax_cycles_and_energy_follow_the_kept_positions() -> None:
    works = run_head(masked=True)
    softmax = works[3]
    passes = SFU_PASSES["softmax"]
    instr = head_program(True)[3]
    assert sfu_cost(passes)(instr.fields, CFG, softmax) == -(-KEPT * passes // CFG.sfu_lanes) + 1
    model = EnergyModel.from_config(CFG)
    table = WorkTable.from_records(works)
    passes_column = np.array([0, 1, 1, passes, 1, 0, 0, 1])
    energy = model.dynamic_energy(table, passes_column, np.zeros(len(works)), CFG.frequency_hz)
    np.testing.assert_allclose(energy["sfu"][3], KEPT * passes * model.sfu_element_pj)
    np.testing.assert_allclose(
        energy["sram_vbuf"][3], 4 * KEPT * (model.sram_read_pj_per_byte["vbuf"]
                                            + model.sram_write_pj_per_byte["vbuf"]))
    np.testing.assert_allclose(energy["sram_mbuf"][3], TILE * model.sram_read_pj_per_byte["mbuf"])
