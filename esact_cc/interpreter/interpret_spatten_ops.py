"""Numpy semantics of the `spatten` dialect for the reference interpreter.

`spatten.select` quantizes Q, K, V to INT8 exactly as the INT8 attention does and runs, per
batch element, runtime/spatten_kernels.begin_layer (the top-k engine) and score_rows per head
over all query rows, the functions the SPATTEN_TOPK / SPATTEN_SCORE instructions' functional
models call on the same codes, heads in the same order, so the compiled program's masks and
scores are these bit for bit (score_rows accumulates row by row: the program may score a head
in query tiles).
"""

from __future__ import annotations

import numpy as np
from xdsl.ir import Operation

from esact_cc.dialects import spatten
from esact_cc.interpreter.interpret_quantized_ops import mask_as_4d
from esact_cc.interpreter.reference_interpreter import Interpreter, operands_by_name, register
from esact_cc.quantized_kernels import causal_visible, quantize_int8
from esact_cc.runtime import spatten_kernels
from esact_cc.runtime.sanger_kernels import score_scale

Array = np.ndarray


def run_select(op: spatten.SelectOp, v: dict[str, Array]) -> tuple[Array, Array, Array, Array]:
    q, k, val = v["q"], v["k"], v["v"]
    batch, length, width = q.shape
    heads = op.num_heads.value.data
    d, dv = width // heads, val.shape[2] // heads
    q8, k8 = quantize_int8(q, op.q_scale.value.data), quantize_int8(k, op.k_scale.value.data)
    v8 = quantize_int8(val, op.v_scale.value.data)
    mask4 = None if v.get("mask") is None else mask_as_4d(v["mask"], batch, heads, length)
    visible = causal_visible(length, length) if op.causal is not None else None
    factor = score_scale(op.scale.value.data, op.q_scale.value.data, op.k_scale.value.data,
                         spatten_kernels.INT8_BITS)
    outs = (np.zeros((batch, length), np.int8), np.zeros((batch, heads), np.int8),
            np.zeros((batch, length), np.float32), np.zeros((batch, heads), np.float32))
    for b in range(batch):
        prev = (None, None) if "scores" not in v else (v["scores"][b], v["head_scores"][b])
        tokens, kept, s, hs = spatten_kernels.begin_layer(
            *prev, op.token_keep.value.data, op.head_keep.value.data, length, heads,
            op.protect.value.data)
        for h in range(heads):
            add = None if mask4 is None else mask4[b % mask4.shape[0], h % mask4.shape[1]]
            spatten_kernels.score_rows(
                s, hs[h:h + 1], 0, q8[b, :, h * d:(h + 1) * d], k8[b, :, h * d:(h + 1) * d],
                v8[b, :, h * dv:(h + 1) * dv], factor, add, visible,
                op.requant_threshold.value.data)
        for out, value in zip(outs, (tokens, kept, s, hs)):
            out[b] = value
    return outs


@register("spatten.select")
def _select(interp: Interpreter, op: Operation, args: list[Array]) -> tuple[Array, ...]:
    assert isinstance(op, spatten.SelectOp)
    return run_select(op, operands_by_name(op, args))
