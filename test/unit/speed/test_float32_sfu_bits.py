"""SFU steps computed in float32 where that is exactly the float64 arithmetic rounded once to
float32 (issue 16: no float64 temporaries, half the bytes per pass)."""

from __future__ import annotations

import itertools

import numpy as np

SPECIALS = np.array(
    [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1.0, -1.0, 0.5, 3.0, 1e-45, -1e-45,
     1.17549435e-38, -1.17549435e-38, 1.1754942e-38, 3.4028235e38, -3.4028235e38,
     1.7014118e38, 16777216.0, 16777217.0, 1 + 2.0**-23, 1 - 2.0**-24, 2.0**-24, -2.0**-25],
    np.float32)


def _rounded_float64_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """What the ADD instruction defines: the float64 sum rounded once to float32."""
    out = np.empty(np.broadcast(a, b).shape, np.float32)
    np.add(a, b, out=out, dtype=np.float64)
    return out


def _same_bits(x: np.ndarray, y: np.ndarray) -> bool:
    return x.dtype == y.dtype == np.float32 and x.tobytes() == y.tobytes()


def test_float32_add_is_rounded_float64_on_special_values() -> None:
    a, b = (np.array(v, np.float32) for v in zip(*itertools.product(SPECIALS, repeat=2)))
    # Signed zeros, infinities, NaN payloads of either operand, overflow, underflow, ties.
    with np.errstate(all="ignore"):
        assert _same_bits(np.add(a, b), _rounded_float64_sum(a, b))


def test_float32_add_is_rounded_float64_on_any_bits() -> None:
    """Uniform bit patterns (every exponent, NaNs and denormals included) and close pairs
    (cancellation and round-to-even ties)."""
    rng = np.random.default_rng(16)
    a = rng.integers(0, 2**32, 1 << 20, dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 2**32, 1 << 20, dtype=np.uint64).astype(np.uint32)
    near = a ^ rng.integers(0, 1 << 12, a.size, dtype=np.uint64).astype(np.uint32)
    with np.errstate(all="ignore"):
        for x, y in ((a, b), (a, near), (a, near ^ np.uint32(1 << 31))):
            fx, fy = x.view(np.float32), y.view(np.float32)
            assert _same_bits(np.add(fx, fy), _rounded_float64_sum(fx, fy))
