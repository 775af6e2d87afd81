"""Unit tests of runtime/spls_kernels.py against independent references (docs/design.md
section 6)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from esact_cc.runtime.errors import EsactError
from esact_cc.runtime.spls_kernels import (
    SCORE_BOUND,
    hardware_hlog_encode,
    hlog_encode,
    hlog_levels,
    hlog_matmul,
    hlog_quantize,
    hlog_scale,
    k_from_ratio,
    local_similarity,
    masked_softmax,
    predict_attention,
    reuse_possible,
    topk_mask,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def formula_levels(n: int) -> set[int]:
    """The level set written out as in docs/design.md section 6."""
    levels = {0} | {2 ** i for i in range(n)} | {2 ** i + 2 ** (i + 1) for i in range(n - 2)}
    return levels


# ----------------------------------------------------------------------------- HLog levels


@pytest.mark.parametrize("bits", range(3, 9))
def test_hlog_levels_match_formula(bits: int) -> None:
    levels = hlog_levels(bits)
    assert list(levels) == sorted(formula_levels(bits))
    assert len(levels) == 2 * bits - 1
    assert levels[-1] == 2 ** (bits - 1)


def test_hlog_levels_literal_values() -> None:
    assert list(hlog_levels(3)) == [0, 1, 2, 3, 4]
    assert list(hlog_levels(4)) == [0, 1, 2, 3, 4, 6, 8]
    assert list(hlog_levels(8)) == [0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128]


@pytest.mark.parametrize("bad", [0, 1, 17, 4.0, True, "4"])
def test_hlog_levels_rejects_bad_bits(bad: object) -> None:
    with pytest.raises(EsactError):
        hlog_levels(bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- quantize

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(x=hnp.arrays(np.float64, st.integers(1, 40), elements=finite),
       bits=st.integers(3, 8),
       scale=st.floats(min_value=1e-3, max_value=1e3))
def test_quantize_properties(x: np.ndarray, bits: int, scale: float) -> None:
    q = hlog_quantize(x, bits, scale)
    levels = hlog_levels(bits)
    assert q.dtype == np.int32 and q.shape == x.shape
    assert np.all(np.isin(np.abs(q), levels))
    # Sign kept (or rounded to zero), zero kept.
    assert np.all((np.sign(q) == np.sign(x)) | (q == 0))
    assert np.all(q[x == 0] == 0)
    # Nearest level: no level is strictly closer than the chosen one.
    magnitude = np.abs(x) / scale
    chosen = np.abs(magnitude - np.abs(q))
    best = np.min(np.abs(magnitude[:, None] - levels[None, :]), axis=1)
    assert np.all(chosen <= best + 1e-9 * np.maximum(1.0, magnitude))


def test_quantize_ties_go_to_lower_level_and_clip() -> None:
    x = np.array([0.5, 1.5, 2.5, 3.5, 5.0, 7.0, -7.0, 9.0, -1e9])
    assert list(hlog_quantize(x, 4, 1.0)) == [0, 1, 2, 3, 4, 6, -6, 8, -8]


def test_scale_maps_peak_to_top_level() -> None:
    x = np.array([[-3.2, 0.1], [1.6, 0.0]])
    s = hlog_scale(x, 5)
    assert s == pytest.approx(3.2 / 16)
    assert hlog_quantize(x, 5, s)[0, 0] == -16
    assert hlog_scale(np.zeros(4), 4) == 1.0


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_quantize_rejects_bad_scale(scale: float) -> None:
    with pytest.raises(EsactError):
        hlog_quantize(np.ones(3), 4, scale)


def test_quantize_rejects_nan_input() -> None:
    with pytest.raises(EsactError):
        hlog_quantize(np.array([1.0, np.nan]), 4, 1.0)


# ----------------------------------------------------------------------------- matmul


def reference_shift_adds(a: np.ndarray, b: np.ndarray) -> int:
    """Count shifted terms product by product with Python ints (popcount of each level)."""
    total = 0
    for i, k, j in itertools.product(range(a.shape[0]), range(a.shape[1]), range(b.shape[1])):
        total += abs(int(a[i, k])).bit_count() * abs(int(b[k, j])).bit_count()
    return total


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 6), k=st.integers(1, 6), n=st.integers(1, 6), bits=st.integers(3, 8),
       seed=st.integers(0, 2 ** 31 - 1))
def test_hlog_matmul_exact_and_counted(m: int, k: int, n: int, bits: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    signed = np.concatenate([hlog_levels(bits), -hlog_levels(bits)[1:]])
    a = rng.choice(signed, size=(m, k)).astype(np.int32)
    b = rng.choice(signed, size=(k, n)).astype(np.int32)
    product, shift_adds = hlog_matmul(a, b)
    expected = [[sum(int(a[i, t]) * int(b[t, j]) for t in range(k)) for j in range(n)]
                for i in range(m)]
    assert product.dtype == np.int64
    assert product.tolist() == expected
    assert shift_adds == reference_shift_adds(a, b)
    assert shift_adds <= 4 * m * k * n


def test_hlog_matmul_batched_count_and_largest_bits() -> None:
    a = np.full((2, 3, 4), 96, dtype=np.int32)  # 2 terms each
    b = np.full((2, 4, 5), -3, dtype=np.int32)  # 2 terms each
    product, shift_adds = hlog_matmul(a, b)
    assert np.all(product == 96 * -3 * 4)
    assert shift_adds == 2 * 3 * 4 * 5 * 4


def test_hlog_matmul_rejects_non_levels_and_shapes() -> None:
    with pytest.raises(EsactError):
        hlog_matmul(np.array([[5]]), np.array([[1]]))  # 5 = 101b is not a level
    with pytest.raises(EsactError):
        hlog_matmul(np.ones((2, 3), np.int32), np.ones((2, 3), np.int32))


def test_predict_attention_tracks_true_logits_at_high_precision() -> None:
    rng = np.random.default_rng(0)
    x, wq, wk = rng.normal(size=(9, 16)), rng.normal(size=(16, 16)), rng.normal(size=(16, 16))
    pam, scale, shift_adds = predict_attention(x, wq, wk, num_heads=2, bits=8)
    q, k = x @ wq, x @ wk
    true = np.stack([q[:, h * 8:(h + 1) * 8] @ k[:, h * 8:(h + 1) * 8].T for h in range(2)])
    corr = np.corrcoef((pam * scale).ravel(), true.ravel())[0, 1]
    assert pam.shape == (2, 9, 9) and corr > 0.95
    assert 0 < shift_adds <= 4 * (2 * 9 * 16 * 16 + 2 * 9 * 9 * 8)


# ----------------------------------------------------------------------------- top-k


def test_topk_basic_and_ties_lower_index_wins() -> None:
    scores = np.array([[[1, 3, 3, 2, 3]]])
    assert topk_mask(scores, 2)[0, 0].tolist() == [False, True, True, False, False]
    assert topk_mask(scores, 1)[0, 0].tolist() == [False, True, False, False, False]


def test_topk_k_equals_length_keeps_all_valid() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(2, 5, 5))
    assert topk_mask(scores, 5).all()
    causal = np.tril(np.ones((5, 5), dtype=bool))
    assert np.array_equal(topk_mask(scores, 5, causal), np.broadcast_to(causal, (2, 5, 5)))


def test_topk_k1_picks_argmax_one_row() -> None:
    scores = np.array([[[0.1, -2.0, 0.7, 0.7]]])
    assert topk_mask(scores, 1)[0, 0].tolist() == [False, False, True, False]


def test_topk_masked_rows_keep_only_valid() -> None:
    scores = np.array([[[9.0, 1.0, 2.0, 3.0], [5.0, 6.0, 7.0, 8.0]]])
    valid = np.array([[False, True, False, False], [False, False, False, False]])
    mask = topk_mask(scores, 2, valid)
    # Row 0 has one valid key (fewer than k): keeps it; row 1 has none: keeps nothing.
    assert mask[0, 0].tolist() == [False, True, False, False]
    assert not mask[0, 1].any()
    padding = np.array([True, True, True, False])
    assert topk_mask(scores, 2, padding)[0, 1].tolist() == [False, True, True, False]


@settings(max_examples=60, deadline=None)
@given(scores=hnp.arrays(np.int32, (2, 4, 7), elements=st.integers(-3, 3)),
       k=st.integers(1, 8))
def test_topk_matches_sorted_reference(scores: np.ndarray, k: int) -> None:
    mask = topk_mask(scores, k)
    for h, i in itertools.product(range(2), range(4)):
        order = sorted(range(7), key=lambda j: (-int(scores[h, i, j]), j))[:k]
        assert set(np.flatnonzero(mask[h, i])) == set(order)


def test_k_from_ratio() -> None:
    assert k_from_ratio(0.2, 17) == 4
    assert k_from_ratio(0.2, 15) == 3
    assert k_from_ratio(1.0, 17) == 17
    assert k_from_ratio(0.01, 5) == 1
    with pytest.raises(EsactError):
        k_from_ratio(0.0, 5)


# ----------------------------------------------------------------------------- similarity


def spa_from_rows(rows: list[list[int]], length: int) -> np.ndarray:
    spa = np.zeros((1, len(rows), length), dtype=bool)
    for i, keys in enumerate(rows):
        spa[0, i, keys] = True
    return spa


def test_overlap_reuses_identical_rows_and_reused_are_not_references() -> None:
    # Rows 0, 1, 2 identical: 1 and 2 both reuse 0 (1 is reused, so never a reference).
    spa = spa_from_rows([[0, 1], [0, 1], [0, 1], [2, 3]], 4)
    reuse, keys = local_similarity(spa, None, window=4, threshold=1.0, mode="overlap", k=2)
    assert reuse.tolist() == [-1, 0, 0, -1]
    assert keys.tolist() == [[True, True, True, True]]


def test_window_counts_computed_rows_only() -> None:
    # Computed rows 0,1,2 (distinct); row 3 equals row 0: with window 2 it sees only rows 1, 2.
    rows = [[0, 1], [2, 3], [4, 5], [0, 1]]
    spa = spa_from_rows(rows, 6)
    narrow, _ = local_similarity(spa, None, window=2, threshold=1.0, mode="overlap", k=2)
    wide, _ = local_similarity(spa, None, window=3, threshold=1.0, mode="overlap", k=2)
    assert narrow.tolist() == [-1, -1, -1, -1]
    assert wide.tolist() == [-1, -1, -1, 0]
    # A reused row in between does not use up a window slot: row 2 reuses 1, row 3 still sees 0.
    spa2 = spa_from_rows([[0, 1], [2, 3], [2, 3], [0, 1]], 4)
    reuse2, _ = local_similarity(spa2, None, window=2, threshold=1.0, mode="overlap", k=2)
    assert reuse2.tolist() == [-1, -1, 1, 0]
    none, _ = local_similarity(spa2, None, window=0, threshold=0.0, mode="overlap", k=2)
    assert none.tolist() == [-1, -1, -1, -1]


def test_threshold_is_inclusive_and_averaged_over_heads() -> None:
    # Head 0: overlap 1/2; head 1: overlap 2/2 -> mean 0.75.
    spa = np.zeros((2, 2, 4), dtype=bool)
    spa[0, 0, [0, 1]] = spa[0, 1, [1, 2]] = True
    spa[1, 0, [2, 3]] = spa[1, 1, [2, 3]] = True
    at, _ = local_similarity(spa, None, window=1, threshold=0.75, mode="overlap", k=2)
    above, keys = local_similarity(spa, None, window=1, threshold=0.76, mode="overlap", k=2)
    assert at.tolist() == [-1, 0] and above.tolist() == [-1, -1]
    assert keys.tolist() == [[True, True, True, False], [False, False, True, True]]


def test_key_mask_only_from_computed_rows() -> None:
    spa = spa_from_rows([[0, 1], [0, 1], [1, 2]], 4)
    # Row 1 reuses row 0 at threshold 0.5; row 2 (overlap 1/2 with row 0) also reuses it.
    reuse, keys = local_similarity(spa, None, window=4, threshold=0.5, mode="overlap", k=2)
    assert reuse.tolist() == [-1, 0, 0]
    assert keys.tolist() == [[True, True, False, False]]


def test_cosprob_picks_most_similar_and_nearest_on_ties() -> None:
    prob = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]])
    spa = prob > 0
    reuse, _ = local_similarity(spa, prob, window=2, threshold=0.9, mode="cosprob", k=1)
    assert reuse.tolist() == [-1, -1, 1]
    same = np.ones((1, 3, 3)) / 3
    reuse_same, _ = local_similarity(same > 0, same, window=4, threshold=0.99, mode="cosprob",
                                     k=3)
    assert reuse_same.tolist() == [-1, 0, 0]
    with pytest.raises(EsactError):
        local_similarity(spa, None, window=2, threshold=0.9, mode="cosprob", k=1)
    with pytest.raises(EsactError):
        local_similarity(spa, prob, window=2, threshold=0.9, mode="jaccard", k=1)


def test_threshold_above_one_never_reuses() -> None:
    rng = np.random.default_rng(3)
    spa = topk_mask(rng.normal(size=(2, 6, 6)), 6)
    prob = masked_softmax(rng.normal(size=(2, 6, 6)))
    for mode in ("overlap", "cosprob"):
        reuse, keys = local_similarity(spa, prob, window=4, threshold=1.01, mode=mode, k=6)
        assert (reuse == -1).all() and keys.all()


def test_reuse_possible_bounds_every_score() -> None:
    # Identical rows score 1 (cosine within rounding of it): threshold 1 reuses, above the
    # bound never; window 0 has no reference.
    rng = np.random.default_rng(4)
    row = masked_softmax(rng.normal(size=(3, 1, 9)))
    prob = np.repeat(row, 2, axis=1)
    spa = topk_mask(prob, 3)
    for mode in ("overlap", "cosprob"):
        reuse, _ = local_similarity(spa, prob, window=1, threshold=1.0, mode=mode, k=3)
        assert reuse.tolist() == [-1, 0] and reuse_possible(1, 1.0)
    assert SCORE_BOUND > 1.0 and not reuse_possible(8, 1.01) and not reuse_possible(0, 0.5)


@pytest.mark.parametrize("a, b, expected", [
    # 4-bit levels {0, 1, 2, 3, 4, 6, 8}: 3 = 2^0 + 2^1 and 6 = 2^1 + 2^2 are two terms:
    # 3 x 3 four shifted partial products, 1 x 2 one, 0 x 8 none (zero codes skipped), 6 x 1 two
    ([[3, 1, 0, 6]], [[3], [2], [8], [1]], 4 + 1 + 0 + 2),
    # 6-bit: 24 = 2^3 + 2^4 times 48 = 2^4 + 2^5 four, -32 x 12 two, 16 x -1 one
    ([[24, -32, 16]], [[48], [12], [-1]], 4 + 2 + 1),
])
def test_shift_adds_are_the_hand_count(a, b, expected) -> None:
    product, shift_adds = hlog_matmul(np.array(a), np.array(b))
    assert shift_adds == expected
    assert product.tolist() == (np.array(a) @ np.array(b)).tolist()


def test_hardware_scale_is_float32_as_hlog_writes_it() -> None:
    # max 0.1 at 4 bits: scale 0.0125, float32 0.01250000019; a value 1e-9 above the 2 | 3
    # midpoint in float64 falls below it with the float32 scale the binary's HLOG uses.
    x = np.array([0.1, 2.5 * 0.0125 * (1 + 1e-9)])
    codes, scale = hardware_hlog_encode(x, 4)
    assert scale == float(np.float32(0.0125)) and codes.tolist() == [8, 2]
    assert hlog_encode(x, 4)[0].tolist() == [8, 3]


def test_masked_softmax_zero_on_invalid() -> None:
    p = masked_softmax(np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]),
                       np.array([[True, False, True], [False, False, False]]))
    assert p[0, 1] == 0 and p[0].sum() == pytest.approx(1.0) and not p[1].any()


def test_hlog_matmul_exact_at_16_bits() -> None:
    rng = np.random.default_rng(5)
    signed = np.concatenate([hlog_levels(16), -hlog_levels(16)[1:]])
    a = rng.choice(signed, size=(3, 64)).astype(np.int32)
    b = rng.choice(signed, size=(64, 2)).astype(np.int32)
    product, _ = hlog_matmul(a, b)
    expected = [[sum(int(a[i, t]) * int(b[t, j]) for t in range(64)) for j in range(2)]
                for i in range(3)]
    assert product.tolist() == expected


def test_predict_attention_accepts_pre_encoded_weights() -> None:
    from esact_cc.runtime.spls_kernels import hlog_encode

    rng = np.random.default_rng(2)
    x, wq, wk = rng.normal(size=(5, 8)), rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    bq, bk = rng.normal(size=8), rng.normal(size=8)
    direct = predict_attention(x, wq, wk, 2, 5, bq, bk)
    encoded = predict_attention(x, hlog_encode(wq, 5), hlog_encode(wk, 5), 2, 5, bq, bk)
    assert np.array_equal(direct[0], encoded[0]) and direct[1:] == encoded[1:]


def test_first_reference_keeps_leading_rows_out_of_windows() -> None:
    spa = spa_from_rows([[0, 1], [0, 1], [0, 1], [2, 3]], 4)
    reuse, keys = local_similarity(spa, None, window=4, threshold=1.0, mode="overlap", k=2,
                                   first_reference=1)
    # Row 0 is computed but no reference: row 1 becomes the first reference, row 2 reuses it.
    assert reuse.tolist() == [-1, -1, 1, -1]
    assert keys.tolist() == [[True, True, True, True]]
    with pytest.raises(EsactError):
        local_similarity(spa, None, window=4, threshold=1.0, mode="overlap", k=2,
                         first_reference=-1)
