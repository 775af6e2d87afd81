"""INT8 semantics of `transformer.linear` / `transformer.attention` (their quantized form): the
golden model before any hardware (`interpret_transformer_ops` calls these).

Each op is computed with the integer / FP32 steps the ESACT hardware performs for it, in the
same order: QUANT (FP32 -> INT8, per-tensor scale, round half to even, clip to +-127; or
QUANT_ROWS, one scale per row computed from the row) on the SFU, INT8 x INT8 -> INT32
products on the MAC array, DEQUANT (INT32 * FP32 scale vector (* per-row scale) + FP32 bias)
on the SFU, FP32 softmax. In a quantized function, layer norm, GELU and softmax are the SFU
instructions' row functions too (`run_sfu_*`): rounded once from float64, they differ from the
ONNX kernels' FP32 arithmetic by an ulp now and then, and with per-token scales one ulp in a
row's peak moves the scale of the whole row. The FP32 scale vectors are built by
`linear_dequant_scale` and `attention_*_scale`, which the lowering also uses to fill the
binary's scale tables, so the compiled program and this interpreter multiply by the very same
FP32 numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from xdsl.dialects import func
from xdsl.ir import Operation

from esact_cc.quantized_kernels import (
    add_f32,
    attention_output_scale,
    GELU_MODES,
    attention_score_scale,
    causal_visible,
    dequantize,
    input_runs,
    int_matmul,
    linear_dequant_scale,
    quantize_int8,
    quantize_rows,
    row_scales,
    softmax_rows,
)
from esact_cc.interpreter.interpret_position_scores import PositionTerm, add_int8_position_scores
from esact_cc.runtime.functional import gelu
from esact_cc.runtime.layer_norm_rows import layer_norm_rows

if TYPE_CHECKING:
    from esact_cc.interpreter.reference_interpreter import Interpreter


def in_quantized_function(op: Operation, interp: Interpreter | None = None) -> bool:
    """True when `op`'s function computes some op in INT8 (a module the lowering compiles
    whole for the hardware, so its FP32 ops run as SFU instructions). With `interp`, the
    answer is computed once per function and run (`interp.facts`): walking BERT-base's whole
    function for each of its norms and GELUs was 5% of calibration."""
    parent = op.parent_op()
    while parent is not None and not isinstance(parent, func.FuncOp):
        parent = parent.parent_op()
    if parent is None:
        return False
    key = ("quantized function", parent)
    if interp is not None and key in interp.facts:
        return bool(interp.facts[key])
    quantized = any(getattr(o, "is_quantized", False) for o in parent.walk())
    if interp is not None:
        interp.facts[key] = quantized
    return quantized


def run_sfu_layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray | None,
                       epsilon: float) -> np.ndarray:
    """LAYERNORM: float64 rows rounded once (no beta: zeros, as the lowering loads)."""
    return layer_norm_rows(x, gamma, np.zeros_like(gamma) if beta is None else beta, epsilon)


def run_sfu_gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    """GELU instruction: float64 rounded once (erf form bit for bit `math.erf`)."""
    return gelu(np.asarray(x, np.float32).astype(np.float64), GELU_MODES[approximate])


def run_sfu_softmax(x: np.ndarray) -> np.ndarray:
    """SOFTMAX with scale 1 and no mask over the last axis."""
    return softmax_rows(x, 1.0, None, None)


def run_linear(
    x: np.ndarray,
    weight: np.ndarray,
    weight_scale: np.ndarray,
    bias: np.ndarray | None,
    input_scale: float | None,
    group_size: int | None = None,
    group_scales: np.ndarray | None = None,
    token_scales: bool = False,
) -> np.ndarray:
    """INT8 linear on numpy arrays (x FP32 [..., K], weight INT8 [K, N]): per input
    group, QUANT, INT GEMM and DEQUANT (the bias with the first group); the FP32 partial
    results are added in group order. With `token_scales` (input_scale None) each group run
    is quantized per row with the row's own scale (QUANT_ROWS) and its DEQUANT multiplies
    row r by that scale times the weight's column scale."""
    rows = x.reshape(-1, x.shape[-1])
    out = None
    for start, end in input_runs(rows.shape[1], group_size, group_scales):
        part_in = rows[:, start:end]
        if token_scales:
            scales = row_scales(part_in)
            acc = int_matmul(quantize_rows(part_in, scales), weight[start:end])
            part = dequantize(acc, weight_scale, bias if out is None else None, scales)
        else:
            scale = input_scale if group_scales is None else float(group_scales[start // group_size])
            acc = int_matmul(quantize_int8(part_in, scale), weight[start:end])
            part = dequantize(acc, linear_dequant_scale(scale, weight_scale),
                              bias if out is None else None)
        out = part if out is None else add_f32(out, part)
    assert out is not None
    return out.reshape(*x.shape[:-1], weight.shape[1])


def mask_as_4d(mask: np.ndarray, batch: int, heads: int, lk: int) -> np.ndarray:
    """The additive mask as [B or 1, H or 1, Lq or 1, Lk] FP32 (broadcast only over Lk)."""
    m = np.asarray(mask, np.float32)
    while m.ndim < 4:
        m = m[None]
    return np.broadcast_to(m, (*m.shape[:3], lk))


def mask_is_row_vector(mask_shape: tuple[int, ...]) -> bool:
    """A mask that is one row per (batch, head) goes into SOFTMAX's additive row vector;
    one that varies per query is added by an ADD instruction before the softmax."""
    return len(mask_shape) < 2 or mask_shape[-2] == 1


def run_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None,
    *,
    num_heads: int,
    scale: float,
    causal: bool,
    q_scale: float,
    k_scale: float,
    v_scale: float,
    p_scale: float | None,
    kv_heads: int | None = None,
    positions: Sequence[PositionTerm] = (),
) -> np.ndarray:
    """INT8 attention on numpy arrays ([B, L, D] FP32 each); query head h reads K / V head
    h // (num_heads / kv_heads); `positions`: disentangled terms added after the scores'
    DEQUANT (`interpret_position_scores.add_int8_position_scores`). `p_scale` None: each
    query row's probabilities are quantized with the scale their largest sets (QUANT_ROWS),
    which the output's DEQUANT multiplies back per row."""
    batch, lq, width = q.shape
    lk = k.shape[1]
    kv_heads = kv_heads or num_heads
    d, dv = width // num_heads, v.shape[2] // kv_heads
    group = num_heads // kv_heads
    width_v = dv * num_heads
    qi, ki, vi = quantize_int8(q, q_scale), quantize_int8(k, k_scale), quantize_int8(v, v_scale)
    mask4 = None if mask is None else mask_as_4d(mask, batch, num_heads, lk)
    row_mask = mask is None or mask_is_row_vector(np.shape(mask))
    visible = causal_visible(lq, lk) if causal else None
    s_scale = attention_score_scale(scale, q_scale, k_scale)
    o_scale = attention_output_scale(1.0 if p_scale is None else p_scale, v_scale)
    out = np.empty((batch, lq, width_v), np.float32)
    for b in range(batch):
        for h in range(num_heads):
            g = h // group
            scores_int = int_matmul(qi[b, :, h * d:(h + 1) * d], ki[b, :, g * d:(g + 1) * d].T)
            scores = dequantize(scores_int, np.full(lk, s_scale, np.float32), None)
            if positions:
                scores = add_int8_position_scores(
                    scores, h, qi[b, :, h * d:(h + 1) * d], ki[b, :, g * d:(g + 1) * d],
                    list(positions), scale, q_scale, k_scale)
            if mask4 is None:
                probs = softmax_rows(scores, 1.0, None, visible)
            else:
                m = mask4[b % mask4.shape[0], h % mask4.shape[1]]
                if row_mask:
                    probs = softmax_rows(scores, 1.0, m[0], visible)
                else:
                    probs = softmax_rows(add_f32(scores, np.broadcast_to(m, (lq, lk))), 1.0, None, visible)
            p_rows = row_scales(probs) if p_scale is None else None
            p_int = (quantize_int8(probs, p_scale) if p_rows is None
                     else quantize_rows(probs, p_rows))
            pv = int_matmul(p_int, vi[b, :, g * dv:(g + 1) * dv])
            out[b, :, h * dv:(h + 1) * dv] = dequantize(pv, np.full(dv, o_scale, np.float32), None,
                                                        p_rows)
    return out
