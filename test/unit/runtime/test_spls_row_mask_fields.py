"""The ISA fields the sparse lowering added: ATTN_QK's row mask and SIMILARITY's computed-row
mask output, against numpy references (and the encoding round trip of the new fields)."""

from __future__ import annotations

from instruction_machine import machine_for, put
import numpy as np
import pytest
from esact_cc.runtime.encoding import decode_instruction, encode_instruction
from esact_cc.runtime.isa import Buffer, Instruction, SimilarityMode
from esact_cc.runtime.spls_kernels import local_similarity

RNG = np.random.default_rng(7)




@pytest.mark.parametrize("with_elem_mask", [False, True])
def test_attn_qk_row_mask_skips_and_keeps_rows(with_elem_mask: bool) -> None:
    lq, lk, d = 6, 5, 4
    q = RNG.integers(-128, 128, (lq, d)).astype(np.int8)
    k = RNG.integers(-128, 128, (lk, d)).astype(np.int8)
    rows = np.array([1, 0, 1, 1, 0, 0], np.uint8)
    elem = RNG.integers(0, 2, (lq, lk)).astype(np.uint8) if with_elem_mask else np.ones((lq, lk), np.uint8)
    instr = Instruction.make("attn_qk", scores_addr=0, q_addr=0, k_addr=100, lq=lq, lk=lk, d=d,
                             has_mask=int(with_elem_mask), mask_addr=64, has_row_mask=1,
                             row_mask_addr=0)
    m = machine_for(instr)
    put(m, Buffer.ABUF, 0, q)
    put(m, Buffer.ABUF, 100, k)
    put(m, Buffer.MBUF, 0, rows)
    put(m, Buffer.MBUF, 64, elem)
    stale = np.full(lq * lk, -7, np.int32)
    put(m, Buffer.ACC, 0, stale)
    work = m.step(0, instr)
    got = m.buffers[Buffer.ACC][:lq * lk].reshape(lq, lk)
    full = np.where(elem != 0, q.astype(np.int64) @ k.T.astype(np.int64), 0)
    kept = rows != 0
    np.testing.assert_array_equal(got[kept], full[kept])
    np.testing.assert_array_equal(got[~kept], -7)  # dropped rows are not written
    assert work.macs_dense == lq * lk * d
    assert work.macs_executed == int(elem[kept].sum()) * d
    assert (work.rows_total, work.rows_executed) == (lq, int(kept.sum()))


@pytest.mark.parametrize("mode", [SimilarityMode.OVERLAP, SimilarityMode.COSPROB])
def test_similarity_writes_the_computed_row_mask(mode: SimilarityMode) -> None:
    heads, length, k = 2, 8, 2
    groups = RNG.integers(0, 3, length)
    base = RNG.random((heads, 3, length))
    scores = base[:, groups, :] + RNG.random((heads, length, length)) * 0.01
    spa = np.zeros(scores.shape, bool)
    for h in range(heads):
        for i in range(length):
            spa[h, i, np.argsort(-scores[h, i], kind="stable")[:k]] = True
    prob = (np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)).astype(np.float32)
    instr = Instruction.make("similarity", map_addr=0, key_mask_addr=100, spa_addr=1000,
                             has_prob=1, prob_addr=0, heads=heads, length=length, keys=length,
                             window=3, k=k, threshold=0.9, mode=mode, has_row_mask=1,
                             row_mask_addr=300)
    m = machine_for(instr)
    put(m, Buffer.MBUF, 1000, spa.astype(np.uint8))
    put(m, Buffer.VBUF, 0, prob)
    m.step(0, instr)
    reuse, _ = local_similarity(spa, prob.astype(np.float64), 3, float(np.float32(0.9)),
                                "overlap" if mode == SimilarityMode.OVERLAP else "cosprob", k)
    assert (reuse >= 0).any(), "the test data must produce some reuse"
    np.testing.assert_array_equal(m.buffers[Buffer.MBUF][300:300 + length],
                                  (reuse == -1).astype(np.uint8))


def test_new_fields_round_trip_through_the_encoding() -> None:
    for instr in (Instruction.make("attn_qk", lq=3, lk=3, d=2, has_row_mask=1, row_mask_addr=77),
                  Instruction.make("similarity", heads=1, length=4, keys=4, k=1, threshold=0.5,
                                   has_row_mask=1, row_mask_addr=4095)):
        assert decode_instruction(encode_instruction(instr)) == instr


def test_topk_add_mask_ranks_masked_scores_and_excludes_masked_keys() -> None:
    rows, cols, k = 3, 6, 2
    scores = RNG.standard_normal((rows, cols)).astype(np.float32)
    add = np.array([0.0, -0.5, np.finfo(np.float32).min, 0.25, -1.0e4, 0.0], np.float32)
    instr = Instruction.make("topk", dst_addr=0, src_buf=Buffer.VBUF, src_addr=0, rows=rows,
                             cols=cols, k=k, has_add_mask=1, add_mask_addr=100)
    m = machine_for(instr)
    put(m, Buffer.VBUF, 0, scores)
    put(m, Buffer.VBUF, 100, add)
    m.step(0, instr)
    got = m.buffers[Buffer.MBUF][:rows * cols].reshape(rows, cols) != 0
    valid = add > -1.0e4
    for r in range(rows):
        ranked = [c for c in np.argsort(-(scores[r] + add), kind="stable") if valid[c]]
        assert set(np.flatnonzero(got[r])) == set(ranked[:k])
    assert not got[:, [2, 4]].any()
