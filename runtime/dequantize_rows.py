"""DEQUANT's arithmetic: the functional model executes the instruction with it and PAM_SCORES
(runtime/isa_prediction_scores.py) scales the BPU's integer PAM with it, so the fused score
path's float32 values are DEQUANT's bit for bit."""

from __future__ import annotations

import math

import numpy as np

from .sfu_loops import compiled_sfu_loops


def dequantized(src: np.ndarray, col_scale: np.ndarray, row_scale: np.ndarray | None = None,
                scalars: np.ndarray | None = None, bias: np.ndarray | None = None) -> np.ndarray:
    """src * col_scale[c] (* row_scale[r]) (* prod(scalars)) (+ bias[c]) in float64, in that
    order, on one temporary (float32 operands widen exactly); the caller rounds it to float32
    once (assigning into a float32 view rounds as astype does)."""
    # Widened first, multiplied in place: a mixed-type multiply runs numpy's buffered casting
    # loop (issue 16); the same conversions and products.
    y = np.array(src, np.float64)
    y *= np.asarray(col_scale).astype(np.float64)
    if row_scale is not None:
        y *= np.asarray(row_scale).astype(np.float64)[:, None]
    if scalars is not None and len(scalars):
        y *= math.prod(float(s) for s in np.asarray(scalars).ravel())
    if bias is not None:
        y += np.asarray(bias).astype(np.float64)
    return y


def dequantized_float32(src: np.ndarray, col_scale: np.ndarray,
                        row_scale: np.ndarray | None = None, scalars: np.ndarray | None = None,
                        bias: np.ndarray | None = None) -> np.ndarray:
    """`dequantized` rounded to float32 (DEQUANT's result): compiled, in one pass per element
    (runtime/_sfu_loops.c: the same float64 operations in the same order), for the layout
    DEQUANT has, an int32 or float32 [rows, cols] source with float32 vectors of its length;
    anything else through `dequantized`."""
    src = np.asarray(src)
    rows, cols = src.shape if src.ndim == 2 else (-1, -1)
    vectors = ((col_scale, cols), (row_scale, rows), (bias, cols))
    if src.dtype not in (np.int32, np.float32) or not all(
            v is None or (v.dtype == np.float32 and v.shape == (n,)) for v, n in vectors):
        return dequantized(src, col_scale, row_scale, scalars, bias).astype(np.float32)
    scalar = math.prod(float(s) for s in np.asarray(scalars).ravel()) \
        if scalars is not None and len(scalars) else None
    col_scale, row_scale, bias = (None if v is None else np.ascontiguousarray(v)
                                  for v, _ in vectors)
    out = np.empty((rows, cols), np.float32)
    compiled_sfu_loops().dequantize(np.ascontiguousarray(src).reshape(-1), col_scale, row_scale,
                                    scalar, bias, out)
    return out
