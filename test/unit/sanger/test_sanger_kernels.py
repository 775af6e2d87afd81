"""runtime/sanger_kernels.py: low-bit re-quantization, predicted probabilities, the threshold
mask and pack-and-split, checked against hand-computed values and Sanger's own rules."""

from __future__ import annotations

import numpy as np
import pytest

from esact_cc.runtime import sanger_kernels as sk


def test_requantize_maps_int8_codes_onto_the_symmetric_low_bit_levels():
    codes = np.array([-127, -64, -9, 0, 9, 10, 63, 127], np.int8)
    # level(4) = 7: c * 7 / 127 rounded half to even, clipped to +-7.
    assert sk.level(4) == 7 and sk.level(2) == 1 and sk.level(8) == 127
    np.testing.assert_array_equal(sk.requantize(codes, 4), [-7, -4, 0, 0, 0, 1, 3, 7])
    np.testing.assert_array_equal(sk.requantize(codes, 8), codes.astype(np.int64))
    assert set(sk.requantize(np.arange(-127, 128), 2).tolist()) == {-1, 0, 1}


def test_score_scale_undoes_both_quantizations_and_applies_the_logit_scale():
    factor = sk.score_scale(0.125, q_scale=0.02, k_scale=0.05, bits=4)
    expected = 0.02 * (127 / 7) * 0.05 * (127 / 7) * 0.125
    assert factor.dtype == np.float32 and factor == pytest.approx(expected, rel=1e-6)


def test_predicted_probabilities_are_a_softmax_of_the_low_bit_scores():
    rng = np.random.default_rng(0)
    q8, k8 = rng.integers(-127, 128, (5, 8)), rng.integers(-127, 128, (6, 8))
    probs = sk.predicted_probabilities(q8, k8, 4, np.float32(0.01), None, None)
    z = (sk.requantize(q8, 4) @ sk.requantize(k8, 4).T) * np.float64(np.float32(0.01))
    expected = np.exp(z - z.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, rtol=1e-6)


def test_masked_and_invisible_keys_get_no_probability():
    q8 = np.ones((3, 4), np.int64) * 60
    k8 = np.ones((3, 4), np.int64) * 60
    add = np.array([0.0, -10000.0, 0.0], np.float32)
    visible = np.tril(np.ones((3, 3), bool))
    probs = sk.predicted_probabilities(q8, k8, 4, np.float32(0.1), add, visible)
    assert np.all(probs[:, 1] == 0)  # the additive -10000 underflows exp
    assert probs[0, 2] == 0 and probs[1, 2] == 0  # causal
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_threshold_keeps_probabilities_strictly_above_it_and_each_rows_top_key():
    probs = np.array([[0.5, 0.3, 0.2, 0.0],
                      [0.25, 0.25, 0.25, 0.25],
                      [0.0, 0.0, 0.0, 0.0]], np.float32)
    keep = sk.threshold_mask(probs, 0.25)
    np.testing.assert_array_equal(keep, [[1, 1, 0, 0],   # 0.3 > 0.25, 0.2 is not
                                         [1, 0, 0, 0],   # none above: the top key (lowest index)
                                         [0, 0, 0, 0]])  # nothing visible: nothing kept
    assert sk.threshold_mask(probs, 0.0)[0].tolist() == [True, True, True, False]


def test_a_higher_threshold_never_keeps_more():
    rng = np.random.default_rng(1)
    q8, k8 = rng.integers(-127, 128, (16, 8)), rng.integers(-127, 128, (16, 8))
    kept = [sk.predict_mask(q8, k8, 4, np.float32(0.02), t).sum() for t in (0.0, 0.02, 0.1, 0.5)]
    assert kept == sorted(kept, reverse=True) and kept[0] > kept[-1] >= 16


def test_pack_and_split_counts_sub_rows_of_at_most_pes_keys_per_port_segment():
    mask = np.zeros((3, 130), bool)
    mask[0, :40] = True  # segment 0: 40 keys -> ceil(40 / 16) = 3 sub-rows
    mask[0, 64:65] = True  # segment 1: 1 key -> 1
    mask[1, 128:130] = True  # segment 2 (2 keys, the padded tail) -> 1
    # row 2 is empty: every segment skipped
    assert sk.pack_and_split_subrows(mask) == 5
    assert sk.pack_and_split_subrows(mask, ports=8, pes=4) == 5 * 2 + 1 + 1
    assert sk.pack_and_split_subrows(np.ones((2, 64), bool)) == 2 * 64 // sk.SANGER_PES_PER_SUBROW
