"""The two kernel rules behind rows whose every key is masked (docs/design.md section 3,
"Masks"): a mask row added inside SOFTMAX rounds like a per-query mask ADDed before it, and
top-k ranks a large finite negative (masked) score like any score but never selects -inf."""

from __future__ import annotations

import numpy as np

from esact_cc.runtime import online_softmax
from esact_cc.runtime.spls_kernels import MASKED_LOGIT, topk_mask, unmasked_keys

F32_MIN = np.finfo(np.float32).min


def test_a_mask_row_inside_softmax_equals_the_mask_added_before() -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((3, 8)).astype(np.float32)
    mask = np.array([0, 0, -1e4, -1e4, 0, -1e4, 0, 0], np.float32)
    rows = np.stack([mask, np.full(8, -1e4, np.float32), np.full(8, F32_MIN, np.float32)])
    for row, s in zip(rows, scores):
        inside = online_softmax.softmax(online_softmax.logits(s[None], 1.0, row), None)
        added = (s.astype(np.float64) + row).astype(np.float32)  # the ADD instruction
        before = online_softmax.softmax(online_softmax.logits(added[None], 1.0, None), None)
        np.testing.assert_array_equal(inside, before)
    # every key at the float32 minimum: the logits are equal, the row attends every key alike
    uniform = online_softmax.softmax(online_softmax.logits(scores[:1], 1.0, rows[2]), None)
    np.testing.assert_array_equal(uniform, np.full((1, 8), 1 / 8, np.float32))


def test_topk_keeps_k_masked_keys_of_a_fully_masked_row_but_never_minus_inf() -> None:
    scores = np.array([[[2.0, 1.0, -1e4 + 3.0, -1e4 + 5.0],   # two unmasked keys, k = 3
                        [F32_MIN, F32_MIN, F32_MIN, F32_MIN],  # every key masked: ties
                        [1.0, -np.inf, -np.inf, -np.inf]]], np.float32)
    keep = topk_mask(scores, 3)
    assert keep[0, 0].tolist() == [True, True, False, True]
    assert keep[0, 1].tolist() == [True, True, True, False]
    assert keep[0, 2].tolist() == [True, False, False, False]
    assert unmasked_keys(scores)[0].tolist() == [[True, True, False, False],
                                                 [False] * 4, [True, False, False, False]]
    assert -1e4 + 1e3 < MASKED_LOGIT < 0
