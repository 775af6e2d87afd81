"""Writes a tiny ONNX model (dynamic seq, a Shape subgraph to fold) for the import lit test."""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

nodes = [
    helper.make_node("MatMul", ["x", "proj.weight"], ["mm"], name="/proj/MatMul"),
    helper.make_node("Shape", ["mm"], ["shape"], name="/Shape"),
    helper.make_node("Reshape", ["mm", "shape"], ["same"], name="/Reshape"),
    helper.make_node("Softmax", ["same"], ["y"], name="/Softmax", axis=-1),
]
graph = helper.make_graph(
    nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seq", 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seq", 4])],
    [numpy_helper.from_array(np.ones((4, 4), np.float32), "proj.weight")],
)
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), sys.argv[1])
