"""isa.register_instruction: an instruction added from outside the runtime (as a sparsity
scheme would add its prediction step) is encoded, decoded, assembled, executed by the
functional model through its kernel and costed by the timing model through its cost."""

from __future__ import annotations

import numpy as np
import pytest

from esact_cc.runtime import isa
from esact_cc.runtime.assembly import format_instruction, parse_instruction
from esact_cc.runtime.encoding import decode_instruction, encode_instruction
from esact_cc.runtime.esb import Program, check_program_fits, validate_program
from esact_cc.runtime.functional import Machine
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.isa import Buffer, FieldSpec, Instruction, Operand, Queue, Unit
from esact_cc.runtime.timing import instruction_costs

CFG = load_config()
OPCODE = 0x60


def _count_kept(machine, fields) -> None:
    kept = machine.view("src_addr") != 0
    machine.view("dst_addr")[0, :] = kept.sum(axis=1)
    machine.work.compare_ops = kept.size


def _cost(fields, config, work) -> int:
    return 1 + work.compare_ops // 8


COUNT_KEPT = isa.define_instruction(
    "count_kept", OPCODE, Queue.PREDICT, Unit.TOPK,
    (FieldSpec("dst_addr", isa.SRAM_ADDR_BITS), FieldSpec("src_addr", isa.SRAM_ADDR_BITS),
     FieldSpec("rows", isa.DIM_BITS), FieldSpec("cols", isa.DIM_BITS)),
    (Operand("src_addr", Buffer.MBUF, lambda f: f["rows"], lambda f: f["cols"], "r"),
     Operand("dst_addr", Buffer.VBUF, lambda f: 1, lambda f: f["rows"], "w")),
    _cost, "dst[r] = number of nonzero mask bytes in row r of src (rows x cols, packed)")


@pytest.fixture
def registered():
    isa.register_instruction(COUNT_KEPT, _count_kept)
    yield COUNT_KEPT
    isa.unregister_instruction("count_kept")


def test_encoding_and_assembly_round_trip(registered):
    instr = Instruction.make("count_kept", dst_addr=16, src_addr=3, rows=4, cols=5)
    assert isa.SPECS_BY_OPCODE[OPCODE] is registered
    assert decode_instruction(encode_instruction(instr)) == instr
    text = format_instruction(instr)
    assert text.startswith("count_kept ")
    assert parse_instruction(text)[0] == instr


def test_the_functional_and_timing_models_run_its_kernel_and_cost(registered):
    instr = Instruction.make("count_kept", dst_addr=16, src_addr=3, rows=4, cols=5)
    program = Program([instr, Instruction.make("halt")], CFG.hash)
    validate_program(program)
    machine = Machine(program, CFG, max(check_program_fits(program, CFG), 1 << 16))
    mask = np.random.default_rng(0).integers(0, 2, (4, 5)).astype(np.uint8)
    machine.buffers[Buffer.MBUF][3:23] = mask.ravel()
    work = machine.step(0, instr)
    np.testing.assert_array_equal(machine.buffers[Buffer.VBUF][16:20], mask.sum(axis=1))
    assert work.compare_ops == 20 and work.sram_read_bytes == {"mbuf": 20}
    queues, _, _, cycles, _ = instruction_costs([instr], [work], CFG)
    assert queues == [int(Queue.PREDICT)] and cycles == [1 + 20 // 8]


def test_names_and_opcodes_cannot_be_taken_twice(registered):
    with pytest.raises(ValueError, match="'count_kept' is already defined"):
        isa.register_instruction(registered, _count_kept)
    clash = isa.define_instruction("other", isa.INSTRUCTION_SPECS["topk"].opcode, Queue.PREDICT,
                                   Unit.TOPK, (), (), _cost, "x")
    with pytest.raises(ValueError, match="inconsistent spec"):
        isa.register_instruction(clash, _count_kept)
    assert "other" not in isa.INSTRUCTION_SPECS
    with pytest.raises(ValueError, match="'halt' was not registered"):
        isa.unregister_instruction("halt")


def test_unregistering_restores_the_table():
    before = dict(isa.INSTRUCTION_SPECS)
    isa.register_instruction(COUNT_KEPT, _count_kept)
    isa.unregister_instruction("count_kept")
    assert dict(isa.INSTRUCTION_SPECS) == before and OPCODE not in isa.SPECS_BY_OPCODE
