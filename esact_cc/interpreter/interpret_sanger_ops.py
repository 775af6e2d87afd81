"""Numpy semantics of the `sanger` dialect for the reference interpreter.

`sanger.predict_mask` quantizes Q and K to INT8 exactly as the INT8 attention does
(`quantize_int8` with the attention's scales) and calls `runtime/sanger_kernels.predict_mask`
per batch element and head, the function the SANGER_PREDICT instruction's functional model
calls on the same codes, so the compiled program's masks are this interpreter's bit for bit.
"""

from __future__ import annotations

import numpy as np
from xdsl.ir import Operation

from esact_cc.dialects import sanger
from esact_cc.interpreter.interpret_quantized_ops import mask_as_4d
from esact_cc.interpreter.reference_interpreter import Interpreter, operands_by_name, register
from esact_cc.quantized_kernels import causal_visible, quantize_int8
from esact_cc.runtime.sanger_kernels import predict_mask, score_scale

Array = np.ndarray


def run_predict_mask(q: Array, k: Array, mask: Array | None, *, num_heads: int, bits: int,
                     threshold: float, q_scale: float, k_scale: float, scale: float,
                     causal: bool, normalize_qk: bool = False) -> Array:
    """The element mask [B, H, Lq, Lk] (bool) of `sanger.predict_mask`."""
    batch, lq, width = q.shape
    lk, d = k.shape[1], width // num_heads
    q8, k8 = quantize_int8(q, q_scale), quantize_int8(k, k_scale)
    mask4 = None if mask is None else mask_as_4d(mask, batch, num_heads, lk)
    visible = causal_visible(lq, lk) if causal else None
    factor = score_scale(scale, q_scale, k_scale, bits, normalize_qk)
    out = np.zeros((batch, num_heads, lq, lk), dtype=bool)
    for b in range(batch):
        for h in range(num_heads):
            add = None if mask4 is None else mask4[b % mask4.shape[0], h % mask4.shape[1]]
            cols = slice(h * d, (h + 1) * d)
            out[b, h] = predict_mask(q8[b, :, cols], k8[b, :, cols], bits, factor, threshold,
                                     add, visible, normalize_qk)
    return out


@register("sanger.predict_mask")
def _predict_mask(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    assert isinstance(op, sanger.PredictMaskOp)
    v = operands_by_name(op, args)
    return run_predict_mask(
        v["q"], v["k"], v.get("mask"), num_heads=op.num_heads.value.data,
        bits=op.bits.value.data, threshold=op.threshold.value.data,
        q_scale=op.q_scale.value.data, k_scale=op.k_scale.value.data,
        scale=op.scale.value.data, causal=op.causal is not None,
        normalize_qk=op.normalize_qk is not None)
