"""A `transformer.host` region as the ONNX model the binary's HOST instruction runs.

One definition shared by the lowering (passes/lower_to_esact.py stores the model's bytes as a
host segment of the .esb) and the INT8 reference interpreter (which runs the same model on
onnxruntime, esact_cc/interpreter/host_region_onnxruntime.py), so the two compute the same
bits: onnxruntime's reductions, exponentials and fusions are not numpy's.
"""

from __future__ import annotations

from esact_cc.dialects import transformer
from esact_cc.frontend.onnx_core import ModelProto
from esact_cc.frontend.onnx_export import export_ops
from esact_cc.weight_store import WeightStore


def host_input_names(op: transformer.HostOp) -> list[str]:
    return [f"in{i}" for i in range(len(op.body.block.args))]


def host_output_names(op: transformer.HostOp) -> list[str]:
    return [f"out{i}" for i in range(len(op.outputs))]


def host_region_model(op: transformer.HostOp, store: WeightStore, opset: int,
                      graph_name: str) -> ModelProto:
    """The region's ops as a self-contained ONNX model: inputs `in<i>`, outputs `out<i>`."""
    block = op.body.block
    terminator = block.last_op
    assert isinstance(terminator, transformer.YieldOp)
    body = [o for o in block.ops if o is not terminator]
    return export_ops(body, list(block.args), list(terminator.values), store, opset=opset,
                      input_names=host_input_names(op), output_names=host_output_names(op),
                      graph_name=graph_name)
