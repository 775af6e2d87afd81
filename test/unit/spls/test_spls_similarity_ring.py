"""Local similarity with a reference ring (the SIMILARITY instruction's long-sequence form):
only the chunk's SPA / prob rows plus `window` ring slots on chip give exactly the reuse map
and key mask of one call over all rows, for any chunking, window and mode."""

from __future__ import annotations

import numpy as np
import pytest
from esact_cc.runtime.errors import EsactError
from esact_cc.runtime.spls_kernels import (
    key_mask_of,
    local_similarity,
    local_similarity_ring,
    masked_softmax,
    ring_references,
    ring_slots,
    topk_mask,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def ring_chunked(spa, prob, window, threshold, mode, k, first_reference, cuts):
    """Map and key mask decided chunk by chunk, each chunk seeing its own rows and the ring."""
    heads, length, keys = spa.shape
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < length)), length]
    ring_dtype = np.float32 if mode == "cosprob" else np.uint8
    ring = np.zeros((ring_slots(window, length), heads, keys), ring_dtype)
    reuse = np.zeros(0, np.int32)
    key_mask = np.zeros((heads, keys), bool)
    for start, stop in zip(bounds, bounds[1:]):
        part, ring = local_similarity_ring(
            spa[:, start:stop], None if prob is None else prob[:, start:stop], ring, window,
            threshold, mode, k, first_reference, reuse, length)
        key_mask |= key_mask_of(spa[:, start:stop], part)
        reuse = np.concatenate([reuse, part])
    return reuse, key_mask


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_ring_chunking_equals_unchunked(data):
    heads = data.draw(st.integers(1, 3))
    length = data.draw(st.integers(1, 14))
    keys = data.draw(st.integers(1, 6))
    k = data.draw(st.integers(1, keys))
    mode = data.draw(st.sampled_from(["overlap", "cosprob"]))
    window = data.draw(st.integers(0, length + 1))
    threshold = data.draw(st.sampled_from([0.0, 0.3, 0.5, 0.75, 0.9, 1.0, 1.01]))
    first_reference = data.draw(st.integers(0, length))
    cuts = data.draw(st.lists(st.integers(0, length), max_size=length))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    # Few distinct score rows so that rows repeat and reuse happens.
    base = rng.integers(-4, 5, size=(heads, 3, keys))
    scores = base[:, rng.integers(0, 3, size=length)]
    spa = topk_mask(scores, k)
    prob = masked_softmax(scores).astype(np.float32) if mode == "cosprob" else None
    expected = local_similarity(spa, prob, window, threshold, mode, k, first_reference)
    got = ring_chunked(spa, prob, window, threshold, mode, k, first_reference, cuts)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_ring_slot_follows_from_the_map():
    # Rows 0, 2, 3, 5 computed (1 and 4 reused), first_reference 1: refs 2, 3, 5 -> slots 0, 1, 2;
    # with two slots row 5 overwrote row 2's slot 0.
    earlier = np.array([-1, 0, -1, -1, 3, -1])
    assert ring_references(earlier, 1, 2) == [(3, 1), (5, 0)]
    assert ring_references(earlier, 0, 8) == [(0, 0), (2, 1), (3, 2), (5, 3)]
    assert ring_slots(0, 5) == 1 and ring_slots(8, 5) == 5 and ring_slots(4, 100) == 4


def test_ring_of_the_wrong_shape_is_refused():
    spa = np.ones((2, 3, 4), bool)
    with pytest.raises(EsactError, match=r"ring \(4, 2, 4\) is not \[3, 2, 4\]"):
        local_similarity_ring(spa, None, np.zeros((4, 2, 4), np.uint8), 3, 0.5, "overlap", 2,
                              0, np.zeros(0), 10)
