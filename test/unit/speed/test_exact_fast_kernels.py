"""Faster forms of exact kernels give the bits of the forms they replaced (issue 16):
the functional model's INT8 GEMM (onnxruntime's integer GEMM, or float32 K blocks), and the
calibration interpreter's erf without a masked subtraction."""

from __future__ import annotations

import numpy as np
import pytest
from esact_cc.runtime.int8_gemm import FLOAT32_EXACT_K, exact_int8_product, float32_int8_product

from esact_cc.interpreter.interpret_onnx_ops import ONNX_KERNELS


@pytest.mark.parametrize("k", [1, 64, FLOAT32_EXACT_K, FLOAT32_EXACT_K + 1, 3072, 5000])
def test_int8_products_are_the_exact_integer_product(k: int) -> None:
    rng = np.random.default_rng(k)
    a = rng.integers(-128, 128, (7, k), dtype=np.int8)
    b = rng.integers(-128, 128, (k, 5), dtype=np.int8)
    a[0], b[:, 0] = -128, -128  # the largest partial sums: 2^14 per product, 2^24 per block
    a[1], b[:, 1] = 127, -128
    want = a.astype(np.int64) @ b.astype(np.int64)
    floats = float32_int8_product(a, b)  # what the GEMM stores into INT32 directly
    assert floats.dtype == (np.float32 if k <= FLOAT32_EXACT_K else np.float64)
    got = floats.astype(np.int64)
    np.testing.assert_array_equal(got, want)
    assert got[0, 0] == k << 14  # beyond float32's exact integers once k > 1024
    np.testing.assert_array_equal(floats.astype(np.int32), got.astype(np.int32))
    chosen = exact_int8_product(a, b)  # onnxruntime's int32 where exact here, else the floats
    assert chosen.dtype in (np.int32, floats.dtype)
    np.testing.assert_array_equal(chosen.astype(np.int64), want)


def _textbook_erf(x: np.ndarray) -> np.ndarray:
    """The Numerical Recipes erf as the interpreter computed it before (masked subtraction)."""
    z = np.abs(x, dtype=np.float64)
    t = 1.0 / (1.0 + z * 0.5)
    poly = t * 0.17087277
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418,
              0.37409196, 1.00002368):
        poly += c
        poly *= t
    poly += -(z * z) - 1.26551223
    erfc = np.exp(poly) * t
    result = np.subtract(erfc, 1.0)
    np.subtract(1.0, erfc, out=result, where=x >= 0)
    return result.astype(x.dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_erf_keeps_the_bits_of_the_masked_form(dtype: type) -> None:
    rng = np.random.default_rng(0)
    random_bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    with np.errstate(all="ignore"):  # signalling NaNs among the random bits
        values = np.concatenate([
            random_bits, rng.standard_normal(200_000).astype(np.float32) * 3,
            np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 1e-45, -1e-45, 1e-30, -1e-30],
                     np.float32)]).astype(dtype)
        got = ONNX_KERNELS["Erf"]([values], {}, 1)[0]
        expected = _textbook_erf(values)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8))
    assert not np.signbit(got[np.flatnonzero(got == 0)]).any()  # never -0.0, as before


def _whole_array_gelu(x: np.ndarray) -> np.ndarray:
    """The exact GELU as the interpreter computed it before, over the whole array at once."""
    cdf = ONNX_KERNELS["Erf"]([x / np.asarray(np.sqrt(2), x.dtype)], {}, 1)[0]
    cdf += 1
    y = 0.5 * x
    y *= cdf
    return y.astype(x.dtype, copy=False)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(0, 4), (3, 7), (2, 5, 20_000)])  # empty, < 1, > 2 chunks
def test_chunked_gelu_keeps_the_bits_of_the_whole_array_form(dtype: type, shape: tuple) -> None:
    x = (np.random.default_rng(1).standard_normal(shape) * 4).astype(dtype)
    if x.size:
        x.reshape(-1)[:5] = [0.0, -0.0, np.inf, -np.inf, np.nan]
    with np.errstate(all="ignore"):
        got = ONNX_KERNELS["Gelu"]([x], {}, 1)[0]
        expected = _whole_array_gelu(x)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize("zero", [0.0, -0.0])
def test_an_all_zero_attention_mask_changes_no_probability(zero: float) -> None:
    # run_attention and the calibration's probability peak skip adding an all-zero mask.
    from esact_cc.interpreter.interpret_transformer_ops import _attention_probabilities

    scores = (np.random.default_rng(2).standard_normal((6, 9)) * 5).astype(np.float32)
    scores[0, :3], scores[1, :] = -0.0, 0.0  # signed zeros, and a row of zeros
    mask = np.full((6, 9), zero, np.float32)
    with_mask = _attention_probabilities(scores.copy(), mask, None)
    assert with_mask.tobytes() == _attention_probabilities(scores.copy(), None, None).tobytes()
