"""`lift-transformer` cleanup rule: ops that do not change their input are bypassed.

Exporters leave `Reshape`s to the shape the tensor already has (GPT-2's `view(-1, L, D)`),
`Identity`s, inference `Dropout`s, and `Cast`s to the type the tensor already has (the
legacy exporter's `softmax(dtype=float32).to(dtype)` between Softmax and P V); left in place they would become host regions between
accelerator ops. Only exact no-ops are removed: the Reshape's result type equals its input's
type (Reshape, Cast), the Dropout has no training-mode input and its mask output is unused.
"""

from __future__ import annotations

from esact_cc.dialects.onnx import OnnxOperation
from esact_cc.passes.lift_transformer_graph import OnnxGraph, location_name, require
from esact_cc.passes.lift_transformer_pattern import LiftPattern, Phase, register_lift_pattern
from xdsl.ir import Operation


@register_lift_pattern
class NoopPattern(LiftPattern):
    """Reshape or Cast to the same type, Identity, inference Dropout -> their input."""

    name = "noop"
    anchors = ("Reshape", "Cast", "Identity", "Dropout")
    phase = Phase.NOOP

    def is_candidate(self, op: OnnxOperation, graph: OnnxGraph) -> bool:
        if op.op_type in ("Reshape", "Cast"):
            return op.results[0].type == op.operands[0].type
        return True

    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        source = op.operands[0]
        if op.op_type == "Dropout":
            where = location_name(op)
            require(graph.input(op, 2) is None, f"{where}: Dropout has a training_mode input")
            require(
                all(r.uses.get_length() == 0 for r in op.results[1:]),
                f"{where}: Dropout mask is used",
            )
        require(op.results[0].type == source.type, f"{location_name(op)}: changes the type")
        op.results[0].replace_all_uses_with(source)
        return op
