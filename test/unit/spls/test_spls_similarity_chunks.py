"""Progressive local similarity: deciding the rows in chunks (each chunk resumed from the
earlier chunks' reuse-map entries, as the chunked SIMILARITY instruction does) gives exactly
the reuse map and key mask of one call over all rows."""

from __future__ import annotations

import numpy as np
import pytest
from esact_cc.runtime.errors import EsactError
from esact_cc.runtime.spls_kernels import (
    key_mask_of,
    local_similarity,
    local_similarity_rows,
    masked_softmax,
    topk_mask,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def chunked(spa, prob, window, threshold, mode, k, first_reference, cuts):
    """Reuse map and key mask decided chunk by chunk at the sorted row boundaries `cuts`."""
    length = spa.shape[1]
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < length)), length]
    reuse = np.zeros(0, np.int32)
    keys = np.zeros((spa.shape[0], spa.shape[2]), bool)
    for start, stop in zip(bounds, bounds[1:]):
        part = local_similarity_rows(spa, prob, window, threshold, mode, k, first_reference,
                                     reuse, stop)
        assert part.shape == (stop - start,)
        # The key mask accumulates the chunk's computed rows only (the instruction ORs it in).
        keys |= key_mask_of(spa[:, start:stop], part)
        reuse = np.concatenate([reuse, part])
    return reuse, keys


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_chunking_equals_unchunked(data):
    heads = data.draw(st.integers(1, 3))
    length = data.draw(st.integers(1, 12))
    keys = data.draw(st.integers(1, 6))
    k = data.draw(st.integers(1, keys))
    seed = data.draw(st.integers(0, 2**32 - 1))
    mode = data.draw(st.sampled_from(["overlap", "cosprob"]))
    window = data.draw(st.integers(0, length + 1))
    threshold = data.draw(st.sampled_from([0.0, 0.3, 0.5, 0.75, 0.9, 1.0, 1.01]))
    first_reference = data.draw(st.integers(0, length))
    cuts = data.draw(st.lists(st.integers(0, length), max_size=length))
    rng = np.random.default_rng(seed)
    # Few distinct score values, so rows often look alike and reuse happens.
    pam = rng.integers(-2, 3, size=(heads, length, keys)).astype(np.float64)
    spa = topk_mask(pam, k)
    prob = masked_softmax(pam)
    want_reuse, want_keys = local_similarity(spa, prob, window, threshold, mode, k,
                                             first_reference)
    got_reuse, got_keys = chunked(spa, prob, window, threshold, mode, k, first_reference, cuts)
    np.testing.assert_array_equal(got_reuse, want_reuse)
    np.testing.assert_array_equal(got_keys, want_keys)


def test_chunk_reads_only_rows_before_its_end():
    """Rows after the chunk may still be unknown (garbage): the decisions do not change."""
    rng = np.random.default_rng(3)
    pam = rng.integers(-1, 2, size=(2, 8, 5)).astype(np.float64)
    spa, prob = topk_mask(pam, 2), masked_softmax(pam)
    want, _ = local_similarity(spa, prob, 3, 0.5, "cosprob", 2)
    spoiled_spa, spoiled_prob = spa.copy(), prob.copy()
    spoiled_spa[:, 5:] = True
    spoiled_prob[:, 5:] = 7.0
    part = local_similarity_rows(spoiled_spa, spoiled_prob, 3, 0.5, "cosprob", 2, 0, want[:3], 5)
    np.testing.assert_array_equal(part, want[3:5])


def test_reused_rows_stay_out_of_the_window_across_chunks():
    # Rows 0 and 1 identical, row 2 like row 0: with window 1 row 2's only reference is the
    # last COMPUTED row (0), not the reused row 1, also when row 2 starts a new chunk.
    spa = np.array([[[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1]]], bool)
    full, _ = local_similarity(spa, None, 1, 1.0, "overlap", 1)
    assert full.tolist() == [-1, 0, 0, -1]
    assert local_similarity_rows(spa, None, 1, 1.0, "overlap", 1, 0, full[:2], 4).tolist() == [0, -1]


def test_earlier_entries_are_validated():
    spa = np.ones((1, 4, 2), bool)
    with pytest.raises(EsactError, match="earlier reuse map entry 1 = 1"):
        local_similarity_rows(spa, None, 2, 1.0, "overlap", 2, 0, np.array([-1, 1]), 4)
    with pytest.raises(EsactError, match=r"rows \[3, 2\)"):
        local_similarity_rows(spa, None, 2, 1.0, "overlap", 2, 0, np.array([-1, 0, 0]), 2)
