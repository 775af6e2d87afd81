"""Numpy semantics of the `transformer` dialect (float32, matching onnxruntime on real models).

`run_linear`, `run_attention`, ... compute each op on numpy arrays (the INT8 forms in
`interpret_quantized_ops`, the masks in `interpret_masks`); they are the golden model
every later stage (quantize, SPLS, lowering) is checked against. GELU, softmax and layer norm
are by definition the ONNX ops of the same name, so they run through the ONNX kernels
(`esact_cc.interpreter.interpret_onnx_ops`): one definition per function; in a quantized
function (the binary's golden model) they are the SFU instructions' (`interpret_quantized_ops`). RMSNorm, SiLU, the
gate product and rotary embedding (no ONNX op before opset 23), and ReLU, run the SFU
instructions' row functions (`runtime/isa_modern_blocks.py`), so binaries match bit for bit.
`transformer.host` runs its region's `onnx` ops through the same interpreter that runs the
`onnx` dialect; in a quantized function, as the binary does: its exported model on onnxruntime
(`host_region_onnxruntime`).

Registration with the reference interpreter is at the bottom.
"""

from __future__ import annotations

import numpy as np
from xdsl.ir import Operation

from esact_cc.interpreter import interpret_masks as masks
from esact_cc.interpreter import interpret_quantized_ops as quantized_ops
from esact_cc.dialects import transformer
from esact_cc.dialects.gemm_ops import ATTENTION_SCALES
from esact_cc.interpreter.interpret_onnx_ops import run_kernel
from esact_cc.interpreter.interpret_position_scores import fp32_position_scores, position_terms
from esact_cc.quantized_kernels import causal_visible
from esact_cc.interpreter.reference_interpreter import Interpreter, operands_by_name, register
from esact_cc.runtime.isa_modern_blocks import mul_f32, relu, rms_norm_rows, rope_rows, silu

Array = np.ndarray


def run_linear(x: Array, weight: Array, bias: Array | None) -> Array:
    """transformer.linear: x [..., in] @ weight [in, out] (+ bias [out])."""
    y = np.matmul(x, weight)
    if bias is not None:
        if np.result_type(y, bias) == y.dtype:
            y += bias  # in place: the same sums, no second array
        else:
            y = y + bias
    return y.astype(np.float32, copy=False)


def run_attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None,
    num_heads: int,
    scale: float,
    causal: bool,
    kv_heads: int | None = None,
    position: Array | None = None,
) -> Array:
    """FP32 transformer.attention on [B, L, D] arrays; heads are contiguous slices of D, query
    head h reads K / V head h // (num_heads / kv_heads); `position`: the disentangled position
    scores [B, H, Lq, Lk], added before the scale (`interpret_position_scores`)."""
    batch, lq, width = q.shape
    lk = k.shape[1]
    kv_heads = kv_heads or num_heads
    d, dv = width // num_heads, v.shape[2] // kv_heads
    width_v = dv * num_heads
    if kv_heads != num_heads:  # grouped-query: each K / V head serves a run of query heads
        group = num_heads // kv_heads
        k = np.repeat(k.reshape(batch, lk, kv_heads, d), group, axis=2).reshape(batch, lk, -1)
        v = np.repeat(v.reshape(batch, lk, kv_heads, dv), group, axis=2).reshape(batch, lk, -1)
    # [B, H, L, d]: the exporters' reshape + transpose head split. Contiguous copies: numpy's
    # batched matmul on strided views skips BLAS and is ~300x slower (H7, calibration time).
    qh = np.ascontiguousarray(q.reshape(batch, lq, num_heads, d).transpose(0, 2, 1, 3))
    kh = np.ascontiguousarray(k.reshape(batch, lk, num_heads, d).transpose(0, 2, 3, 1))
    vh = np.ascontiguousarray(v.reshape(batch, lk, num_heads, dv).transpose(0, 2, 1, 3))
    if mask is not None and not np.any(mask):  # adding zeros changes no probability
        mask = None
    if mask is not None:
        mask = np.broadcast_to(mask.astype(np.float32, copy=False), (batch, num_heads, lq, lk))
    visible = causal_visible(lq, lk) if causal else None
    out = np.empty((batch, lq, num_heads, dv), np.float32)
    # One (batch, head) at a time: its [Lq, Lk] scores stay in cache through the softmax.
    for b in range(batch):
        for h in range(num_heads):
            raw = np.matmul(qh[b, h], kh[b, h])
            if position is not None:
                raw = raw + position[b, h]
            probs = _attention_probabilities(raw * np.float32(scale),
                                             None if mask is None else mask[b, h], visible)
            out[b, :, h] = np.matmul(probs, vh[b, h])
    return out.reshape(batch, lq, width_v)


def _attention_probabilities(scores: Array, mask: Array | None, visible: Array | None) -> Array:
    """softmax(scores + mask) over keys, hidden keys at 0 and rows with no visible key all 0."""
    if mask is not None:
        scores += mask
    if visible is not None:
        scores = np.where(visible, scores, np.float32(-np.inf))
    with np.errstate(invalid="ignore"):  # a row of -inf gives NaN here, replaced below
        probs = run_kernel("Softmax", [scores.astype(np.float32, copy=False)], {"axis": -1}, 1)[0]
    hidden_rows = ~np.isfinite(scores).any(axis=-1)
    if hidden_rows.any():  # no visible key: all 0, the hardware's rule (sdpa's NaN guard too)
        probs = np.where(hidden_rows[..., None], np.float32(0), probs)
    return probs


def run_layer_norm(x: Array, gamma: Array, beta: Array | None, epsilon: float) -> Array:
    """transformer.layer_norm: ONNX LayerNormalization over the last axis."""
    inputs: list[Array | None] = [x, gamma] + ([beta] if beta is not None else [])
    return run_kernel("LayerNormalization", inputs, {"axis": -1, "epsilon": epsilon}, 1)[0]


def run_gelu(x: Array, approximate: str) -> Array:
    """transformer.gelu: ONNX Gelu (approximate "none" = erf form, "tanh")."""
    return run_kernel("Gelu", [x], {"approximate": approximate}, 1)[0]


def run_softmax(x: Array) -> Array:
    """transformer.softmax: ONNX Softmax over the last axis."""
    return run_kernel("Softmax", [x], {"axis": -1}, 1)[0]


def run_add(lhs: Array, rhs: Array) -> Array:
    """transformer.add: elementwise sum."""
    return np.add(lhs, rhs)


def run_rms_norm(x: Array, gamma: Array, epsilon: float) -> Array:
    """transformer.rms_norm: x / sqrt(mean(x^2) + epsilon) * gamma over the last axis."""
    return rms_norm_rows(x, gamma, epsilon)


def run_rotary(x: Array, cos: Array, sin: Array, num_heads: int, rotary_dim: int) -> Array:
    """transformer.rotary on x [B, L, H * d] with [L or B x L or 1 x L, rotary_dim] tables."""
    batch, length, width = x.shape

    def per_row(table: Array) -> Array:
        return np.broadcast_to(table, (batch, length, rotary_dim)).reshape(-1, rotary_dim)

    rows = rope_rows(x.reshape(batch * length, width), per_row(cos), per_row(sin),
                     width // num_heads, rotary_dim)
    return rows.reshape(batch, length, width)


# --- registration with the reference interpreter ------------------------------------------------
def _weight_args(op: Operation, args: list[Array], optional: str) -> Array | None:
    """The value of an optional operand (`bias`, `beta`, `mask`), or None when absent."""
    return args[-1] if getattr(op, optional) is not None else None


@register("transformer.linear")
def _linear(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    assert isinstance(op, transformer.LinearOp)
    v = operands_by_name(op, args)
    if op.is_quantized:
        groups = None if op.group_scales is None else interp.store[op.group_scales.data]
        size = None if op.group_size is None else op.group_size.value.data
        scale = None if op.input_scale is None else op.input_scale.value.data
        y = quantized_ops.run_linear(v["x"], v["weight"], v["weight_scale"], v.get("bias"),
                                     scale, size, groups, op.token_scales is not None)
    else:
        y = run_linear(v["x"], v["weight"], v.get("bias"))
    if "rows" in v:
        y = masks.take_representative_rows(y, v["rows"])
    if "keys" in v:
        y = masks.zero_unselected_keys(y, v["keys"])
    return y


@register("transformer.attention")
def _attention(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    assert isinstance(op, transformer.AttentionOp)
    v = operands_by_name(op, args)
    mask = v.get("mask")
    if "spa" in v:
        mask = masks.spa_additive_mask(mask, v["spa"], v["q"].shape[0])
    pruned = None
    if "tokens" in v or "head_mask" in v:
        pruned = masks.pruning_spa(v.get("tokens"), v.get("head_mask"), v["q"].shape[0],
                                   op.heads, v["q"].shape[1])
        mask = masks.spa_additive_mask(mask, pruned, v["q"].shape[0])
    common = {"num_heads": op.heads, "scale": op.scale.value.data,
              "causal": op.causal is not None, "kv_heads": op.key_heads}
    scales = op.int8_scales()
    terms = position_terms(op, v)
    if scales is None:
        y = run_attention(v["q"], v["k"], v["v"], mask, **common,
                          position=fp32_position_scores(v["q"], v["k"], op.heads, terms))
    else:
        y = quantized_ops.run_attention(v["q"], v["k"], v["v"], mask, **common,
                                        **dict(zip(ATTENTION_SCALES, scales)), positions=terms)
    if pruned is not None:
        y = masks.zero_pruned(y, pruned)
    return y if "rows" not in v else masks.take_representative_rows(y, v["rows"])


@register("transformer.layer_norm")
def _layer_norm(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    assert isinstance(op, transformer.LayerNormOp)
    sfu = quantized_ops.in_quantized_function(op, interp)
    norm = quantized_ops.run_sfu_layer_norm if sfu else run_layer_norm
    return norm(args[0], args[1], _weight_args(op, args, "beta"), op.epsilon.value.data)


@register("transformer.gelu")
def _gelu(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    assert isinstance(op, transformer.GeluOp)
    gelu = quantized_ops.run_sfu_gelu if quantized_ops.in_quantized_function(op, interp) else run_gelu
    return gelu(args[0], op.approximate.data)


@register("transformer.softmax")
def _softmax(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    sfu = quantized_ops.in_quantized_function(op, interp)
    softmax = quantized_ops.run_sfu_softmax if sfu else run_softmax
    return softmax(args[0])


@register("transformer.add")
def _add(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    return run_add(args[0], args[1])


@register("transformer.rms_norm")
def _rms_norm(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    assert isinstance(op, transformer.RmsNormOp)
    return run_rms_norm(args[0], args[1], op.epsilon.value.data)


@register("transformer.silu")
def _silu(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    return silu(args[0])


@register("transformer.relu")
def _relu(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    return relu(args[0])


@register("transformer.mul")
def _mul(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    return mul_f32(args[0], args[1])


@register("transformer.rotary")
def _rotary(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    assert isinstance(op, transformer.RotaryOp)
    return run_rotary(args[0], args[1], args[2], op.heads, op.rotated)


@register("transformer.select_rows")
def _select_rows(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    assert isinstance(op, transformer.SelectRowsOp)
    return np.ascontiguousarray(args[0][:, list(op.kept)])


@register("transformer.host")
def _host(interp: Interpreter, op: Operation, args: list[Array]) -> list[Array]:
    assert isinstance(op, transformer.HostOp)
    if quantized_ops.in_quantized_function(op, interp):  # the binary's HOST: onnxruntime's bits
        from esact_cc.interpreter.host_region_onnxruntime import run_host_region

        return run_host_region(op, interp.store, args)
    return interp.run_block(op.body.block, args)
