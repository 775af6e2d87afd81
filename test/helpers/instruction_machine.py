"""One instruction on the functional model, for kernel tests: a program of it and HALT on the
default hardware config, and SRAM buffer reads and writes."""

from __future__ import annotations

import numpy as np
from esact_cc.runtime.esb import Program, check_program_fits, validate_program
from esact_cc.runtime.functional import Machine
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.isa import Buffer, Instruction

CFG = load_config()


def machine_for(instr: Instruction) -> Machine:
    program = Program([instr, Instruction.make("halt")], CFG.hash)
    validate_program(program)
    return Machine(program, CFG, max(check_program_fits(program, CFG), 1 << 16))


def put(m: Machine, buf: Buffer, addr: int, values: np.ndarray) -> None:
    flat = np.asarray(values).ravel()
    m.buffers[buf][addr:addr + flat.size] = flat


def get(m: Machine, buf: Buffer, addr: int, rows: int, cols: int, stride: int = 0) -> np.ndarray:
    stride = stride or cols
    return np.stack([m.buffers[buf][addr + r * stride: addr + r * stride + cols]
                     for r in range(rows)])
