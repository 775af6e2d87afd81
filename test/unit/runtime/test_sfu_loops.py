"""The compiled GELU, DEQUANT and QUANT_ROWS loops (runtime/_sfu_loops.c) give their numpy
references' bits: on random tiles (hypothesis), on the values where the rounding guard or the
special cases decide, and on every layout DEQUANT and QUANT_ROWS meet."""

from __future__ import annotations

import math

import numpy as np
import pytest
from esact_cc.runtime.dequantize_rows import dequantized, dequantized_float32
from esact_cc.runtime.gelu_erf import gelu_erf_float32, gelu_erf_float32_numpy
from esact_cc.runtime.isa_token_scales import quantize_rows, row_scales, row_scales_and_codes
from esact_cc.runtime.sfu_loops import compiled_sfu_loops
from hypothesis import given, settings
from hypothesis import strategies as st

SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, -1e-310, 1e-300, 0.84375 * math.sqrt(2),
           -0.84375 * math.sqrt(2), 1.25 * math.sqrt(2), 6 * math.sqrt(2), 40.0, -40.0]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float32 and np.array_equal(a.view(np.uint32),
                                                               b.view(np.uint32))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.01, 20), st.integers(0, 3000))
def test_gelu_matches_the_numpy_form(seed: int, spread: float, size: int) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(size) * spread).astype(np.float32).astype(np.float64)
    assert same_bits(gelu_erf_float32(x), gelu_erf_float32_numpy(x))


def test_gelu_special_values_and_every_erf_region() -> None:
    x = np.array(SPECIAL + list(np.linspace(-8, 8, 200001)), np.float64)
    got = gelu_erf_float32(x)
    assert same_bits(got, gelu_erf_float32_numpy(x))
    exact = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x.tolist()])
    assert same_bits(got, exact.astype(np.float32))
    assert gelu_erf_float32(np.zeros((3, 0))).shape == (3, 0)


def dequant_case(rng: np.random.Generator, rows: int, cols: int, src_dtype: str,
                 with_row: bool, n_scalars: int, with_bias: bool) -> tuple:
    src = (rng.integers(-2**31, 2**31 - 1, (rows, cols)).astype(np.int32) if src_dtype == "int32"
           else (rng.standard_normal((rows, cols)) * 1e4).astype(np.float32))
    col = (rng.standard_normal(cols) * 1e-3).astype(np.float32)
    row = rng.random(rows).astype(np.float32) if with_row else None
    scalars = (rng.random(n_scalars) * 4).astype(np.float32) if n_scalars else None
    bias = rng.standard_normal(cols).astype(np.float32) if with_bias else None
    return src, col, row, scalars, bias


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 70),
       st.sampled_from(["int32", "float32"]), st.booleans(), st.integers(0, 2), st.booleans())
def test_dequant_matches_the_numpy_form(seed, rows, cols, src_dtype, with_row, n_scalars,
                                        with_bias) -> None:
    args = dequant_case(np.random.default_rng(seed), rows, cols, src_dtype, with_row, n_scalars,
                        with_bias)
    assert same_bits(dequantized_float32(*args), dequantized(*args).astype(np.float32))


def test_dequant_strided_views_and_other_layouts() -> None:
    rng = np.random.default_rng(3)
    src, col, row, scalars, bias = dequant_case(rng, 16, 24, "int32", True, 1, True)
    wide = np.zeros((16, 40), np.int32)
    wide[:, 8:32] = src  # a strided view, as a buffer's row stride gives
    got = dequantized_float32(wide[:, 8:32], col, row, scalars, bias)
    assert same_bits(got, dequantized(src, col, row, scalars, bias).astype(np.float32))
    # Broadcast scales or a float64 source are not the compiled layout: the numpy form runs.
    for args in ((src, col[:1], None, None, None), (src.astype(np.float64), col, row, None, bias),
                 (src, col.astype(np.float64), None, None, None)):
        assert same_bits(dequantized_float32(*args), dequantized(*args).astype(np.float32))


def quant_rows_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scales = row_scales(x)
    with np.errstate(over="ignore"):  # a scale near float32's least: 1 / scale overflows
        return scales, quantize_rows(x, scales)


def assert_quant_rows_match(x: np.ndarray) -> None:
    scales, codes = row_scales_and_codes(x)
    want_scales, want_codes = quant_rows_reference(x)
    assert scales.dtype == np.float32 and codes.dtype == np.int8
    assert np.array_equal(scales.view(np.uint32), want_scales.view(np.uint32))
    assert np.array_equal(codes, want_codes)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.integers(1, 40),
       st.sampled_from(["normal", "bits", "ties"]))
def test_quant_rows_matches_the_numpy_form(seed: int, rows: int, cols: int, kind: str) -> None:
    """Random tiles, every float32 bit pattern (NaN, inf, subnormals: the SIMD body and the
    scalar tail of a row both meet them) and exact half-way products (ties to even)."""
    rng = np.random.default_rng(seed)
    if kind == "normal":
        x = (rng.standard_normal((rows, cols)) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
    elif kind == "bits":
        x = rng.integers(0, 2**32, (rows, cols), dtype=np.uint64).astype(np.uint32).view(
            np.float32)
        # Quiet NaNs, as arithmetic makes: numpy's float32 fmax reduction skips a signaling
        # NaN wrongly (its result is the max of the entries after it); the compiled loop
        # skips any NaN, as QUANT_ROWS says.
        x[np.isnan(x)] = np.nan
    else:  # the row's peak 127 gives scale 1: every k + 0.5 is a tie
        x = (rng.integers(-254, 255, (rows, cols)) / 2).astype(np.float32)
        x[:, 0] = 127
    assert_quant_rows_match(x)


def test_quant_rows_special_rows_and_layouts() -> None:
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((9, 37)) * 3).astype(np.float32)
    x[0, 3], x[1], x[2], x[3, 9], x[4] = np.nan, np.nan, 0.0, np.inf, 1e-40
    x[5], x[6, 30], x[7, 1] = -np.inf, np.nan, -3e38
    assert_quant_rows_match(x)
    wide = np.zeros((9, 50), np.float32)
    wide[:, 5:42] = x  # a buffer's row stride: read in place
    assert_quant_rows_match(wide[:, 5:42])
    for other in (x[::-1], x[:, ::2], x.astype(np.float64), x.T):
        assert_quant_rows_match(other)  # copied into the compiled layout first


def test_the_compiled_loops_refuse_wrong_buffers() -> None:
    loops = compiled_sfu_loops()
    out = np.empty(4, np.float32)
    with pytest.raises(ValueError, match="x"):
        loops.gelu_erf(np.zeros(4, np.float32), out, np.zeros(11), 0.0)
    with pytest.raises(ValueError, match="out"):
        loops.gelu_erf(np.zeros(5), out, np.zeros(11), 0.0)
    with pytest.raises(ValueError, match="row_scale"):
        loops.dequantize(np.zeros(4, np.int32), np.ones(2, np.float32), np.ones(3, np.float32),
                         None, None, out)
    codes = np.empty((2, 2), np.int8)
    for x in (np.zeros((2, 2)), np.zeros(4, np.float32), np.zeros((2, 4), np.float32)[:, ::2]):
        with pytest.raises(ValueError, match="x"):
            loops.quant_rows(x, out[:2], codes)
    with pytest.raises(ValueError, match="scales"):
        loops.quant_rows(np.zeros((2, 2), np.float32), out, codes)
    with pytest.raises(ValueError, match="codes"):
        loops.quant_rows(np.zeros((2, 2), np.float32), out[:2], codes.astype(np.uint8))


def test_without_the_compiled_loops_the_error_says_how_to_build_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from esact_cc.runtime import sfu_loops
    from esact_cc.runtime.errors import InstallError

    monkeypatch.setattr(sfu_loops, "_compiled", None)
    monkeypatch.setattr(sfu_loops, "_missing", "No module named x", raising=False)
    with pytest.raises(InstallError, match=r"SFU loops are not importable \(No module named x\)"
                                           r".*pip install -e \."):
        gelu_erf_float32(np.zeros(4))
