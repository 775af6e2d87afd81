"""Numpy semantics of the `spls` dialect for the reference interpreter.

The prediction ops call `runtime/spls_kernels.py` (the same functions the functional model of
the SPLS instructions uses), once per batch element. The masks they produce are operands of
`transformer.linear` / `transformer.attention`, whose semantics (`interpret_transformer_ops`,
`interpret_masks`) apply them to the dense op's values: with k-ratio 1 and no reuse the SPLS
program is bit-identical to the dense one.
"""

from __future__ import annotations

import numpy as np
from xdsl.ir import Operation

from esact_cc.dialects import spls
from esact_cc.interpreter.reference_interpreter import Interpreter, operands_by_name, register
from esact_cc.quantized_kernels import causal_visible
from esact_cc.runtime.dequantize_rows import dequantized
from esact_cc.runtime.spls_kernels import (
    hardware_hlog_scale,
    hlog_quantize,
    local_similarity,
    masked_softmax,
    predict_attention_from_codes,
    topk_mask,
)

Array = np.ndarray


# ----------------------------------------------------------------------------- prediction


def run_hlog_quantize(x: Array, bits: int, scale: float | None) -> tuple[Array, Array]:
    """Codes and the scale of each batch element (x's dims before its last two): a dynamic
    scale is each element's own, so the elements of a batch stay independent."""
    batch_shape = x.shape[:-2]
    elements = x.reshape(-1, *x.shape[-2:])
    # a dynamic scale is rounded to float32 before quantizing, as HLOG does
    scales = [hardware_hlog_scale(e, bits) if scale is None else float(scale) for e in elements]
    codes = np.stack([hlog_quantize(e, bits, s) for e, s in zip(elements, scales)])
    return codes.reshape(x.shape), np.array(scales, dtype=np.float32).reshape(batch_shape)


def run_predict_attention(x: Array, x_scale: Array, wq: Array, wq_scale: Array, wk: Array,
                          wk_scale: Array, bq: Array, bk: Array, mask: Array | None,
                          num_heads: int, bits: int, scale: float, causal: bool,
                          kv_heads: int | None = None) -> Array:
    """PAM [B, H, L, L] f32: scaled predicted logits plus the additive mask (float32, as the
    hardware ADDs it: a masked key is a very negative number that top-k ranks last, -inf only
    where the mask is -inf), -inf where causal hides the key; `kv_heads`: K^ per K head, read
    by its group of query heads."""
    batch, length, _ = x.shape
    out = np.empty((batch, num_heads, length, length), dtype=np.float32)
    for b in range(batch):
        pam, pam_scale, _ = predict_attention_from_codes(
            x[b], float(x_scale[b]), wq, float(wq_scale), wk, float(wk_scale), num_heads, bits,
            bq, bk, kv_heads)
        # PAM_SCORES' scaling: DEQUANT's (pam x scale per column x s_Q s_K, one rounding)
        out[b] = dequantized(pam, np.full(length, scale, np.float32), scalars=np.array([pam_scale]))
    if mask is not None:
        out = out + np.broadcast_to(np.asarray(mask, np.float32), out.shape)
    if causal:
        visible = causal_visible(length, length)
        out = np.where(visible, out, np.float32(-np.inf))
    return out


def run_topk(scores: Array, k: int) -> Array:
    """SPA [B, H, Lq, Lk]: per batch element, row-wise top-k of the finite scores."""
    return np.stack([topk_mask(s, k, np.isfinite(s)) for s in scores])


def run_local_similarity(spa: Array, pam: Array | None, mode: str, window: int, threshold: float,
                         k: int, first_reference: int = 0) -> tuple[Array, Array]:
    reuse, keys = [], []
    for b in range(spa.shape[0]):
        prob = None if pam is None else masked_softmax(pam[b], np.isfinite(pam[b]))
        r, m = local_similarity(spa[b], prob, window, threshold, mode, k, first_reference)
        reuse.append(r)
        keys.append(m)
    return np.stack(reuse).astype(np.int32), np.stack(keys)


@register("spls.hlog_quantize")
def _hlog_quantize(interp: Interpreter, op: Operation, args: list[Array]) -> list[Array]:
    assert isinstance(op, spls.HLogQuantizeOp)
    scale = op.scale.value.data if op.scale is not None else None
    codes, s = run_hlog_quantize(args[0], op.bits.value.data, scale)
    return [codes, s]


@register("spls.predict_attention")
def _predict_attention(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    assert isinstance(op, spls.PredictAttentionOp)
    v = operands_by_name(op, args)
    return run_predict_attention(
        v["x"], v["x_scale"], v["wq"], v["wq_scale"], v["wk"], v["wk_scale"], v["bq"], v["bk"],
        v.get("mask"), op.num_heads.value.data, op.bits.value.data, op.scale.value.data,
        op.causal is not None, op.key_heads)


@register("spls.topk")
def _topk(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    assert isinstance(op, spls.TopKOp)
    return run_topk(args[0], op.k.value.data)


@register("spls.local_similarity")
def _local_similarity(interp: Interpreter, op: Operation, args: list[Array]) -> list[Array]:
    assert isinstance(op, spls.LocalSimilarityOp)
    pam = args[1] if op.pam is not None else None
    first = op.first_reference.value.data if op.first_reference is not None else 0
    reuse, keys = run_local_similarity(args[0], pam, op.mode.data, op.window.value.data,
                                       op.threshold.value.data, op.k.value.data, first)
    return [reuse, keys]
