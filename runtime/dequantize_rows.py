"""DEQUANT's arithmetic: the functional model executes the instruction with it and PAM_SCORES
(runtime/isa_prediction_scores.py) scales the BPU's integer PAM with it, so the fused score
path's float32 values are DEQUANT's bit for bit."""

from __future__ import annotations

import math

import numpy as np


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
