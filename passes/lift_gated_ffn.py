"""`lift-transformer` rules for gated FFNs (SwiGLU: silu(x W_gate) * (x W_up), GeGLU with GELU)
and the other FFN activations of modern families:

- SiLU: Mul(x, Sigmoid(x)) (either order), the Sigmoid used only there -> transformer.silu;
- Relu (T5, OPT) -> transformer.relu;
- the gate product: Mul of two same-shape f32 activations, one of them made by a transformer
  op (the activation or a projection) -> transformer.mul.

The product rule runs after the activation rules (so SiLU's own Mul is gone) and before the
residual adds; a Mul with a constant operand (a scale, a rotary table) is never a candidate.
"""

from __future__ import annotations

from esact_cc.dialects.onnx import OnnxOperation
from esact_cc.dialects.transformer import MulOp, ReluOp, SiluOp
from esact_cc.passes.lift_norm_activation import from_transformer_op, is_f32, replace_end
from esact_cc.passes.lift_transformer_graph import OnnxGraph, fmt_shape, location_name, require, shape_of
from esact_cc.passes.lift_transformer_pattern import LiftPattern, Phase, register_lift_pattern
from xdsl.ir import Operation


@register_lift_pattern
class SiluPattern(LiftPattern):
    """x * Sigmoid(x) -> transformer.silu."""

    name = "silu"
    anchors = ("Sigmoid",)
    phase = Phase.ACTIVATION

    def is_candidate(self, op: OnnxOperation, graph: OnnxGraph) -> bool:
        return graph.only_user(op.results[0], "Mul") is not None

    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        where = location_name(op)
        x = op.operands[0]
        mul = graph.only_user(op.results[0], "Mul")
        assert mul is not None
        require(x in mul.operands, f"{where}: the sigmoid multiplies another value than its input")
        require(is_f32(x), f"{where}: input is not f32")
        require(shape_of(mul.results[0]) == shape_of(x), f"{where}: SiLU result broadcasts")
        return replace_end(mul, SiluOp(x, mul.results[0].type), op)


@register_lift_pattern
class ReluPattern(LiftPattern):
    """Relu -> transformer.relu."""

    name = "relu"
    anchors = ("Relu",)
    phase = Phase.ACTIVATION

    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        require(is_f32(op.operands[0]), f"{location_name(op)}: input is not f32")
        return replace_end(op, ReluOp(op.operands[0], op.results[0].type), op)


@register_lift_pattern
class GateProductPattern(LiftPattern):
    """act(x W_gate) * (x W_up) (same-shape activations) -> transformer.mul."""

    name = "mul"
    anchors = ("Mul",)
    phase = Phase.GATE

    def is_candidate(self, op: OnnxOperation, graph: OnnxGraph) -> bool:
        # A broadcasting product (mean pooling's x * mask) is another computation, not a gate.
        a, b = op.operands
        return (
            not graph.is_const(a)
            and not graph.is_const(b)
            and shape_of(a) == shape_of(b)
            and (from_transformer_op(a) or from_transformer_op(b))
        )

    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        a, b = op.operands
        where = location_name(op)
        require(
            shape_of(op.results[0]) == shape_of(a),
            f"{where}: the product {fmt_shape(shape_of(op.results[0]))} is not of the operands' "
            f"shape {fmt_shape(shape_of(a))}",
        )
        require(is_f32(a) and is_f32(b), f"{where}: operands are not f32")
        return replace_end(op, MulOp(a, b, op.results[0].type), op)
