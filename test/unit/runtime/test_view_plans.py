"""Machine.view plans each (instruction, operand) once: a shared Instruction (equal words decode
to one object) reuses its views, and every use is charged as before; a plan is never used for
an Instruction it was not made for."""

from __future__ import annotations

import numpy as np
from esact_cc.runtime.esb import Program, check_program_fits, validate_program
from esact_cc.runtime.functional import Machine
from esact_cc.runtime.isa import Buffer, Instruction
from hypothesis import given, settings
from hypothesis import strategies as st
from instruction_machine import CFG, put

ROWS, COLS = 4, 6


def machine(instructions: list[Instruction]) -> Machine:
    program = Program([*instructions, Instruction.make("halt")], CFG.hash)
    validate_program(program)
    m = Machine(program, CFG, max(check_program_fits(program, CFG), 1 << 16))
    m.dram[:4096] = np.arange(4096) % 251
    put(m, Buffer.ABUF, 0, np.arange(1024) % 113)
    return m


def load(dram_addr: int, sram_addr: int, rows: int = ROWS, cols: int = COLS) -> Instruction:
    return Instruction.make("load", buf=int(Buffer.ABUF), dram_addr=dram_addr,
                            sram_addr=sram_addr, rows=rows, cols=cols)


def store(sram_addr: int, dram_addr: int) -> Instruction:
    return Instruction.make("store", buf=int(Buffer.ABUF), dram_addr=dram_addr,
                            sram_addr=sram_addr, rows=ROWS, cols=COLS)


def run(instructions: list[Instruction]) -> tuple[list, Machine]:
    m = machine(instructions)
    with np.errstate(all="ignore"):
        return [m.run_instruction(i, instr) for i, instr in enumerate(instructions)], m


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 3)), min_size=1,
                max_size=12))
def test_shared_instructions_run_as_fresh_copies(steps) -> None:
    """One object per distinct instruction (its views planned once, reused) against a fresh
    object per step: the same work records, DRAM and buffers."""
    shared: dict[tuple, Instruction] = {}
    plan = [(is_load, 64 * a, 32 * b) for is_load, a, b in steps]

    def make(is_load: bool, dram: int, sram: int) -> Instruction:
        return load(dram, sram) if is_load else store(sram, 2048 + dram)

    reused = [shared.setdefault(step, make(*step)) for step in plan]
    fresh = [make(*step) for step in plan]
    work_reused, m_reused = run(reused)
    work_fresh, m_fresh = run(fresh)
    assert work_reused == work_fresh
    assert np.array_equal(m_reused.dram, m_fresh.dram)
    assert all(np.array_equal(m_reused.buffers[b], m_fresh.buffers[b]) for b in Buffer)


def test_a_plan_is_used_only_for_its_own_instruction() -> None:
    """A plan under an id that now names another Instruction (the first one freed and its id
    reused) is made again, not read through."""
    first, second = load(0, 0), load(640, 64, rows=2, cols=3)
    m = machine([first, second])
    m.run_instruction(0, first)
    # As if `second` had been given `first`'s id: its cache entries found under that id.
    for (ident, field, access), entry in list(m._views.items()):
        m._views[(id(second), field, access)] = entry
    work = m.run_instruction(1, second)
    assert work.dram_read_bytes == 2 * 3 and work.sram_write_bytes == {"abuf": 2 * 3}
    assert list(m.buffers[Buffer.ABUF][64:67]) == list(m.dram[640:643].view(np.int8))
