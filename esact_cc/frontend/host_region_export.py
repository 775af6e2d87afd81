"""A `transformer.host` region as the ONNX model the binary's HOST instruction runs.

One definition shared by the lowering (passes/lower_to_esact.py stores the model's bytes as a
host segment of the .esb) and the INT8 reference interpreter (which runs the same model on
onnxruntime, esact_cc/interpreter/host_region_onnxruntime.py), so the two compute the same
bits: onnxruntime's reductions, exponentials and fusions are not numpy's.
"""

from __future__ import annotations

import numpy as np

from esact_cc.dialects import transformer
from esact_cc.frontend.onnx_core import ModelProto
from esact_cc.frontend.onnx_export import export_ops
from esact_cc.frontend.raw_data_splice import serialize_spliced
from esact_cc.weight_store import WeightStore


def host_input_names(op: transformer.HostOp) -> list[str]:
    return [f"in{i}" for i in range(len(op.body.block.args))]


def host_output_names(op: transformer.HostOp) -> list[str]:
    return [f"out{i}" for i in range(len(op.outputs))]


def host_region_model(op: transformer.HostOp, store: WeightStore, opset: int,
                      graph_name: str, spliced: list[np.ndarray] | None = None) -> ModelProto:
    """The region's ops as a self-contained ONNX model: inputs `in<i>`, outputs `out<i>`
    (`spliced`: as export_ops')."""
    block = op.body.block
    terminator = block.last_op
    assert isinstance(terminator, transformer.YieldOp)
    body = [o for o in block.ops if o is not terminator]
    return export_ops(body, list(block.args), list(terminator.values), store, opset=opset,
                      input_names=host_input_names(op), output_names=host_output_names(op),
                      graph_name=graph_name, spliced=spliced)


def host_region_bytes(op: transformer.HostOp, store: WeightStore, opset: int,
                      graph_name: str) -> bytes:
    """host_region_model(...).SerializeToString(deterministic=True), its large weights
    copied once (raw_data_splice.py)."""
    spliced: list[np.ndarray] = []
    return serialize_spliced(host_region_model(op, store, opset, graph_name, spliced), spliced)
