"""The vectorised GELU of the functional model rounds to exactly the float32 of the per-element
`math.erf` formula it replaced, on every region of fdlibm's erf and the far negative tail where
the guard falls back to `math.erf`."""

from __future__ import annotations

import math

import numpy as np

from esact_cc.runtime.gelu_erf import ERF_BOUND, erf_vectorised, gelu_erf_float32

BOUNDARIES = [0.0, 0.84375, 1.25, 1 / 0.35, 6.0]


def per_element_gelu(x: np.ndarray) -> np.ndarray:
    """The former functional.gelu (erf form), rounded to float32 as op_gelu did."""
    erf = np.frompyfunc(math.erf, 1, 1)(x / math.sqrt(2.0)).astype(np.float64)
    with np.errstate(invalid="ignore"):
        return (0.5 * x * (1.0 + erf)).astype(np.float32)


def sample_points() -> np.ndarray:
    rng = np.random.default_rng(0)
    edges = np.array(BOUNDARIES) * math.sqrt(2.0)  # erf's region edges, as GELU inputs
    near_edges = np.concatenate([np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf), edges])
    return np.concatenate([
        rng.standard_normal(200_000) * 3, rng.uniform(-12, 12, 100_000),
        rng.uniform(-1e-3, 1e-3, 10_000), near_edges, -near_edges,
        [np.inf, -np.inf, 1e-300, -1e-300, 40.0, -40.0, -0.0]]).astype(np.float32).astype(np.float64)


def test_gelu_equals_the_math_erf_formula_bit_for_bit() -> None:
    x = sample_points()
    got, expected = gelu_erf_float32(x), per_element_gelu(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.array_equal(got.view(np.int32), expected.view(np.int32))


def test_gelu_keeps_shape_and_nan() -> None:
    x = np.array([[np.nan, 1.0], [-3.0, 0.5]])
    got = gelu_erf_float32(x)
    assert got.shape == (2, 2) and np.isnan(got[0, 0])
    assert np.array_equal(got[1:], per_element_gelu(x)[1:])


def test_vectorised_erf_is_within_a_fifth_of_the_guard_bound() -> None:
    z = np.concatenate([np.linspace(-7, 7, 400_001), np.array(BOUNDARIES), -np.array(BOUNDARIES)])
    expected = np.frompyfunc(math.erf, 1, 1)(z).astype(np.float64)
    assert np.max(np.abs(erf_vectorised(z) - expected)) <= ERF_BOUND / 5
