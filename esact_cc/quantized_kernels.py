"""Numpy kernels of the INT8 datapath (QUANT, INT GEMM, DEQUANT, softmax) as the ISA defines
them (runtime/isa.py): SFU arithmetic in float64, rounded once to float32; integer products
exact. The quantized reference interpreter computes with these, so its output is the INT8
golden value the compiled binary must reproduce; the lowering derives its immediates (QUANT
multipliers, DEQUANT scales, input-channel groups) from the same functions, so the passes need
not import the interpreter.
"""

from __future__ import annotations

import numpy as np

# QUANT_ROWS' kernels (per-token scales), re-exported for the interpreter.
from esact_cc.runtime import online_softmax, online_softmax_compiled
from esact_cc.runtime.int8_codes import round_clip_int8
from esact_cc.runtime.isa import GeluMode
from esact_cc.runtime.isa_token_scales import quantize_rows, row_scales  # noqa: F401

GELU_MODES = {"none": GeluMode.ERF, "tanh": GeluMode.TANH}
"""transformer.gelu's `approximate` values as the GELU instruction's modes."""


def quant_multiplier(scale: float) -> np.float32:
    """The QUANT instruction's float32 immediate for a per-tensor scale: 1 / scale."""
    return np.float32(1.0 / float(np.float32(scale)))


def quantize_int8(x: np.ndarray, scale: float) -> np.ndarray:
    """QUANT: clip(round_half_even(x * mult), -127, 127), the product in float64, NaN -> 0
    (the binary's rounding: runtime/int8_codes.py)."""
    prod = np.asarray(x, np.float32).astype(np.float64)
    prod *= np.float64(quant_multiplier(scale))
    return round_clip_int8(prod)


def int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """INT8 x INT8 -> INT32 (float64 BLAS is exact for these products and sums)."""
    return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64).astype(np.int32)


def dequantize(acc: np.ndarray, scale: np.ndarray, bias: np.ndarray | None,
               row_scale: np.ndarray | None = None) -> np.ndarray:
    """DEQUANT: float32(acc * scale[c] (* row_scale[r]) (+ bias[c])), computed in float64."""
    out = acc.astype(np.float64) * np.asarray(scale, np.float32).astype(np.float64)
    if row_scale is not None:
        out = out * np.asarray(row_scale, np.float32).astype(np.float64)[:, None]
    if bias is not None:
        out = out + np.asarray(bias, np.float32).astype(np.float64)
    return out.astype(np.float32)


def causal_visible(lq: int, lk: int) -> np.ndarray:
    """Boolean [Lq, Lk]: True where key j is visible to query i (j <= i + Lk - Lq)."""
    return np.arange(lk)[None, :] <= np.arange(lq)[:, None] + (lk - lq)


def add_f32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ADD: float32(a + b)."""
    return (np.asarray(a, np.float32).astype(np.float64) + np.asarray(b, np.float32)).astype(np.float32)


def softmax_rows(
    x: np.ndarray, scale: float, add_row: np.ndarray | None, visible: np.ndarray | None
) -> np.ndarray:
    """SOFTMAX: z = x * scale (+ add_row[c]) in float64, invisible positions excluded; the
    online chunked softmax of `runtime/online_softmax.py` (the instruction's definition),
    rounded to float32; a row with no visible position is all 0."""
    z = online_softmax.logits(x, scale, add_row)
    rows = z.reshape(-1, z.shape[-1])
    valid = None if visible is None else np.broadcast_to(visible, z.shape).reshape(rows.shape)
    return online_softmax_compiled.softmax(rows, valid).reshape(z.shape)


def input_runs(k: int, group_size: int | None,
               group_scales: np.ndarray | None) -> list[tuple[int, int]]:
    """(first channel, end channel) of each input-channel run of an INT8 linear: consecutive
    groups with the same scale form one run (one INT32 partial product); one run of all
    channels when it has no group scales."""
    if group_scales is None or group_size is None:
        return [(0, k)]
    runs: list[tuple[int, int]] = []
    for g in range(-(-k // group_size)):
        start, end = g * group_size, min(k, (g + 1) * group_size)
        if runs and float(group_scales[g]) == float(group_scales[runs[-1][0] // group_size]):
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return runs


def input_groups(k: int, group_size: int | None, group_scales: np.ndarray | None,
                 input_scale: float) -> list[tuple[int, int, float]]:
    """(first channel, end channel, scale) of each input-channel run (`input_runs`) of an INT8
    linear with calibrated scales: its group's scale, or `input_scale` without groups."""
    if group_scales is None or group_size is None:
        return [(0, k, float(input_scale))]
    return [(start, end, float(group_scales[start // group_size]))
            for start, end in input_runs(k, group_size, group_scales)]


def linear_dequant_scale(input_scale: float, weight_scale: np.ndarray) -> np.ndarray:
    """FP32 per-channel factor turning the INT32 accumulator of a linear into FP32."""
    return (np.float32(input_scale) * np.asarray(weight_scale, np.float32)).astype(np.float32)


def attention_score_scale(op_scale: float, q_scale: float, k_scale: float) -> np.float32:
    """FP32 factor turning INT32 Q K^T into softmax inputs (the attention scale folded in)."""
    return np.float32(np.float32(q_scale) * np.float32(k_scale) * np.float32(op_scale))


def attention_output_scale(p_scale: float, v_scale: float) -> np.float32:
    """FP32 factor turning INT32 P V into the FP32 attention output."""
    return np.float32(np.float32(p_scale) * np.float32(v_scale))
