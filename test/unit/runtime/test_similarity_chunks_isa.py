"""The progressive SIMILARITY instruction (fields first_row, row_count): a sequence of chunk
instructions on the functional model writes the same reuse map, key mask and row mask as one
instruction over all rows, its work adds up to the same totals, and its operands name only the
chunk's part of the map and row mask (what `schedule` derives tokens from)."""

from __future__ import annotations

import numpy as np
import pytest
from esact_cc.runtime.errors import ProgramError
from esact_cc.runtime.esb import Program, check_program_fits, validate_program
from esact_cc.runtime.functional import Machine
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.isa import Buffer, Instruction, SimilarityMode, operand_extent
from esact_cc.runtime.spls_kernels import local_similarity, masked_softmax, topk_mask

CFG = load_config()
HEADS, LENGTH, K = 2, 11, 2
MAP, KEYS, SPA, ROWS = 0, 100, 1000, 400


def similarity(mode: SimilarityMode, first_row: int = 0, row_count: int = 0) -> Instruction:
    return Instruction.make("similarity", map_addr=MAP, key_mask_addr=KEYS, spa_addr=SPA,
                            has_prob=1, prob_addr=0, heads=HEADS, length=LENGTH, keys=LENGTH,
                            window=3, k=K, threshold=0.8, mode=mode, has_row_mask=1,
                            row_mask_addr=ROWS, first_reference=1, first_row=first_row,
                            row_count=row_count)


def run(instrs: list[Instruction], spa: np.ndarray, prob: np.ndarray):
    program = Program([*instrs, Instruction.make("halt")], CFG.hash)
    validate_program(program)
    m = Machine(program, CFG, max(check_program_fits(program, CFG), 1 << 16))
    m.buffers[Buffer.MBUF][SPA:SPA + spa.size] = spa.astype(np.uint8).ravel()
    m.buffers[Buffer.VBUF][:prob.size] = prob.astype(np.float32).ravel()
    m.buffers[Buffer.MBUF][KEYS:KEYS + HEADS * LENGTH] = 9  # stale: the first chunk overwrites
    works = [m.step(i, instr) for i, instr in enumerate(instrs)]
    mbuf = m.buffers[Buffer.MBUF]
    reuse = mbuf[MAP:MAP + 2 * LENGTH].copy().view("<i2")
    return reuse, mbuf[KEYS:KEYS + HEADS * LENGTH].copy(), mbuf[ROWS:ROWS + LENGTH].copy(), works


@pytest.mark.parametrize("mode", [SimilarityMode.OVERLAP, SimilarityMode.COSPROB])
@pytest.mark.parametrize("cuts", [(4,), (1, 2, 3), (3, 7), (5, 10)])
def test_chunks_equal_one_instruction(mode: SimilarityMode, cuts: tuple[int, ...]) -> None:
    rng = np.random.default_rng(11)
    # Rows drawn from 3 patterns (plus noise): neighbours often agree, so rows get reused.
    base = rng.random((HEADS, 3, LENGTH))
    pam = base[:, rng.integers(0, 3, LENGTH), :] + rng.random((HEADS, LENGTH, LENGTH)) * 0.01
    spa, prob = topk_mask(pam, K), masked_softmax(pam)
    whole = run([similarity(mode)], spa, prob)
    bounds = [0, *cuts, LENGTH]
    # The last chunk uses row_count 0 (through the last row), the others an explicit count.
    chunks = [similarity(mode, a, (b - a) if b < LENGTH else 0) for a, b in zip(bounds, bounds[1:])]
    parts = run(chunks, spa, prob)
    name = "overlap" if mode == SimilarityMode.OVERLAP else "cosprob"
    reuse, keys = local_similarity(spa, prob.astype(np.float32).astype(np.float64), 3,
                                   float(np.float32(0.8)), name, K, 1)
    assert (reuse >= 0).any() and (reuse == -1).sum() > 1, "test data must mix reuse and compute"
    for got in (whole, parts):
        np.testing.assert_array_equal(got[0], reuse)
        np.testing.assert_array_equal(got[1], keys.astype(np.uint8).ravel())
        np.testing.assert_array_equal(got[2], (reuse == -1).astype(np.uint8))
    for field in ("compare_ops", "rows_total", "rows_executed"):
        assert sum(getattr(w, field) for w in parts[3]) == getattr(whole[3][0], field)


def test_chunk_operands_cover_only_the_chunk() -> None:
    instr = similarity(SimilarityMode.OVERLAP, 4, 3)
    extents = {(op.addr, op.access): operand_extent(instr, op) for op in instr.spec.operands}
    assert extents[("map_addr", "r")] == (Buffer.MBUF, MAP, MAP + 2 * 4)  # earlier rows' entries
    assert extents[("map_addr", "w")] == (Buffer.MBUF, MAP + 2 * 4, MAP + 2 * 7)
    assert extents[("row_mask_addr", "w")] == (Buffer.MBUF, ROWS + 4, ROWS + 7)
    first = similarity(SimilarityMode.OVERLAP, 0, 4)
    assert [op for op in first.spec.operands if operand_extent(first, op) is not None
            and op.addr == "map_addr" and op.access == "r"] == []  # row 0: nothing earlier


@pytest.mark.parametrize("first_row, row_count", [(11, 0), (8, 4), (0, 12)])
def test_chunk_outside_the_rows_is_rejected(first_row: int, row_count: int) -> None:
    with pytest.raises(ProgramError, match="first_row"):
        validate_program(Program([similarity(SimilarityMode.OVERLAP, first_row, row_count),
                                  Instruction.make("halt")], CFG.hash))
