"""A row-masked SFU step (DEQUANT, ADD, GELU, QUANT, SOFTMAX after a row-masked GEMM or
attention) processes, and is charged cycles, SFU elements and SRAM bytes for, the rows its row
mask keeps only; the other rows of dst are left as they were. Hand counts: 3 of 8 rows kept,
16 columns, the default 64 SFU lanes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from esact_cc.runtime.isa import BUFFER_DTYPES, INSTRUCTION_SPECS, Buffer, Instruction
from instruction_machine import CFG, get, machine_for, put

ROWS, COLS = 8, 16
ROW_MASK = np.array([0, 1, 0, 0, 1, 0, 0, 1], np.uint8)
KEPT = int(ROW_MASK.sum())  # 3
MASK_AT, SRC, DST, OTHER, VEC = 0, 0, 512, 1024, 2048
SENTINEL = -7.0  # dst rows a dropped row leaves as they were
assert CFG.sfu_lanes == 64  # the hand counts below

# opcode -> (fields, (src buffer, src dtype), dst buffer, lane passes)
STEPS = {
    "dequant": ({"scale_addr": VEC}, (Buffer.ACC, np.int32), Buffer.VBUF, 1),
    "add": ({"a_addr": SRC, "b_addr": OTHER}, (Buffer.VBUF, np.float32), Buffer.VBUF, 1),
    "gelu": ({"mode": 0}, (Buffer.VBUF, np.float32), Buffer.VBUF, 2),
    "quant": ({"mult": 0.5}, (Buffer.VBUF, np.float32), Buffer.ABUF, 1),
    "softmax": ({"scale": 0.25}, (Buffer.VBUF, np.float32), Buffer.VBUF, 4),
}


def instruction(name: str, masked: bool) -> Instruction:
    fields, _, _, _ = STEPS[name]
    src = {} if name == "add" else {"src_addr": SRC}
    return Instruction.make(name, dst_addr=DST, rows=ROWS, cols=COLS, **src, **fields,
                            has_row_mask=int(masked), row_mask_addr=MASK_AT)


def run(name: str, masked: bool, row_mask: np.ndarray = ROW_MASK):
    instr = instruction(name, masked)
    m = machine_for(instr)
    _, (src_buf, dtype), dst_buf, _ = STEPS[name]
    rng = np.random.default_rng(3)
    values = rng.integers(-500, 500, ROWS * COLS) if dtype is np.int32 else \
        rng.standard_normal(ROWS * COLS)
    put(m, src_buf, SRC, values.astype(dtype))
    put(m, Buffer.VBUF, OTHER, rng.standard_normal(ROWS * COLS).astype(np.float32))
    put(m, Buffer.VBUF, VEC, rng.random(COLS).astype(np.float32))
    put(m, dst_buf, DST, np.full(ROWS * COLS, SENTINEL).astype(m.buffers[dst_buf].dtype))
    put(m, Buffer.MBUF, MASK_AT, row_mask)
    work = m.step(0, instr)
    return work, get(m, dst_buf, DST, ROWS, COLS), instr


@pytest.mark.parametrize("name", sorted(STEPS))
def test_a_row_masked_step_moves_and_evaluates_its_kept_rows_only(name: str) -> None:
    work, _, instr = run(name, masked=True)
    _, (src_buf, dtype), dst_buf, passes = STEPS[name]
    src_bytes = KEPT * COLS * np.dtype(dtype).itemsize
    dst_bytes = KEPT * COLS * BUFFER_DTYPES[dst_buf].itemsize
    reads = {"mbuf": ROWS}  # the row mask itself, read whole to find the kept rows
    if name == "add":  # a and b, both FP32 rows in VBUF
        reads["vbuf"] = 2 * src_bytes
    elif name == "dequant":  # ACC rows, the per-column scale vector (VBUF) whole
        reads.update(acc=src_bytes, vbuf=4 * COLS)
    else:
        reads["vbuf"] = src_bytes
    assert work.sram_read_bytes == reads
    assert work.sram_write_bytes == {dst_buf.name.lower(): dst_bytes}
    assert work.sfu_elements == KEPT * COLS == 48
    assert (work.rows_total, work.rows_executed) == (ROWS, KEPT)
    # cycles: ceil(48 elements x passes / 64 lanes) + 1 issue (dense: 128 elements)
    assert INSTRUCTION_SPECS[name].cost(instr.fields, CFG, work) == -(-48 * passes // 64) + 1


@pytest.mark.parametrize("name", sorted(STEPS))
def test_kept_rows_are_the_unmasked_values_and_dropped_rows_are_untouched(name: str) -> None:
    masked_work, masked, _ = run(name, masked=True)
    dense_work, dense, _ = run(name, masked=False)
    kept = ROW_MASK != 0
    np.testing.assert_array_equal(masked[kept].view(np.uint8), dense[kept].view(np.uint8))
    assert (masked[~kept] == np.asarray(SENTINEL).astype(masked.dtype)).all()
    assert dense_work.sfu_elements == ROWS * COLS
    assert dense_work.rows_total == 0  # an unmasked step records no row mask


def test_an_unmasked_step_is_charged_every_row_as_before() -> None:
    work, _, _ = run("dequant", masked=False)
    assert work.sram_read_bytes == {"acc": 4 * ROWS * COLS, "vbuf": 4 * COLS}
    assert work.sram_write_bytes == {"vbuf": 4 * ROWS * COLS}



@settings(max_examples=25, deadline=None)
@given(st.sampled_from(sorted(STEPS)), st.lists(st.booleans(), min_size=ROWS, max_size=ROWS))
def test_any_row_mask_keeps_the_unmasked_rows_bit_for_bit(name: str, keep: list[bool]) -> None:
    row_mask = np.array(keep, np.uint8)
    work, masked, _ = run(name, masked=True, row_mask=row_mask)
    _, dense, _ = run(name, masked=False)
    kept = row_mask != 0
    np.testing.assert_array_equal(masked[kept].view(np.uint8), dense[kept].view(np.uint8))
    assert (masked[~kept] == np.asarray(SENTINEL).astype(masked.dtype)).all()
    dst_buffer = STEPS[name][2]
    assert work.sram_write_bytes == {dst_buffer.name.lower(): int(kept.sum()) * COLS
                                     * BUFFER_DTYPES[dst_buffer].itemsize}
    assert work.sfu_elements == int(kept.sum()) * COLS
