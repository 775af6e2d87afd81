"""Fused QKV projections interleaved per head (BLOOM, Falcon): the projection's output
[B, L, H * P * d] is viewed as [B, L, H, P, d] and part i (Q, K or V) selected by Gather on
axis 3. Part i of head h is the column block h * P * d + i * d .. + d of the fused weight.

- `match_interleaved_split` (used by `lift_attention`'s head-split walk): Gather(Reshape(fused))
  -> (fused, the part's columns, H); the attention rule makes the selection an
  onnx.Gather(fused, columns, axis = -1);
- `GatherColumnsLinearPattern` (the split-linear phase): Gather(transformer.linear, constant
  columns, last axis) -> a linear with those weight and bias columns.
"""

from __future__ import annotations

import numpy as np
from esact_cc.dialects.onnx import OnnxOperation
from esact_cc.dialects.transformer import LinearOp
from esact_cc.passes.lift_transformer_graph import (
    OnnxGraph,
    fmt_shape,
    location_name,
    require,
    shape_of,
)
from esact_cc.passes.lift_transformer_pattern import LiftPattern, Phase, register_lift_pattern
from xdsl.ir import Operation, OpResult, SSAValue


def match_interleaved_split(gather: OnnxOperation, graph: OnnxGraph, what: str) -> tuple[SSAValue, np.ndarray, int]:
    """Gather(Reshape(fused [B, L, F] -> [B, L, H, P, d]), i, axis 3) -> (fused, columns, H)."""
    where = location_name(gather)
    data = gather.operands[0]
    shape = shape_of(data)
    axis = int(graph.attrs(gather).get("axis", 0))
    index = graph.const(gather.operands[1])
    require(len(shape) == 5 and axis % 5 == 3 and index is not None and index.size == 1
            and index.ndim == 0,
            f"the {what} heads: {where} does not select one part of [B, L, H, P, d]")
    assert index is not None
    reshape = graph.expect(data, "Reshape", f"the {what} heads: the fused projection at {where}")
    fused = reshape.operands[0]
    batch, length, heads, parts, width = shape
    require(shape_of(fused) == (batch, length, heads * parts * width),
            f"the {what} heads: {location_name(reshape)} reshapes {fmt_shape(shape_of(fused))} "
            f"to {fmt_shape(shape)}, expected [B, L, H * P * d] -> [B, L, H, P, d]")
    part = int(index.reshape(-1)[0]) % parts
    columns = (np.arange(heads)[:, None] * parts * width + part * width
               + np.arange(width)[None, :]).reshape(-1)
    return fused, columns.astype(np.int64), heads


@register_lift_pattern
class GatherColumnsLinearPattern(LiftPattern):
    """Gather(linear, constant columns, last axis) -> the linear of those columns."""

    name = "split-linear"
    anchors = ("Gather",)
    phase = Phase.SPLIT_LINEAR

    def is_candidate(self, op: OnnxOperation, graph: OnnxGraph) -> bool:
        source = op.operands[0]
        indices = graph.const(op.operands[1])
        return (isinstance(source, OpResult) and isinstance(source.op, LinearOp)
                and indices is not None and indices.ndim == 1)

    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        where = location_name(op)
        linear = op.operands[0].op  # type: ignore[union-attr]
        assert isinstance(linear, LinearOp)
        shape = shape_of(linear.result)
        axis = int(graph.attrs(op).get("axis", 0))
        require(axis % len(shape) == len(shape) - 1, f"{where}: Gather axis {axis} is not the last axis")
        columns = graph.const(op.operands[1])
        assert columns is not None
        columns = columns.astype(np.int64) % shape[-1]
        weight = graph.const(linear.weight)
        require(weight is not None, f"{where}: the projection's weight is not a constant")
        assert weight is not None
        hint = f"{graph.weight_name(linear.weight) or where}.columns"
        part_w = graph.new_weight(weight[:, columns], hint, op)
        part_b = None
        if linear.bias is not None:
            bias = graph.const(linear.bias)
            require(bias is not None, f"{where}: the projection's bias is not a constant")
            assert bias is not None
            part_b = graph.new_weight(bias[columns], f"{hint}.bias", op)
        part = LinearOp(linear.x, part_w, part_b, op.results[0].type)
        part.location = linear.location
        op.parent_block().insert_op_before(part, op)  # type: ignore[union-attr]
        op.results[0].replace_all_uses_with(part.result)
        return part
