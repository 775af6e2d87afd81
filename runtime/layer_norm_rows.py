"""LAYERNORM's row function: the functional model executes the instruction with it and the INT8
reference interpreter computes a quantized module's `transformer.layer_norm` with it, so the
two agree bit for bit (a one-ulp difference would move a per-token activation scale)."""

from __future__ import annotations

import numpy as np


def layer_norm_rows(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis, in float64 (eps the
    instruction's float32 field), rounded once to float32."""
    x64 = np.asarray(x, np.float64)
    mean = x64.mean(axis=-1, keepdims=True)
    centred = x64 - mean  # once, and the temporaries below reused (issue 16): the same values
    var = np.square(centred).mean(axis=-1, keepdims=True)  # what `** 2` computes
    centred /= np.sqrt(var + float(np.float32(eps)))
    centred *= np.asarray(gamma, np.float32).astype(np.float64)
    centred += np.asarray(beta, np.float32).astype(np.float64)
    return centred.astype(np.float32)
