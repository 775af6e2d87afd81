"""The `quantized` dialect: INT8 forms of the GEMM-bearing `transformer` ops.

`quantize` rewrites `transformer.linear` and `transformer.attention` into these ops; every
other Transformer op (layer norm, GELU, softmax, residual add) already runs in FP32 on the SFU
and stays a `transformer` op. Both ops take FP32 activations and return FP32 results: the
INT8 quantization of their inputs and the dequantization of their INT32 accumulators are part
of the op, exactly as the hardware does them (QUANT on the SFU, GEMM on the MAC array, DEQUANT
on the SFU). Weights stay handles (`onnx.weight`) into the weight store; activation scales are
FP32 properties found by calibration.

- `quantized.linear`     y = dequant(quant(x, input_scale) @ W_int8) * (input_scale * w_scale[c])
                         + bias[c]; with `groups`, each group of input channels has its own
                         scale, its own INT32 partial product and dequantization, and the FP32
                         partials are summed in group order
- `quantized.attention`  per head: S = quant(Q) quant(K)^T (INT32), scores = S * (q_scale *
                         k_scale * scale) + mask (+ causal), P = softmax(scores), O =
                         quant(P, p_scale) quant(V)^T, dequantized by p_scale * v_scale

Numerical semantics (rounding, clipping, the FP32 order of operations) live in
`esact_cc.interpret_quantized_ops`, which uses the functional model's own kernels.
"""

from __future__ import annotations

import math

from xdsl.dialects.builtin import (
    I64,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    UnitAttr,
    i64,
)
from xdsl.ir import Attribute, Dialect, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

# Largest magnitude of a symmetric INT8 code (-128 is never produced, as in the hardware).
INT8_MAX = 127
# Softmax probabilities lie in [0, 1]: quantizing them with 1/127 uses the full INT8 range.
DEFAULT_P_SCALE = 1.0 / INT8_MAX


def _f32(value: float) -> FloatAttr:
    return FloatAttr(value, Float32Type())


def _check_scale(op_name: str, what: str, attr: FloatAttr) -> None:
    value = attr.value.data
    if not (math.isfinite(value) and value > 0):
        raise VerifyException(f"{op_name}: {what} must be finite and positive, got {value}")


def _shape(value: SSAValue) -> tuple[int, ...]:
    typ = value.type
    assert isinstance(typ, TensorType)
    return tuple(typ.get_shape())


@irdl_op_definition
class LinearOp(IRDLOperation):
    """INT8 linear: FP32 x quantized per tensor, INT8 weight quantized per output channel."""

    name = "quantized.linear"

    x = operand_def(TensorType)
    """FP32 activations [..., in]."""
    weight = operand_def(TensorType)
    """INT8 weight handle [in, out]."""
    weight_scale = operand_def(TensorType)
    """FP32 per-output-channel weight scale handle [out]."""
    bias = opt_operand_def(TensorType)
    """Optional FP32 bias handle [out], added after dequantization."""
    input_scale = prop_def(FloatAttr[Float32Type])
    """Per-tensor scale of x: x_int8 = round(x / input_scale)."""
    group_scales = opt_prop_def(StringAttr)
    """Optional weight-store handle of an FP32 [G] vector: one input scale per group of
    `group_size` input channels (activations with outlier channels); replaces input_scale."""
    group_size = opt_prop_def(IntegerAttr[I64])
    """Input channels per group of `group_scales`."""
    result = result_def(TensorType)
    """FP32 output [..., out]."""

    traits = traits_def(Pure())

    assembly_format = (
        "$x `,` $weight `,` $weight_scale (`,` $bias^)? `input_scale` `(` $input_scale `)`"
        " (`groups` `(` $group_scales^ `,` $group_size `)`)?"
        " attr-dict `:` functional-type(operands, results)"
    )

    def __init__(
        self,
        x: SSAValue,
        weight: SSAValue,
        weight_scale: SSAValue,
        bias: SSAValue | None,
        input_scale: float,
        result_type: Attribute,
        group_scales: str | None = None,
        group_size: int | None = None,
    ):
        properties: dict[str, Attribute] = {"input_scale": _f32(input_scale)}
        if group_scales is not None and group_size is not None:
            properties["group_scales"] = StringAttr(group_scales)
            properties["group_size"] = IntegerAttr(group_size, i64)
        super().__init__(
            operands=[x, weight, weight_scale, bias],
            properties=properties,
            result_types=[result_type],
        )

    def verify_(self) -> None:
        _check_scale(self.name, "input_scale", self.input_scale)
        if (self.group_scales is None) != (self.group_size is None):
            raise VerifyException(f"{self.name}: group scales and group size go together")
        if self.group_size is not None and self.group_size.value.data <= 0:
            raise VerifyException(f"{self.name}: group size must be positive")
        x, w, s, y = _shape(self.x), _shape(self.weight), _shape(self.weight_scale), _shape(self.result)
        if len(w) != 2 or x[-1] != w[0] or s != (w[1],) or y != (*x[:-1], w[1]):
            raise VerifyException(
                f"{self.name}: shapes x {x}, weight {w}, weight_scale {s} -> {y} do not agree"
            )
        if self.bias is not None and _shape(self.bias) != (w[1],):
            raise VerifyException(f"{self.name}: bias must be [{w[1]}], got {_shape(self.bias)}")


@irdl_op_definition
class AttentionOp(IRDLOperation):
    """INT8 multi-head attention with FP32 softmax (see the module docstring)."""

    name = "quantized.attention"

    q = operand_def(TensorType)
    """FP32 queries [B, Lq, D]."""
    k = operand_def(TensorType)
    """FP32 keys [B, Lk, D]."""
    v = operand_def(TensorType)
    """FP32 values [B, Lk, Dv]."""
    mask = opt_operand_def(TensorType)
    """Optional additive FP32 mask, broadcastable to [B, num_heads, Lq, Lk]."""
    num_heads = prop_def(IntegerAttr[I64])
    """Number of heads; divides D and Dv."""
    scale = prop_def(FloatAttr[Float32Type])
    """Factor applied to Q_h K_h^T (folded into the scores' dequantization scale)."""
    q_scale = prop_def(FloatAttr[Float32Type])
    """Per-tensor INT8 scale of Q."""
    k_scale = prop_def(FloatAttr[Float32Type])
    """Per-tensor INT8 scale of K."""
    v_scale = prop_def(FloatAttr[Float32Type])
    """Per-tensor INT8 scale of V."""
    p_scale = prop_def(FloatAttr[Float32Type])
    """INT8 scale of the softmax probabilities (1/127 by default)."""
    causal = opt_prop_def(UnitAttr)
    """If present, key j is masked for query i when j > i + (Lk - Lq)."""
    result = result_def(TensorType)
    """FP32 heads merged: [B, Lq, Dv]."""

    traits = traits_def(Pure())

    assembly_format = (
        "$q `,` $k `,` $v (`mask` $mask^)? `heads` `(` $num_heads `)` `scale` `(` $scale `)`"
        " `q_scale` `(` $q_scale `)` `k_scale` `(` $k_scale `)` `v_scale` `(` $v_scale `)`"
        " `p_scale` `(` $p_scale `)` (`causal` $causal^)? attr-dict `:` functional-type(operands, results)"
    )

    def __init__(
        self,
        q: SSAValue,
        k: SSAValue,
        v: SSAValue,
        mask: SSAValue | None,
        num_heads: int,
        scale: float,
        causal: bool,
        q_scale: float,
        k_scale: float,
        v_scale: float,
        p_scale: float,
        result_type: Attribute,
    ):
        properties: dict[str, Attribute] = {
            "num_heads": IntegerAttr(num_heads, i64),
            "scale": _f32(scale),
            "q_scale": _f32(q_scale),
            "k_scale": _f32(k_scale),
            "v_scale": _f32(v_scale),
            "p_scale": _f32(p_scale),
        }
        if causal:
            properties["causal"] = UnitAttr()
        super().__init__(operands=[q, k, v, mask], properties=properties, result_types=[result_type])

    def verify_(self) -> None:
        for what in ("scale", "q_scale", "k_scale", "v_scale", "p_scale"):
            _check_scale(self.name, what, getattr(self, what))
        q, k, v, y = _shape(self.q), _shape(self.k), _shape(self.v), _shape(self.result)
        heads = self.num_heads.value.data
        if len(q) != 3 or len(k) != 3 or len(v) != 3 or q[2] != k[2] or k[1] != v[1]:
            raise VerifyException(f"{self.name}: q {q}, k {k}, v {v} are not [B, L, D] attention inputs")
        if heads <= 0 or q[2] % heads or v[2] % heads:
            raise VerifyException(f"{self.name}: num_heads {heads} does not divide D {q[2]} and Dv {v[2]}")
        if y != (q[0], q[1], v[2]):
            raise VerifyException(f"{self.name}: result must be {(q[0], q[1], v[2])}, got {y}")


QUANTIZED = Dialect("quantized", [LinearOp, AttentionOp], [])
