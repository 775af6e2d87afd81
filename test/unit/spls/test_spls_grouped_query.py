"""Grouped- / multi-query SPLS prediction: K^ is predicted once per K head and query head h
reads K^ head h // group. The PAM equals the prediction with W_K's head blocks repeated per
query head (what the prediction computed before) bit for bit: repeating columns changes no
per-tensor HLog scale. Only the K projection's shift-adds shrink, by the group factor."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esact_cc.runtime.errors import EsactError
from esact_cc.runtime.spls_kernels import (hlog_encode, hlog_matmul, hlog_quantize,
                                            hlog_scale, predict_attention_from_codes)


def _repeat_heads(array: np.ndarray, kv_heads: int, group: int) -> np.ndarray:
    lead, width = array.shape[:-1], array.shape[-1]
    blocks = array.reshape(*lead, kv_heads, width // kv_heads)
    return np.repeat(blocks, group, axis=-2).reshape(*lead, width * group)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 31), kv_heads=st.sampled_from([1, 2, 3]),
       group=st.sampled_from([1, 2, 4]), bits=st.integers(3, 7), length=st.integers(1, 9))
def test_grouped_prediction_equals_the_repeated_one(seed: int, kv_heads: int, group: int,
                                                     bits: int, length: int) -> None:
    rng = np.random.default_rng(seed)
    heads, d, dim = kv_heads * group, 4, 12
    x = rng.normal(size=(length, dim))
    wq, wk = rng.normal(size=(dim, heads * d)), rng.normal(size=(dim, kv_heads * d))
    bq, bk = rng.normal(size=heads * d), rng.normal(size=kv_heads * d)
    (xc, xs), (qc, qs), (kc, ks) = (hlog_encode(a, bits) for a in (x, wq, wk))
    pam, scale, shift_adds = predict_attention_from_codes(xc, xs, qc, qs, kc, ks, heads, bits,
                                                          bq, bk, kv_heads)
    repeated = _repeat_heads(kc, kv_heads, group)
    pam_r, scale_r, shift_adds_r = predict_attention_from_codes(
        xc, xs, qc, qs, repeated, ks, heads, bits, bq, _repeat_heads(bk, kv_heads, group))
    np.testing.assert_array_equal(pam, pam_r)
    assert scale == scale_r
    # The K projection is the only difference: group - 1 copies of it fewer.
    _, k_projection = hlog_matmul(xc, kc)
    assert shift_adds_r - shift_adds == (group - 1) * k_projection


def test_query_head_reads_its_key_head() -> None:
    """Head by head against a direct computation: query head h = K head h // group."""
    rng = np.random.default_rng(0)
    heads, kv_heads, d, dim, length, bits = 6, 2, 4, 8, 5, 5
    x, wq, wk = (rng.normal(size=s) for s in ((length, dim), (dim, heads * d),
                                              (dim, kv_heads * d)))
    (xc, xs), (qc, qs), (kc, ks) = (hlog_encode(a, bits) for a in (x, wq, wk))
    pam, _, _ = predict_attention_from_codes(xc, xs, qc, qs, kc, ks, heads, bits,
                                             kv_heads=kv_heads)
    q_real = hlog_matmul(xc, qc)[0] * (xs * qs)
    k_real = hlog_matmul(xc, kc)[0] * (xs * ks)
    q_codes = hlog_quantize(q_real, bits, hlog_scale(q_real, bits))
    k_codes = hlog_quantize(k_real, bits, hlog_scale(k_real, bits))
    for h in range(heads):
        g = h // (heads // kv_heads)
        expected = q_codes[:, h * d:(h + 1) * d].astype(np.int64) \
            @ k_codes[:, g * d:(g + 1) * d].T.astype(np.int64)
        np.testing.assert_array_equal(pam[h], expected)


@pytest.mark.parametrize("kv_heads, k_cols", [(4, 4), (2, 8), (3, 6), (0, 8)])
def test_key_width_that_is_not_kv_heads_blocks_is_refused(kv_heads: int, k_cols: int) -> None:
    codes = np.zeros((3, 8), np.int32)
    with pytest.raises(EsactError, match="predict attention"):
        predict_attention_from_codes(np.zeros((2, 3), np.int32), 1.0, codes, 1.0,
                                     np.zeros((3, k_cols), np.int32), 1.0, 4, 4,
                                     kv_heads=kv_heads)
