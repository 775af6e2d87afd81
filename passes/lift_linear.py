"""`lift-transformer` rules for linear layers: MatMul (+ bias Add), Gemm, transposed weights,
flatten/unflatten reshapes around them, and fused projections split along the output axis.

Forms recognised:
- `MatMul(x, W)` and `MatMul(x, Transpose(W_t, perm=[1, 0]))`, W constant [in, out];
- `Gemm(A, B, C)` with transA = 0, any transB, alpha and beta (folded into new weights);
- a following `Add(., b)` with b constant broadcasting as [out] becomes the bias;
- `Reshape(x [..., in] -> [N, in])` before and `Reshape([N, out] -> [..., out])` after (how
  the dynamo exporter flattens Gemm inputs) are absorbed: the linear runs on [..., in];
- `Split(linear, axis=-1)` of a fused QKV projection becomes one linear per part.

Weights needing a transpose, scale or slice are added to the weight store under new names.
"""

from __future__ import annotations

import numpy as np
from esact_cc.dialects.onnx import OnnxOperation
from esact_cc.dialects.transformer import LinearOp
from esact_cc.passes.lift_transformer_graph import (
    NoMatch,
    OnnxGraph,
    fmt_shape,
    location_name,
    require,
    shape_of,
)
from esact_cc.passes.lift_transformer_pattern import LiftPattern, Phase, register_lift_pattern
from xdsl.dialects.builtin import Float32Type, TensorType
from xdsl.ir import Operation, OpResult, SSAValue


def _bias_vector(array: np.ndarray, out: int, what: str) -> np.ndarray:
    """A constant that broadcasts along rows as [out] (shape [out], [1, out], [1, 1, out], ...)."""
    require(
        array.ndim >= 1 and array.shape[-1] == out and all(d == 1 for d in array.shape[:-1]),
        f"{what} has shape {fmt_shape(array.shape)}, expected [{out}] broadcast along rows",
    )
    return array.reshape(out)


@register_lift_pattern
class LinearPattern(LiftPattern):
    """MatMul / Gemm with a constant weight -> transformer.linear."""

    name = "linear"
    anchors = ("MatMul", "Gemm")
    phase = Phase.LINEAR

    def is_candidate(self, op: OnnxOperation, graph: OnnxGraph) -> bool:
        if op.op_type == "Gemm":
            return True
        weight = op.operands[1]
        transpose = graph.producer(weight, "Transpose")
        return graph.is_const(weight) or (
            transpose is not None and graph.is_const(transpose.operands[0])
        )

    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        where = location_name(op)
        x = op.operands[0]
        if op.op_type == "MatMul":
            weight, weight_value, renamed = self._matmul_weight(op, graph)
            bias, bias_value, end = None, None, op
        else:
            weight, weight_value, renamed, bias, bias_value = self._gemm_parts(op, graph)
            end = op
        x_shape = shape_of(x)
        require(weight.ndim == 2, f"weight of {where} has rank {weight.ndim}, expected 2")
        require(
            len(x_shape) >= 1 and x_shape[-1] == weight.shape[0],
            f"{where}: input {fmt_shape(x_shape)} does not match weight {fmt_shape(weight.shape)}",
        )
        require(x.type.get_element_type() == Float32Type(), f"{where}: input is not f32")  # type: ignore[attr-defined]
        out = weight.shape[1]
        if bias is None:
            bias, bias_value, end = self._bias_add(op, graph, out)
        x_in, end = self._absorb_flatten(x, end, graph, out)
        result_type = TensorType(Float32Type(), (*shape_of(x_in)[:-1], out))

        hint = graph.weight_name(weight_value) or where
        w_handle = (
            graph.new_weight(weight, hint + renamed, end)
            if renamed
            else graph.weight_handle(weight_value, weight, hint, end)
        )
        b_handle = None
        if bias is not None:
            assert bias_value is not None
            b_hint = graph.weight_name(bias_value) or f"{where}.bias"
            b_handle = graph.weight_handle(bias_value, bias, b_hint, end)
        linear = LinearOp(x_in, w_handle, b_handle, result_type)
        linear.location = op.location
        end.parent_block().insert_op_before(linear, end)  # type: ignore[union-attr]
        end.results[0].replace_all_uses_with(linear.result)
        return linear

    @staticmethod
    def _matmul_weight(op: OnnxOperation, graph: OnnxGraph) -> tuple[np.ndarray, SSAValue, str]:
        """(W [in, out], the SSA value it came from, suffix for a renamed copy or "")."""
        value = op.operands[1]
        weight = graph.const(value)
        if weight is not None:
            return weight, value, ""
        transpose = graph.expect(value, "Transpose", f"weight of {location_name(op)}")
        perm = graph.attrs(transpose).get("perm", [1, 0])
        require(list(perm) == [1, 0], f"weight transpose perm {list(perm)} is not [1, 0]")
        source = graph.const(transpose.operands[0])
        assert source is not None
        return source.T, transpose.operands[0], ".T"

    @staticmethod
    def _gemm_parts(op: OnnxOperation, graph: OnnxGraph):
        where = location_name(op)
        attrs = graph.attrs(op)
        require(attrs.get("transA", 0) == 0, f"{where}: Gemm transA=1 (input transposed)")
        inputs = graph.inputs(op)
        b_value = inputs[1]
        assert b_value is not None
        b = graph.const(b_value)
        require(b is not None, f"{where}: Gemm B is not a constant weight")
        assert b is not None
        require(b.ndim == 2, f"{where}: Gemm B has rank {b.ndim}")
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        weight = b.T if attrs.get("transB", 0) else b
        suffix = ".T" if attrs.get("transB", 0) else ""
        if alpha != 1.0:
            weight = (weight * np.float32(alpha)).astype(b.dtype)
            suffix += ".scaled"
        c_value = inputs[2] if len(inputs) > 2 else None
        bias = None
        if c_value is not None:
            c = graph.const(c_value)
            require(c is not None, f"{where}: Gemm C is not a constant bias")
            assert c is not None
            bias = _bias_vector(
                np.broadcast_to(c, (weight.shape[1],)) if c.size == 1 else c,
                weight.shape[1],
                f"{where}: Gemm C",
            )
            if beta != 1.0:
                bias = (bias * np.float32(beta)).astype(c.dtype)
            if bias.shape != c.shape or beta != 1.0:
                bias = np.array(bias)  # a new tensor: not the handle's own data
        return weight, b_value, suffix, bias, c_value

    @staticmethod
    def _bias_add(op: OnnxOperation, graph: OnnxGraph, out: int):
        """(bias [out], its SSA value, the Add op) when the product's only user adds one."""
        add = graph.only_user(op.results[0], "Add")
        if add is None:
            return None, None, op
        other = add.operands[1] if add.operands[0] is op.results[0] else add.operands[0]
        array = graph.const(other)
        if (
            array is None
            or array.ndim < 1
            or array.shape[-1] != out
            or any(d != 1 for d in array.shape[:-1])
        ):
            return None, None, op  # not a bias: a residual or broadcast add stays for other rules
        if array.ndim > len(shape_of(op.results[0])):
            return None, None, op
        return array.reshape(out), other, add

    @staticmethod
    def _absorb_flatten(
        x: SSAValue, end: Operation, graph: OnnxGraph, out: int
    ) -> tuple[SSAValue, Operation]:
        """Skip `Reshape([..., in] -> [N, in])` before, `Reshape([N, out] -> [..., out])` after."""
        flatten = graph.producer(x, "Reshape")
        if flatten is None or len(shape_of(x)) != 2:
            return x, end
        source = flatten.operands[0]
        source_shape = shape_of(source)
        if len(source_shape) < 3 or source_shape[-1] != shape_of(x)[-1]:
            return x, end
        unflatten = graph.only_user(end.results[0], "Reshape")
        if unflatten is None or unflatten.operands[0] is not end.results[0]:
            return x, end
        if shape_of(unflatten.results[0]) != (*source_shape[:-1], out):
            return x, end
        return source, unflatten


@register_lift_pattern
class SplitLinearPattern(LiftPattern):
    """Split(transformer.linear, last axis) of a fused projection -> one linear per part."""

    name = "split-linear"
    anchors = ("Split",)
    phase = Phase.SPLIT_LINEAR

    def is_candidate(self, op: OnnxOperation, graph: OnnxGraph) -> bool:
        source = op.operands[0]
        return isinstance(source, OpResult) and isinstance(source.op, LinearOp)

    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        where = location_name(op)
        linear = op.operands[0].op  # type: ignore[union-attr]
        assert isinstance(linear, LinearOp)
        graph.require_single_use(linear.result, f"the projection split by {where}")
        shape = shape_of(linear.result)
        axis = int(graph.attrs(op).get("axis", 0))
        require(
            axis % len(shape) == len(shape) - 1, f"{where}: Split axis {axis} is not the last axis"
        )
        sizes = self._sizes(op, graph, shape[-1])
        weight = graph.const(linear.weight)
        bias = graph.const(linear.bias) if linear.bias is not None else None
        require(weight is not None, f"{where}: the projection's weight is not a constant")
        assert weight is not None
        hint = graph.weight_name(linear.weight) or where
        b_hint = (
            graph.weight_name(linear.bias) if linear.bias is not None else None
        ) or f"{where}.bias"
        start = 0
        last: Operation = linear
        for index, (size, result) in enumerate(zip(sizes, op.results, strict=True)):
            part_w = graph.new_weight(weight[:, start : start + size], f"{hint}.part{index}", op)
            part_b = None
            if bias is not None:
                part_b = graph.new_weight(bias[start : start + size], f"{b_hint}.part{index}", op)
            part = LinearOp(linear.x, part_w, part_b, result.type)
            part.location = linear.location
            op.parent_block().insert_op_before(part, op)  # type: ignore[union-attr]
            result.replace_all_uses_with(part.result)
            start += size
            last = part
        return last

    @staticmethod
    def _sizes(op: OnnxOperation, graph: OnnxGraph, total: int) -> list[int]:
        where = location_name(op)
        split_value = graph.input(op, 1)
        attrs = graph.attrs(op)
        if split_value is not None:
            array = graph.const(split_value)
            require(array is not None, f"{where}: split sizes are not constant")
            assert array is not None
            sizes = [int(s) for s in array.reshape(-1)]
        elif "split" in attrs:
            sizes = [int(s) for s in attrs["split"]]
        else:
            parts = len(op.results)
            require(total % parts == 0, f"{where}: {total} does not split into {parts} equal parts")
            sizes = [total // parts] * parts
        if len(sizes) != len(op.results) or sum(sizes) != total:
            raise NoMatch(
                f"{where}: split sizes {sizes} do not cover {total} in {len(op.results)} parts"
            )
        return sizes
