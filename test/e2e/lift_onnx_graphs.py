"""Small ONNX graphs in the node patterns real Transformer exporters emit, built with onnx.helper.

Used by the lift-transformer end-to-end tests (and to regenerate the lit input of
test/lit/passes/lift_transformer.mlir). Every builder takes knobs that produce the exact forms
of the torch legacy and dynamo exporters (scale on scores / Q / Div by sqrt(d), one or two key
transposes, Where / additive / constant causal masks, Gemm with transB, flatten reshapes, fused
QKV + Split, decomposed layer norm, erf and tanh GELU in several associations) and knobs that
break one check each (a near miss).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class GraphBuilder:
    """Accumulates nodes and initializers; `model()` makes the ModelProto."""

    def __init__(self, seed: int = 0):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def input(self, name: str, shape: Sequence[int], elem: int = TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
        return name

    def const(self, array: np.ndarray | float | Sequence[int], stem: str = "c") -> str:
        array = np.asarray(array)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        name = self.fresh(stem)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, values: Sequence[int], stem: str = "shape") -> str:
        return self.const(np.asarray(values, np.int64), stem)

    def weight(self, *shape: int, stem: str = "w", scale: float = 0.3) -> str:
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32), stem)

    def op(self, op_type: str, inputs: Sequence[str], outputs: int = 1, **attrs) -> str:
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(
            helper.make_node(op_type, list(inputs), names, name=f"/{names[0]}", **attrs)
        )
        return names[0] if outputs == 1 else names  # type: ignore[return-value]

    def model(self, outputs: Sequence[str], opset: int = 17) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "g",
            self.inputs,
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
            self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 9
        return model


# --- linear ---------------------------------------------------------------------------------------
LINEAR_FORMS = (
    "matmul_add",
    "add_matmul_swapped",
    "matmul",
    "gemm",
    "gemm_transB",
    "gemm_alpha_beta",
    "matmul_transposed_weight",
    "flatten_gemm",
    "fused_qkv_split",
)


def linear(
    b: GraphBuilder, x: str, shape: Sequence[int], out: int, form: str = "matmul_add"
) -> str:
    """y = x @ W + bias in one of the exporters' forms; x has `shape` [..., in]."""
    n_in = shape[-1]
    if form in ("matmul_add", "add_matmul_swapped", "matmul"):
        y = b.op("MatMul", [x, b.weight(n_in, out)])
        if form == "matmul":
            return y
        bias = b.weight(out, stem="bias")
        return b.op("Add", [bias, y] if form == "add_matmul_swapped" else [y, bias])
    if form == "matmul_transposed_weight":
        wt = b.op("Transpose", [b.weight(out, n_in)], perm=[1, 0])
        return b.op("Add", [b.op("MatMul", [x, wt]), b.weight(out, stem="bias")])
    if form in ("gemm", "gemm_transB", "gemm_alpha_beta", "flatten_gemm"):
        rows = int(np.prod(shape[:-1]))
        flat = b.op("Reshape", [x, b.ints([rows, n_in])]) if len(shape) > 2 else x
        if form == "gemm_transB":
            y = b.op("Gemm", [flat, b.weight(out, n_in), b.weight(out, stem="bias")], transB=1)
        elif form == "gemm_alpha_beta":
            y = b.op(
                "Gemm", [flat, b.weight(n_in, out), b.weight(out, stem="bias")], alpha=0.5, beta=2.0
            )
        else:
            y = b.op("Gemm", [flat, b.weight(n_in, out), b.weight(out, stem="bias")])
        return b.op("Reshape", [y, b.ints([*shape[:-1], out])]) if len(shape) > 2 else y
    raise ValueError(form)


# --- attention ------------------------------------------------------------------------------------
def attention(
    b: GraphBuilder,
    x: str,
    batch: int,
    length: int,
    width: int,
    heads: int,
    *,
    scale_on: str = "scores_mul",
    key_form: str = "one_transpose",
    mask: str | None = None,
    merge: str = "3d",
    qkv: str = "separate",
    q_perm: Sequence[int] = (0, 2, 1, 3),
    softmax_axis: int = -1,
    scale_constant: float | None = None,
    merge_perm: Sequence[int] = (0, 2, 1, 3),
    fill: float | None = None,
    cast_probs: bool = False,
) -> str:
    """Multi-head self-attention on x [B, L, D] through Q/K/V projections; returns [B, L, D].

    `mask` is None, an input name of an additive mask [B, 1, 1, L] ("additive:<name>"), a bool
    input [B, 1, L, L] used by Where ("where:<name>"), "where_causal_const" (GPT-2 legacy:
    Where(constant lower-triangular, scores, min)) or "additive_causal_const".
    """
    d = width // heads
    shape = (batch, length, width)
    if qkv == "separate":
        q, k, v = (linear(b, x, shape, width, "matmul_add") for _ in range(3))
    else:  # GPT-2: one Gemm to 3D, Split on the last axis
        fused = linear(b, x, shape, 3 * width, "flatten_gemm")
        q, k, v = b.op("Split", [fused, b.ints([width] * 3)], outputs=3, axis=2)
    split_shape = b.ints([batch, length, -1, d])
    factor = scale_constant if scale_constant is not None else 1.0 / math.sqrt(d)
    if scale_on == "q":
        q = b.op("Mul", [q, b.const(np.float32(factor))])
    qh = b.op("Transpose", [b.op("Reshape", [q, split_shape])], perm=list(q_perm))
    kr = b.op("Reshape", [k, split_shape])
    if key_form == "one_transpose":
        kt = b.op("Transpose", [kr], perm=[0, 2, 3, 1])
    else:
        kt = b.op("Transpose", [b.op("Transpose", [kr], perm=[0, 2, 1, 3])], perm=[0, 1, 3, 2])
    if scale_on == "qk":  # both sides by d^-1/4
        root = np.float32(math.sqrt(factor))
        qh = b.op("Mul", [qh, b.const(root)])
        kt = b.op("Mul", [kt, b.const(root)])
    vh = b.op("Transpose", [b.op("Reshape", [v, split_shape])], perm=[0, 2, 1, 3])
    scores = b.op("MatMul", [qh, kt])
    if scale_on == "scores_mul":
        scores = b.op("Mul", [scores, b.const(np.float32(factor))])
    elif scale_on == "scores_div_sqrt":  # Div by Sqrt(d), the Sqrt of a constant
        scores = b.op("Div", [scores, b.op("Sqrt", [b.const(np.float32(1.0 / factor**2))])])
    lowest = np.float32(np.finfo(np.float32).min if fill is None else fill)
    causal = np.tril(np.ones((length, length), bool))[None, None]
    if mask is not None and mask.startswith("additive:"):
        scores = b.op("Add", [scores, mask.split(":", 1)[1]])
    elif mask is not None and mask.startswith("where:"):
        scores = b.op("Where", [mask.split(":", 1)[1], scores, b.const(lowest)])
    elif mask == "where_causal_const":
        scores = b.op("Where", [b.const(causal), scores, b.const(lowest)])
    elif mask == "additive_causal_const":
        scores = b.op("Add", [scores, b.const(np.where(causal, 0, lowest).astype(np.float32))])
    probs = b.op("Softmax", [scores], axis=softmax_axis)
    if cast_probs:  # the legacy exporter's softmax(dtype=float32).to(dtype): a no-op Cast
        probs = b.op("Cast", [probs], to=TensorProto.FLOAT)
    context = b.op("Transpose", [b.op("MatMul", [probs, vh])], perm=list(merge_perm))
    if merge == "3d":
        return b.op("Reshape", [context, b.ints([batch, length, width])])
    flat = b.op("Reshape", [context, b.ints([batch * length, width])])
    out = b.op("Gemm", [flat, b.weight(width, width), b.weight(width, stem="bias")])
    return b.op("Reshape", [out, b.ints([batch, length, width])])


def padding_mask_preprocessing(b: GraphBuilder, mask_input: str) -> str:
    """BERT's host-side mask: [B, L] int64 -> additive [B, 1, 1, L] f32 ((1 - m) * min)."""
    unsq = b.op("Unsqueeze", [mask_input, b.ints([1, 2])])
    as_float = b.op("Cast", [unsq], to=TensorProto.FLOAT)
    inverted = b.op("Sub", [b.const(np.float32(1.0)), as_float])
    return b.op("Mul", [inverted, b.const(np.float32(np.finfo(np.float32).min))])


# --- layer norm -----------------------------------------------------------------------------------
def layer_norm(
    b: GraphBuilder,
    x: str,
    width: int,
    *,
    form: str = "fused",
    epsilon: float = 1e-5,
    axis: int = -1,
    exponent: float = 2.0,
    affine: bool = True,
    epsilon_shape: Sequence[int] = (),
) -> str:
    gamma = b.const((1 + 0.1 * b.rng.standard_normal(width)).astype(np.float32), "gamma")
    beta = b.const((0.1 * b.rng.standard_normal(width)).astype(np.float32), "beta")
    if form == "fused":
        return b.op("LayerNormalization", [x, gamma, beta], axis=axis, epsilon=epsilon)
    mean = b.op("ReduceMean", [x], axes=[axis], keepdims=1)
    centered = b.op("Sub", [x, mean])
    if form == "decomposed_mul":
        square = b.op("Mul", [centered, centered])
    else:
        square = b.op("Pow", [centered, b.const(np.float32(exponent))])
    variance = b.op("ReduceMean", [square], axes=[axis], keepdims=1)
    eps = b.const(np.full(tuple(epsilon_shape), epsilon, np.float32))
    normed = b.op("Div", [centered, b.op("Sqrt", [b.op("Add", [variance, eps])])])
    if not affine:
        return normed
    return b.op("Add", [b.op("Mul", [normed, gamma]), beta])


# --- GELU -----------------------------------------------------------------------------------------
GELU_FORMS = (
    "erf_legacy",
    "erf_dynamo",
    "erf_mul_inv_sqrt2",
    "tanh_pow",
    "tanh_cube_muls",
    "gelu_op",
    "gelu_op_tanh",
)


def gelu(
    b: GraphBuilder,
    x: str,
    form: str = "erf_legacy",
    sqrt2: float = math.sqrt(2.0),
    coefficient: float = 0.044715,
) -> str:
    f = lambda v: b.const(np.float32(v))  # noqa: E731
    if form == "gelu_op":
        return b.op("Gelu", [x])
    if form == "gelu_op_tanh":
        return b.op("Gelu", [x], approximate="tanh")
    if form.startswith("erf"):
        scaled = (
            b.op("Mul", [x, f(1.0 / sqrt2)])
            if form == "erf_mul_inv_sqrt2"
            else b.op("Div", [x, f(sqrt2)])
        )
        one_plus = b.op("Add", [b.op("Erf", [scaled]), f(1.0)])
        if form == "erf_dynamo":  # x * (0.5 * (1 + erf))
            return b.op("Mul", [x, b.op("Mul", [f(0.5), one_plus])])
        return b.op("Mul", [b.op("Mul", [x, one_plus]), f(0.5)])  # legacy: (x * (1 + erf)) * 0.5
    # tanh forms, GPT-2's NewGELU: (0.5 * x) * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
    if form == "tanh_pow":
        cube = b.op("Pow", [x, f(3.0)])
    else:
        cube = b.op("Mul", [x, b.op("Mul", [x, x])])
    inner = b.op("Add", [x, b.op("Mul", [cube, f(coefficient)])])
    t = b.op("Tanh", [b.op("Mul", [inner, f(math.sqrt(2 / math.pi))])])
    return b.op("Mul", [b.op("Mul", [x, f(0.5)]), b.op("Add", [t, f(1.0)])])


# --- whole encoder layer --------------------------------------------------------------------------
def encoder_layer(
    b: GraphBuilder,
    x: str,
    batch: int,
    length: int,
    width: int,
    heads: int,
    *,
    ffn: int | None = None,
    ln_form: str = "fused",
    gelu_form: str = "erf_legacy",
    pre_norm: bool = False,
    **attention_kwargs,
) -> str:
    """BERT (post-norm) or GPT-2 (pre-norm) layer: attention, residual, LN, FFN, residual, LN."""
    ffn = ffn or 4 * width
    shape = (batch, length, width)
    if pre_norm:
        h = layer_norm(b, x, width, form=ln_form)
        x = b.op("Add", [x, attention(b, h, batch, length, width, heads, **attention_kwargs)])
        h = layer_norm(b, x, width, form=ln_form)
        up = gelu(b, linear(b, h, shape, ffn, "flatten_gemm"), gelu_form)
        return b.op("Add", [x, linear(b, up, (batch, length, ffn), width, "flatten_gemm")])
    a = attention(b, x, batch, length, width, heads, **attention_kwargs)
    x = layer_norm(b, b.op("Add", [linear(b, a, shape, width), x]), width, form=ln_form)
    up = gelu(b, linear(b, x, shape, ffn), gelu_form)
    return layer_norm(
        b, b.op("Add", [linear(b, up, (batch, length, ffn), width), x]), width, form=ln_form
    )
