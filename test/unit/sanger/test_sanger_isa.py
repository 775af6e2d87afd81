"""SANGER_PREDICT and SANGER_PACK in the ISA table: encoded, decoded and assembled like any
instruction; the functional model writes runtime/sanger_kernels' mask (additive row or block,
causal) and fills Work; SANGER_PACK's cost is the pack-and-split model's, computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from esact_cc.runtime import isa, sanger_kernels
from esact_cc.runtime.assembly import format_instruction, parse_instruction
from esact_cc.runtime.encoding import decode_instruction, encode_instruction
from esact_cc.runtime.esb import Program, check_program_fits, validate_program
from esact_cc.runtime.functional import Machine
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.isa import Buffer, Instruction, Queue
from esact_cc.runtime.timing import instruction_costs

CFG = load_config()
LQ, LK, D = 6, 5, 4


def _predict(**fields) -> Instruction:
    base = dict(mask_addr=8, q_addr=0, k_addr=64, lq=LQ, lk=LK, d=D, bits=4,
                score_scale=0.05, threshold=0.1)
    return Instruction.make("sanger_predict", **{**base, **fields})


def _machine(*instrs: Instruction) -> Machine:
    program = Program([*instrs, Instruction.make("halt")], CFG.hash)
    validate_program(program)
    return Machine(program, CFG, max(check_program_fits(program, CFG), 1 << 16))


def test_the_instructions_encode_decode_and_assemble():
    for instr in (_predict(causal=1, causal_offset=-1, has_add_mask=1, add_mask_addr=3),
                  Instruction.make("sanger_pack", mask_addr=8, lq=LQ, lk=LK, d=D, dv=D)):
        assert decode_instruction(encode_instruction(instr)) == instr
        assert parse_instruction(format_instruction(instr))[0] == instr
    assert isa.INSTRUCTION_SPECS["sanger_predict"].queue == Queue.PREDICT
    assert isa.INSTRUCTION_SPECS["sanger_pack"].queue == Queue.COMPUTE


@pytest.mark.parametrize("mask", ["none", "row", "block"])
@pytest.mark.parametrize("causal", [0, 1])
def test_predict_writes_the_kernels_mask(mask, causal):
    rng = np.random.default_rng(3)
    q8 = rng.integers(-127, 128, (LQ, D)).astype(np.int8)
    k8 = rng.integers(-127, 128, (LK, D)).astype(np.int8)
    add = np.where(rng.random((LQ if mask == "block" else 1, LK)) < 0.3, -1e4, 0).astype(
        np.float32)
    fields = {} if mask == "none" else dict(has_add_mask=1, add_mask_addr=16,
                                            add_mask_rows=int(mask == "block"))
    instr = _predict(causal=causal, causal_offset=-1, **fields)
    machine = _machine(instr)
    machine.buffers[Buffer.ABUF][0:LQ * D] = q8.ravel()
    machine.buffers[Buffer.ABUF][64:64 + LK * D] = k8.ravel()
    machine.buffers[Buffer.VBUF][16:16 + add.size] = add.ravel()
    work = machine.step(0, instr)
    visible = (np.arange(LK)[None, :] <= np.arange(LQ)[:, None] - 1) if causal else None
    expected = sanger_kernels.predict_mask(q8, k8, 4, np.float32(0.05), 0.1,
                                           None if mask == "none" else add, visible)
    got = machine.buffers[Buffer.MBUF][8:8 + LQ * LK].reshape(LQ, LK)
    np.testing.assert_array_equal(got, expected.astype(np.uint8))
    assert work.mask_kept == expected.sum() and work.shift_adds == LQ * LK * D
    assert work.mask_total == (LQ * LK if visible is None else visible.sum())


def test_pack_cost_is_streaming_plus_idle_pe_cycles():
    mask = np.zeros((LQ, LK), np.uint8)
    mask[:, :3] = 1  # 6 rows x 3 keys: 6 sub-rows, 18 kept positions
    instr = Instruction.make("sanger_pack", mask_addr=8, lq=LQ, lk=LK, d=D, dv=2 * D)
    machine = _machine(instr)
    machine.buffers[Buffer.MBUF][8:8 + mask.size] = mask.ravel()
    work = machine.step(0, instr)
    assert (work.rows_total, work.rows_executed, work.mask_kept) == (LQ, 6, 18)
    _, _, _, cycles, _ = instruction_costs([instr], [work], CFG)
    pes = CFG.mac_rows * CFG.mac_cols
    pe_rows = pes // sanger_kernels.SANGER_PES_PER_SUBROW
    passes = -(-6 // pe_rows)
    idle = sum(passes * depth - -(-18 * depth // pes) for depth in (D, 2 * D))
    assert cycles == [-(-LQ // pe_rows) * LK + idle + 1] and idle > 0
