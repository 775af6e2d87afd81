"""A whole-row SIMILARITY of one row chunk is charged the SPA / prob rows it reads: the rows it
decides and the last `window` computed rows before the chunk (runtime/similarity_reads.py),
not all L rows of each head; hand counts against the reuse map the chunks before it wrote."""

from __future__ import annotations

import numpy as np
import pytest
from esact_cc.runtime.isa import SimilarityMode
from esact_cc.runtime.spls_kernels import masked_softmax, topk_mask
from test_similarity_chunks_isa import HEADS, LENGTH, run, similarity

WINDOW, FIRST_REFERENCE = 3, 1  # test_similarity_chunks_isa's instruction


@pytest.mark.parametrize("mode", [SimilarityMode.OVERLAP, SimilarityMode.COSPROB])
def test_chunk_reads_its_rows_and_its_references(mode: SimilarityMode) -> None:
    rng = np.random.default_rng(11)
    base = rng.random((HEADS, 3, LENGTH))
    pam = base[:, rng.integers(0, 3, LENGTH), :] + rng.random((HEADS, LENGTH, LENGTH)) * 0.01
    spa, prob = topk_mask(pam, 2), masked_softmax(pam)
    bounds = [0, 1, 5, 8, LENGTH]  # chunk 0 lies before first_reference but for nothing
    chunks = [similarity(mode, a, b - a) for a, b in zip(bounds, bounds[1:])]
    reuse, _, _, works = run(chunks, spa, prob)
    assert (reuse >= 0).any() and (reuse == -1).sum() > 1
    for (first, stop), work in zip(zip(bounds, bounds[1:]), works):
        computed = [j for j in range(FIRST_REFERENCE, first) if reuse[j] == -1]
        rows = (stop - max(first, FIRST_REFERENCE)) + min(WINDOW, len(computed))
        spa_bytes = HEADS * rows * LENGTH
        # MBUF besides SPA: the earlier map entries and, after the first chunk, the key mask
        other = 2 * first + (HEADS * LENGTH if first else 0)
        assert work.sram_read_bytes["mbuf"] == spa_bytes + other
        assert work.sram_read_bytes["vbuf"] == 4 * spa_bytes  # has_prob: FP32 rows
    # All L rows per head per chunk before: the last chunk alone read 11 rows of each head.
    assert works[-1].sram_read_bytes["vbuf"] < 4 * HEADS * LENGTH * LENGTH
