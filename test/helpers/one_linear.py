"""The smallest model every stage compiles: y = x [1, 4, 8] @ w [8, 8] (one transformer.linear),
for tests whose subject is a tool's handling of it, not the model."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def one_linear_model(seed: int = 0) -> onnx.ModelProto:
    w = (np.random.default_rng(seed).standard_normal((8, 8)) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "one_linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
