"""Numpy semantics of the `transformer` dialect (float32, matching onnxruntime on real models).

`run_linear`, `run_attention`, ... compute each op on numpy arrays; they are the golden model
every later stage (quantize, SPLS, lowering) is checked against. GELU, softmax and layer norm
are by definition the ONNX ops of the same name, so they run through the ONNX kernels
(`esact_cc.interpret_onnx_ops`): one definition per function. `transformer.host` runs its
region's `onnx` ops through the same interpreter that runs the `onnx` dialect.

Registration with the reference interpreter is at the bottom.
"""

from __future__ import annotations

import numpy as np
from xdsl.ir import Operation

from esact_cc.dialects import transformer
from esact_cc.interpret_onnx_ops import run_kernel
from esact_cc.reference_interpreter import Interpreter, register

Array = np.ndarray


def run_linear(x: Array, weight: Array, bias: Array | None) -> Array:
    """transformer.linear: x [..., in] @ weight [in, out] (+ bias [out])."""
    y = np.matmul(x, weight)
    if bias is not None:
        y = y + bias
    return y.astype(np.float32, copy=False)


def causal_visibility(lq: int, lk: int) -> Array:
    """Boolean [Lq, Lk]: True where key j is visible to query i (j <= i + Lk - Lq)."""
    return np.arange(lk)[None, :] <= np.arange(lq)[:, None] + (lk - lq)


def run_attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None,
    num_heads: int,
    scale: float,
    causal: bool,
) -> Array:
    """transformer.attention on [B, L, D] arrays; heads are contiguous slices of D."""
    batch, lq, width = q.shape
    lk, width_v = k.shape[1], v.shape[2]
    d, dv = width // num_heads, width_v // num_heads
    # [B, H, L, d]: the exporters' reshape + transpose head split. Contiguous copies: numpy's
    # batched matmul on strided views skips BLAS and is ~300x slower (H7, calibration time).
    qh = np.ascontiguousarray(q.reshape(batch, lq, num_heads, d).transpose(0, 2, 1, 3))
    kh = np.ascontiguousarray(k.reshape(batch, lk, num_heads, d).transpose(0, 2, 3, 1))
    vh = np.ascontiguousarray(v.reshape(batch, lk, num_heads, dv).transpose(0, 2, 1, 3))
    scores = np.matmul(qh, kh) * np.float32(scale)
    if mask is not None:
        scores = scores + mask.astype(np.float32, copy=False)
    if causal:
        scores = np.where(causal_visibility(lq, lk), scores, np.float32(-np.inf))
    probs = run_kernel("Softmax", [scores.astype(np.float32, copy=False)], {"axis": -1}, 1)[0]
    out = np.matmul(probs, vh)  # [B, H, Lq, dv]
    return out.transpose(0, 2, 1, 3).reshape(batch, lq, width_v).astype(np.float32, copy=False)


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


# --- registration with the reference interpreter ------------------------------------------------
def _weight_args(op: Operation, args: list[Array], optional: str) -> Array | None:
    """The value of an optional operand (`bias`, `beta`, `mask`), or None when absent."""
    return args[-1] if getattr(op, optional) is not None else None


@register("transformer.linear")
def _linear(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    assert isinstance(op, transformer.LinearOp)
    return run_linear(args[0], args[1], _weight_args(op, args, "bias"))


@register("transformer.attention")
def _attention(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    assert isinstance(op, transformer.AttentionOp)
    return run_attention(
        args[0],
        args[1],
        args[2],
        _weight_args(op, args, "mask"),
        num_heads=op.num_heads.value.data,
        scale=op.scale.value.data,
        causal=op.causal is not None,
    )


@register("transformer.layer_norm")
def _layer_norm(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    assert isinstance(op, transformer.LayerNormOp)
    return run_layer_norm(args[0], args[1], _weight_args(op, args, "beta"), op.epsilon.value.data)


@register("transformer.gelu")
def _gelu(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    assert isinstance(op, transformer.GeluOp)
    return run_gelu(args[0], op.approximate.data)


@register("transformer.softmax")
def _softmax(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    return run_softmax(args[0])


@register("transformer.add")
def _add(interp: Interpreter, op: Operation, args: list[Array]) -> Array:
    return run_add(args[0], args[1])


@register("transformer.host")
def _host(interp: Interpreter, op: Operation, args: list[Array]) -> list[Array]:
    assert isinstance(op, transformer.HostOp)
    return interp.run_block(op.body.block, args)
