"""Masked instructions are charged for what their masks keep: run through the functional
model (which records the kept rows/keys) and the timing + energy model via run_program."""

import math

import numpy as np
import pytest
from esact_cc.runtime.energy import EnergyModel
from esact_cc.runtime.esb import DataSegment, DebugEntry, IODescriptor, Program
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.isa import Buffer, Instruction, Queue
from esact_cc.runtime.run_program import run_program

CONFIG = load_config()
ENERGY = EnergyModel.from_config(CONFIG)


def M(*queues):
    return sum(1 << int(q) for q in queues)


def masked_gemm_program(row_mask, m=96, k=64, n=80):
    """x [m,k] int8 input, w [k,n] weights and a row mask in DRAM; y = masked x @ w."""
    rng = np.random.default_rng(3)
    w = rng.integers(-100, 100, (k, n), dtype=np.int8)
    mask = np.asarray(row_mask, dtype=np.uint8)
    x_addr, w_addr, mask_addr, y_addr = 0, 1 << 14, 1 << 15, 1 << 16
    program = Program(
        instructions=[
            Instruction.make("load", buf=int(Buffer.ABUF), dram_addr=x_addr, rows=m, cols=k),
            Instruction.make("load", buf=int(Buffer.WBUF), dram_addr=w_addr, rows=k, cols=n),
            Instruction.make("load", buf=int(Buffer.MBUF), dram_addr=mask_addr, rows=1, cols=m,
                             push=M(Queue.COMPUTE)),
            Instruction.make("gemm", m=m, k=k, n=n, has_row_mask=1, row_mask_addr=0,
                             pop=M(Queue.LOAD), push=M(Queue.STORE)),
            Instruction.make("store", buf=int(Buffer.ACC), dram_addr=y_addr, rows=m, cols=n,
                             pop=M(Queue.COMPUTE), push=M(Queue.COMPUTE)),
            Instruction.make("halt", pop=M(Queue.STORE)),
        ],
        config_hash=CONFIG.hash,
        io=[IODescriptor("x", (m, k), "int8", x_addr, "input"),
            IODescriptor("y", (m, n), "int32", y_addr, "output")],
        data_segments=[DataSegment("w", w_addr, w.tobytes()),
                       DataSegment("mask", mask_addr, mask.tobytes())],
        debug={3: DebugEntry("/layer.2/intermediate/dense/MatMul", 2, "ffn1")},
    )
    return program, w


@pytest.mark.parametrize("kept", [96, 50, 17, 1])
def test_masked_gemm_cycles_and_energy_follow_the_kept_rows(kept):
    m, k, n = 96, 64, 80
    rng = np.random.default_rng(kept)
    row_mask = np.zeros(m, np.uint8)
    row_mask[rng.choice(m, kept, replace=False)] = 1
    program, w = masked_gemm_program(row_mask, m, k, n)
    x = rng.integers(-100, 100, (m, k), dtype=np.int8)
    result = run_program(program, {"x": x}, CONFIG)
    ref = x.astype(np.int32) @ w.astype(np.int32)
    kept_rows = row_mask.astype(bool)
    np.testing.assert_array_equal(result.outputs["y"][kept_rows], ref[kept_rows])

    gemm = 3
    # independent statement of the cost: ceil(kept/32) * ceil(n/32) tiles, K deep, + 32 + 32
    assert result.schedule.cycles[gemm] == math.ceil(kept / 32) * math.ceil(n / 32) * k + 64
    comp = result.report["components"]["ffn1"]
    assert comp["macs_dense"] == m * k * n
    assert comp["macs_executed"] == kept * k * n
    assert comp["mask"]["rows_total"] == m and comp["mask"]["rows_kept"] == kept
    assert comp["layers"]["2"]["macs_executed"] == kept * k * n
    # MAC energy share is exactly executed MACs x the per-MAC energy
    assert result.report["energy"]["breakdown_pj"]["mac"] == pytest.approx(kept * k * n * ENERGY.mac_pj)
    assert result.report["total"]["cycles"] >= result.report["roofline_cycles"]
