"""`lift-transformer` rule for ScaleNorm, anchored at its sum of squares:

    s = Sqrt(Add(ReduceSumSquare(x, last axis, keepdims), eps)); n = Div(x, s)
    [-> Mul(n, g) with g a scalar constant]                       -> scale_norm.scale_norm

A missing g is 1. Registered with its phase where it is defined: importing this module is all
the lift needs.
"""

from __future__ import annotations

import math

import numpy as np
from xdsl.ir import Operation

from esact_cc.dialects.onnx import OnnxOperation
from esact_cc.passes.lift_norm_activation import check_last_axis_mean, is_f32, replace_end
from esact_cc.passes.lift_transformer_graph import OnnxGraph, location_name, require, shape_of
from esact_cc.passes.lift_transformer_pattern import LiftPattern, Phase, register_lift_pattern
from scale_norm import ScaleNormOp


@register_lift_pattern
class ScaleNormPattern(LiftPattern):
    """g * x / sqrt(sum(x^2) + eps) -> scale_norm.scale_norm."""

    name = "scale_norm"
    anchors = ("ReduceSumSquare",)
    phase = Phase.RMS_NORM  # beside RMSNorm: its anchor differs

    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        where = location_name(op)
        x = op.operands[0]
        shape = shape_of(x)
        require(is_f32(x), f"{where}: input is not f32")
        check_last_axis_mean(op, graph, len(shape), "sum of squares")
        add = graph.only_user(op.results[0], "Add")
        require(add is not None, f"{where}: the sum of squares has no single epsilon Add")
        assert add is not None
        _, epsilon = graph.split_const(add, "epsilon Add")
        require(epsilon > 0 and math.isfinite(epsilon), f"{where}: epsilon {epsilon} is not positive")
        sqrt = graph.only_user(add.results[0], "Sqrt")
        require(sqrt is not None, f"{where}: no single Sqrt of the sum of squares")
        assert sqrt is not None
        div = graph.only_user(sqrt.results[0], "Div")
        require(div is not None and tuple(div.operands) == (x, sqrt.results[0]),
                f"{where}: the input is not divided by the root")
        assert div is not None
        end, g = div, 1.0
        mul = graph.only_user(div.results[0], "Mul")
        if mul is not None:
            other = mul.operands[1] if mul.operands[0] is div.results[0] else mul.operands[0]
            if graph.is_const(other):
                g, end = graph.scalar(other, f"{where}: the scale g"), mul
        require(shape_of(end.results[0]) == shape, f"{where}: the result broadcasts to another shape")
        handle = graph.new_weight(np.array([g], np.float32), f"{where}.scale", end)
        return replace_end(end, ScaleNormOp(x, handle, epsilon, end.results[0].type), op)
