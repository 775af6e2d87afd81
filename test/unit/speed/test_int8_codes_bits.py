"""The faster forms of INT8 quantization and dequantization (issue 16) give the bits of the
forms they replaced: clip before rint with a NaN found by one sum (int8_codes), products
widened first and taken in place (QUANT_ROWS, DEQUANT)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from esact_cc.runtime.dequantize_rows import dequantized
from esact_cc.runtime.int8_codes import round_clip_int8
from esact_cc.runtime.isa_token_scales import quantize_rows, row_scales


def former_round_clip_int8(y: np.ndarray) -> np.ndarray:
    """rint, NaN to 0 by a mask, clip by max / min, int8: the form replaced."""
    y = np.rint(y)
    np.copyto(y, 0.0, where=np.isnan(y))
    np.maximum(y, -127.0, out=y)
    np.minimum(y, 127.0, out=y)
    return y.astype(np.int8)


def float32_patterns(count: int, seed: int) -> np.ndarray:
    """Uniform float32 bit patterns (NaNs, infinities, denormals) and values near half-integers
    within the INT8 range (the rounding ties)."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**32, count, dtype=np.uint64).astype(np.uint32).view(np.float32)
    halves = (rng.integers(-260, 260, count) / 2).astype(np.float32)
    nudged = np.nextafter(halves, np.where(rng.random(count) < 0.5, -np.inf, np.inf))
    return np.concatenate([bits, halves, nudged.astype(np.float32)])


@pytest.mark.parametrize("multiplier", [1.0, 1 / 0.0123, 3e38, np.inf])
def test_round_clip_int8_is_the_former_rounding(multiplier: float) -> None:
    x = float32_patterns(1 << 18, 3)
    with np.errstate(all="ignore"):
        product = x.astype(np.float64) * np.float64(np.float32(multiplier))
        assert round_clip_int8(product.copy()).tobytes() == \
            former_round_clip_int8(product).tobytes()


def test_quantize_rows_is_the_mixed_type_product_rounded() -> None:
    x = float32_patterns(1 << 12, 4).reshape(-1, 64)
    x[0] = 0.0  # a row whose scale is the fallback 1.0
    x[1] = 1e-38  # a scale that underflows: its multiplier is inf, and 0 * inf is NaN
    x[1, 0] = 0.0
    with np.errstate(all="ignore"):
        scales = row_scales(x)
        mult = (1.0 / scales.astype(np.float64)).astype(np.float32)
        want = former_round_clip_int8(np.multiply(x, mult.astype(np.float64)[:, None],
                                                  dtype=np.float64))
        assert quantize_rows(x, scales).tobytes() == want.tobytes()


def test_dequantized_is_the_mixed_type_product() -> None:
    rng = np.random.default_rng(5)
    acc = rng.integers(-2**31, 2**31, (16, 48), dtype=np.int64).astype(np.int32)
    acc[0, :4] = [-2**31, 2**31 - 1, 0, -1]
    col, row, bias = (float32_patterns(n, 6)[:n] for n in (48, 16, 48))
    with np.errstate(all="ignore"):
        want = np.multiply(acc, col, dtype=np.float64)
        want *= row.astype(np.float64)[:, None]
        want *= 0.5
        want += bias.astype(np.float64)
        got = dequantized(acc, col, row, np.array([0.5], np.float32), bias)
    assert got.tobytes() == want.tobytes()


def test_nan_codes_are_zero_without_a_cast_of_nan() -> None:
    """NaN becomes 0 before the cast (a NaN cast to int8 is undefined: numpy warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codes = round_clip_int8(np.array([np.nan, -np.nan, 2.5, -np.inf]))
    assert codes.tolist() == [0, 0, 2, -127]
