"""`lift-transformer` rule for RMSNorm (LLaMA, Mistral, Qwen2, T5), anchored at its Sqrt:

    ms = ReduceMean(Pow(x, 2) | Mul(x, x), last axis, keepdims); s = Sqrt(Add(ms, eps))
    n = Mul(x, Reciprocal(s)) | Mul(x, Div(1, s)) | Div(x, s)       (either operand order)
    [-> Mul(n, gamma)]                                                -> transformer.rms_norm

A missing gamma is a ones vector. Layer norm (which subtracts the mean first) is lifted in an
earlier phase, so its Sqrt is gone by the time this rule runs.
"""

from __future__ import annotations

import math

import numpy as np
from esact_cc.dialects.onnx import OnnxOperation
from esact_cc.dialects.transformer import RmsNormOp
from esact_cc.passes.lift_norm_activation import (
    check_last_axis_mean,
    weight_handle_of,
    is_f32,
    replace_end,
    constant_vector,
)
from esact_cc.passes.lift_transformer_graph import OnnxGraph, location_name, require, shape_of
from esact_cc.passes.lift_transformer_pattern import LiftPattern, Phase, register_lift_pattern
from xdsl.ir import Operation, SSAValue


@register_lift_pattern
class RmsNormPattern(LiftPattern):
    """x / sqrt(mean(x^2) + eps) [* gamma] -> transformer.rms_norm."""

    name = "rms_norm"
    anchors = ("Sqrt",)
    phase = Phase.RMS_NORM

    def is_candidate(self, op: OnnxOperation, graph: OnnxGraph) -> bool:
        add = graph.producer(op.operands[0], "Add")
        return add is not None and any(
            graph.producer(v, "ReduceMean") is not None for v in add.operands
        )

    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        where = location_name(op)
        add_eps = graph.expect(op.operands[0], "Add", f"{where}: Sqrt input")
        mean_square, epsilon = graph.split_const(add_eps, "epsilon Add")
        require(epsilon > 0 and math.isfinite(epsilon), f"{where}: epsilon {epsilon} is not positive")
        mean_op = graph.expect(mean_square, "ReduceMean", f"{where}: the mean square")
        square = graph.producer(mean_op.operands[0], "Pow", "Mul")
        require(square is not None, f"{where}: the mean is not of squares")
        assert square is not None
        x = square.operands[0]
        if square.op_type == "Pow":
            exponent = graph.scalar(square.operands[1], f"{where}: Pow exponent")
            require(exponent == 2.0, f"{where}: Pow exponent {exponent} is not 2")
        else:
            require(square.operands[1] is x, f"{where}: Mul squares two different values")
        shape = shape_of(x)
        require(is_f32(x), f"{where}: input is not f32")
        check_last_axis_mean(mean_op, graph, len(shape), "mean square")
        normalised = self._normalise(op, x, graph, where)
        for value, what in ((square.results[0], "square"), (mean_square, "mean square"),
                            (add_eps.results[0], "mean square + eps"), (op.results[0], "sqrt")):
            graph.require_single_use(value, f"{where}: the {what}")
        end, gamma, gamma_value = normalised, None, None
        mul = graph.only_user(normalised.results[0], "Mul")
        if mul is not None:
            other = mul.operands[1] if mul.operands[0] is normalised.results[0] else mul.operands[0]
            if graph.is_const(other):
                gamma, gamma_value, end = constant_vector(graph, other, shape[-1], f"{where}: scale"), other, mul
        require(shape_of(end.results[0]) == shape, f"{where}: the result broadcasts to another shape")
        if gamma is None:
            g = graph.new_weight(np.ones(shape[-1], np.float32), f"{where}.gamma", end)
        else:
            assert gamma_value is not None
            g = weight_handle_of(graph, gamma_value, gamma, f"{where}.gamma", end)
        return replace_end(end, RmsNormOp(x, g, epsilon, end.results[0].type), mean_op)

    @staticmethod
    def _normalise(sqrt: OnnxOperation, x: SSAValue, graph: OnnxGraph, where: str) -> OnnxOperation:
        """The op computing x / sqrt(...): Div(x, s), or Mul(x, 1 / s)."""
        user = graph.only_user(sqrt.results[0], "Reciprocal", "Div")
        require(user is not None, f"{where}: the root is not inverted or divided by")
        assert user is not None
        if user.op_type == "Div" and user.operands[0] is x:
            return user
        if user.op_type == "Div":
            one = graph.scalar(user.operands[0], f"{where}: the numerator of 1 / sqrt")
            require(one == 1.0 and user.operands[1] is sqrt.results[0],
                    f"{where}: {location_name(user)} is not 1 / sqrt")
        graph.require_single_use(user.results[0], f"{where}: the inverse root")
        mul = graph.only_user(user.results[0], "Mul")
        require(mul is not None and x in mul.operands,
                f"{where}: the inverse root does not multiply the squared input")
        assert mul is not None
        return mul
