"""GELU (erf form) in float64 rounded to float32, bit-identical to `math.erf` per element.

The functional model's GELU is `0.5 * x * (1 + math.erf(x / sqrt(2)))` in float64, rounded
once to float32. Calling `math.erf` per element took a third of a BERT-base run. Here erf is
evaluated vectorised (fdlibm's s_erf.c rational approximations, the algorithm of the C library
behind `math.erf`), which agrees with `math.erf` to a few float64 ulps; an element is rounded
from it only when every float64 GELU value within a bound well above that disagreement rounds
to the same float32, and is recomputed with `math.erf` otherwise (a handful per million).
So the result is the per-element `math.erf` result, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from .isa_fields import GeluMode
from .sfu_loops import compiled_sfu_loops

ERF_BOUND = 1e-15
"""|vectorised erf - math.erf| stays below this (measured: at most 1.2e-16 over 4M points
from -7 to 7; the test checks 2e-16)."""
CHUNK = 1 << 15
"""Elements per step of erf_vectorised."""
SPREAD_PER_X = 0.5 * (ERF_BOUND + 2.0 ** -51) + 2.0 ** -51
"""A GELU value's distance from the math.erf one, per |x|, above the bound worked out in
_gelu_chunk (ERF_BOUND and each rounding at twice its size)."""

_ERX = 8.45062911510467529297e-01
_EFX = 1.28379167095512586316e-01
_PP = (1.28379167095512558561e-01, -3.25042107247001499370e-01, -2.84817495755985104766e-02,
       -5.77027029648944159157e-03, -2.37630166566501626084e-05)
_QQ = (1.0, 3.97917223959155352819e-01, 6.50222499887672944485e-02, 5.08130628187576562776e-03,
       1.32494738004321644526e-04, -3.96022827877536812320e-06)
_PA = (-2.36211856075265944077e-03, 4.14856118683748331666e-01, -3.72207876035701323847e-01,
       3.18346619901161753674e-01, -1.10894694282396677476e-01, 3.54783043256182359371e-02,
       -2.16637559486879084300e-03)
_QA = (1.0, 1.06420880400844228286e-01, 5.40397917702171048937e-01, 7.18286544141962662868e-02,
       1.26171219808761642112e-01, 1.36370839120290507362e-02, 1.19844998467991074170e-02)
_RA = (-9.86494403484714822705e-03, -6.93858572707181764372e-01, -1.05586262253232909814e+01,
       -6.23753324503260060396e+01, -1.62396669462573470355e+02, -1.84605092906711035994e+02,
       -8.12874355063065934246e+01, -9.81432934416914548592e+00)
_SA = (1.0, 1.96512716674392571292e+01, 1.37657754143519042600e+02, 4.34565877475229228821e+02,
       6.45387271733267880336e+02, 4.29008140027567833386e+02, 1.08635005541779435134e+02,
       6.57024977031928170135e+00, -6.04244152148580987438e-02)
_RB = (-9.86494292470009928597e-03, -7.99283237680523006574e-01, -1.77579549177547519889e+01,
       -1.60636384855821916062e+02, -6.37566443368389627722e+02, -1.02509513161107724954e+03,
       -4.83519191608651397019e+02)
_SB = (1.0, 3.03380607434824582924e+01, 3.25792512996573918826e+02, 1.53672958608443695994e+03,
       3.19985821950859553908e+03, 2.55305040643316442583e+03, 4.74528541206955367215e+02,
       -2.24409524465858183362e+01)


def _poly(coefficients: tuple[float, ...], x: np.ndarray) -> np.ndarray:
    """Horner's rule, highest coefficient first (its product with x is the first step)."""
    result = x * coefficients[-1]
    result += coefficients[-2]
    for c in coefficients[-3::-1]:
        result *= x
        result += c
    return result


def erf_vectorised(x: np.ndarray) -> np.ndarray:
    """erf of a float64 array, within ERF_BOUND of `math.erf` (NaN for NaN)."""
    flat = np.ascontiguousarray(x, np.float64).reshape(-1)
    out = np.empty_like(flat)
    for start in range(0, flat.size, CHUNK):  # temporaries stay in the L2 cache
        out[start:start + CHUNK] = _erf_chunk(flat[start:start + CHUNK])
    return out.reshape(np.shape(x))


def _erf_chunk(x: np.ndarray) -> np.ndarray:
    # |x| < 0.84375's formula on every element (most GELU inputs: no gather, no scatter),
    # then the other regions on their (few) elements; each element's arithmetic as fdlibm's.
    with np.errstate(invalid="ignore", over="ignore"):  # elements another region replaces
        z = x * x
        out = _poly(_PP, z)
        out /= _poly(_QQ, z)
        out *= x
        out += x
    a = np.abs(x)
    rest = np.flatnonzero(a >= 0.84375)  # NaN keeps the formula's NaN
    if rest.size:
        out[rest] = _erf_beyond_small(x[rest], a[rest])
    return out


def _erf_beyond_small(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """erf where |x| = `a` >= 0.84375."""
    out = np.ones_like(a)  # |x| >= 6
    middle = np.flatnonzero(a < 1.25)
    s = a[middle] - 1.0
    out[middle] = _ERX + _poly(_PA, s) / _poly(_QA, s)
    for low, high, numerator, denominator in ((1.25, 1 / 0.35, _RA, _SA), (1 / 0.35, 6.0, _RB, _SB)):
        tail = np.flatnonzero((a >= low) & (a < high))
        if not tail.size:
            continue
        at = a[tail]
        s = 1.0 / (at * at)
        ratio = _poly(numerator, s) / _poly(denominator, s)
        top = (at.view(np.uint64) & np.uint64(0xFFFFFFFF00000000)).view(np.float64)
        r = np.exp(-top * top - 0.5625) * np.exp((top - at) * (top + at) + ratio)
        out[tail] = 1.0 - r / at
    return np.where(x < 0, -out, out)


_COEFFICIENTS = np.array(_PP + _QQ)
"""The compiled loop's copy of the |w| < 0.84375 fit (numerator, then denominator)."""


def gelu_erf_float32(x: np.ndarray) -> np.ndarray:
    """float32(0.5 * x * (1 + math.erf(x / sqrt(2)))) per element of float64 `x`: compiled
    (runtime/_sfu_loops.c, one pass per element: the |x| < 0.84375 fit with `_gelu_chunk`'s
    rounding guard, the C library's erf that math.erf calls elsewhere), so the same bits as
    `gelu_erf_float32_numpy`, its reference, at 2-3x its speed."""
    flat = np.ascontiguousarray(x, np.float64).reshape(-1)
    out = np.empty(flat.shape, np.float32)
    compiled_sfu_loops().gelu_erf(flat, out, _COEFFICIENTS, SPREAD_PER_X)
    return out.reshape(np.shape(x))


def gelu_erf_float32_numpy(x: np.ndarray) -> np.ndarray:
    """`gelu_erf_float32` in numpy passes (the compiled loop's reference)."""
    flat = np.ascontiguousarray(x, np.float64).reshape(-1)
    out = np.empty(flat.shape, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):  # inf and NaN inputs take math.erf
        for start in range(0, flat.size, CHUNK):
            out[start:start + CHUNK] = _gelu_chunk(flat[start:start + CHUNK])
    return out.reshape(np.shape(x))


def _gelu_chunk(x: np.ndarray) -> np.ndarray:
    y = _erf_chunk(x / math.sqrt(2.0))
    y += 1.0
    y *= 0.5 * x  # 0.5 * x * (1 + erf), each operation as written
    # Any erf within ERF_BOUND moves 1 + erf by at most ERF_BOUND plus one rounding and y by
    # |0.5 x| times that plus its own rounding; with each rounding taken as 2^-51 of its value
    # and |y| <= |x| (1 + erf is at most 2), by at most SPREAD_PER_X |x|: if both ends of
    # y +- SPREAD_PER_X |x| round to y's float32, so does the math.erf result (rounding is
    # monotonic). A non-finite y fails the test by itself: NaN != NaN, and an infinite y has
    # an infinite spread, so one end is inf - inf = NaN.
    spread = np.abs(x)
    spread *= SPREAD_PER_X
    # Each end in float64, then rounded by astype (a float32 `out` of a float64 subtraction
    # ran numpy's buffered casting loop; the same roundings).
    end = y - spread
    low = end.astype(np.float32)
    np.add(y, spread, out=end)
    unsure = np.flatnonzero(low != end.astype(np.float32))
    result = y.astype(np.float32)
    if unsure.size:  # Python floats are IEEE doubles: the same arithmetic, per element
        scaled = x[unsure] / math.sqrt(2.0)
        exact = [0.5 * v * (1.0 + math.erf(w))
                 for v, w in zip(x[unsure].tolist(), scaled.tolist())]
        result[unsure] = np.array(exact, np.float64).astype(np.float32)
    return result


def gelu(x: np.ndarray, mode: GeluMode) -> np.ndarray:
    """GELU in float64, rounded once to float32 (erf: the C library's `math.erf`, bit for bit,
    `gelu_erf_float32`): the GELU instruction's semantics."""
    if mode is GeluMode.TANH:
        y = 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
        return y.astype(np.float32)
    return gelu_erf_float32(x)
