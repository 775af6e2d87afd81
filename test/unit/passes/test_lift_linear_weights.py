"""lift-transformer's weight handling on IR the frontend emits for big weights it does not fold:
MatMul(x, Transpose(W)) gets a new [in, out] tensor in the store (W itself is untouched), and a
bias that is an inline constant moves into the store behind a handle."""

# ruff: noqa: E501 (IR text)
from __future__ import annotations

import numpy as np
from esact_cc.passes.lift_transformer import lift_module
from xdsl.parser import Parser

from esact_cc.dialect_registry import make_context
from esact_cc.interpreter.reference_interpreter import run_module
from esact_cc.weight_store import WeightStore

IR = """
func.func @main(%x: tensor<1x3x4xf32>) -> tensor<1x3x2xf32> {
  %w = onnx.weight "dense.weight" : tensor<2x4xf32>
  %wt = onnx.Transpose %w {perm = array<i64: 1, 0>} : (tensor<2x4xf32>) -> tensor<4x2xf32> loc("/dense/Transpose")
  %y = onnx.MatMul %x, %wt : (tensor<1x3x4xf32>, tensor<4x2xf32>) -> tensor<1x3x2xf32> loc("/dense/MatMul")
  %b = onnx.Constant {value = dense<[0.5, -1.0]> : tensor<2xf32>} : () -> tensor<2xf32> loc("dense.bias")
  %z = onnx.Add %y, %b : (tensor<1x3x2xf32>, tensor<2xf32>) -> tensor<1x3x2xf32> loc("/dense/Add")
  func.return %z : tensor<1x3x2xf32>
}
"""


def test_transposed_weight_and_inline_bias_become_store_handles() -> None:
    module = Parser(make_context(), IR).parse_module()
    weight = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
    store = WeightStore({"dense.weight": weight})
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(1, 3, 4)
    expected = x @ weight.T + np.array([0.5, -1.0], np.float32)

    report = lift_module(module, store)
    module.verify()
    assert report.lifted["linear"] == 1 and not report.near_misses
    (linear,) = [op for op in module.walk() if op.name == "transformer.linear"]
    weight_name = linear.operands[1].op.weight_name.data
    bias_name = linear.operands[2].op.weight_name.data
    assert weight_name == "dense.weight.T"
    np.testing.assert_array_equal(store[weight_name], weight.T)
    np.testing.assert_array_equal(store["dense.weight"], weight)
    assert bias_name == "/dense/MatMul.bias"
    np.testing.assert_array_equal(store[bias_name], [0.5, -1.0])
    assert not [
        op for op in module.walk() if op.name in ("onnx.Transpose", "onnx.MatMul", "onnx.Add")
    ]
    (got,) = run_module(module, {"arg0": x}, store).values()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


SHARED_IR = """
func.func @main(%x: tensor<1x3x4xf32>) -> (tensor<1x3x2xf32>, tensor<1x3x2xf32>) {
  %w = onnx.weight "tied.weight" : tensor<2x4xf32>
  %wt = onnx.Transpose %w {perm = array<i64: 1, 0>} : (tensor<2x4xf32>) -> tensor<4x2xf32>
  %y = onnx.MatMul %x, %wt : (tensor<1x3x4xf32>, tensor<4x2xf32>) -> tensor<1x3x2xf32>
  %n = onnx.Neg %x : (tensor<1x3x4xf32>) -> tensor<1x3x4xf32>
  %z = onnx.MatMul %n, %wt : (tensor<1x3x4xf32>, tensor<4x2xf32>) -> tensor<1x3x2xf32>
  func.return %y, %z : tensor<1x3x2xf32>, tensor<1x3x2xf32>
}
"""


def test_a_transposed_weight_shared_by_two_matmuls_is_stored_once() -> None:
    module = Parser(make_context(), SHARED_IR).parse_module()
    store = WeightStore({"tied.weight": np.ones((2, 4), np.float32)})
    lift_module(module, store)
    module.verify()
    names = [op.operands[1].op.weight_name.data for op in module.walk() if op.name == "transformer.linear"]
    assert names == ["tied.weight.T", "tied.weight.T"]
    assert sorted(store) == ["tied.weight", "tied.weight.T"]
