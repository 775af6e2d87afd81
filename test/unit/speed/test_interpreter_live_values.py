"""The reference interpreter keeps only live values: a value is dropped after the last op
that reads it (calibration's memory at long sequences), and results are unchanged."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from esact_cc.frontend.onnx_frontend import import_onnx
from esact_cc.interpreter.reference_interpreter import Interpreter
from esact_cc.ir_queries import main_function

CHAIN = 40


def chain_model():  # type: ignore[no-untyped-def]
    """y = x + relu(x + relu(... )) : each link reads the previous link and the input x."""
    nodes, previous = [], "x"
    for i in range(CHAIN):
        nodes += [helper.make_node("Relu", [previous], [f"r{i}"], name=f"relu{i}"),
                  helper.make_node("Add", [f"r{i}", "x"], [f"a{i}"], name=f"add{i}")]
        previous = f"a{i}"
    nodes.append(helper.make_node("Identity", [previous], ["y"], name="out"))
    graph = helper.make_graph(nodes, "chain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


class LiveCounter(Interpreter):
    def __init__(self, store):  # type: ignore[no-untyped-def]
        super().__init__(store)
        self.most_live = 0

    def run_op(self, op, args):  # type: ignore[no-untyped-def]
        self.most_live = max(self.most_live, len(self.env))
        return super().run_op(op, args)


def test_only_live_values_are_kept_and_results_are_unchanged() -> None:
    module, store = import_onnx(chain_model())
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    interpreter = LiveCounter(store)
    y = interpreter.run_function(main_function(module), {"x": x})["y"]
    expected = x
    for _ in range(CHAIN):
        expected = np.maximum(expected, 0) + x
    np.testing.assert_array_equal(y, expected)
    assert interpreter.most_live <= 3  # x, the link being read, and its relu (not 2 * CHAIN)
    assert len(interpreter.env) <= 2  # after the run: x and the returned value at most
