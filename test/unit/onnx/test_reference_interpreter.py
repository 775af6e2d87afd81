"""Reference interpreter: every onnx op against onnxruntime, an attention block, dispatch, errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from esact_cc.dialects.onnx import ONNX_OP_TYPES
from esact_cc.runtime.errors import CompileError
from onnx import TensorProto, numpy_helper

from esact_cc.frontend.onnx_frontend import import_onnx
from esact_cc.interpreter.reference_interpreter import Interpreter, register, registered_ops, run_module

_spec = importlib.util.spec_from_file_location("onnx_graphs", Path(__file__).with_name("onnx_graphs.py"))
graphs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graphs)

rng = np.random.default_rng(0)


def f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def pos(*shape: int) -> np.ndarray:
    return (rng.random(shape) + 0.5).astype(np.float32)


def i64(*values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


B = np.array([[True, False, True], [False, False, True]])
# (op, graph inputs, initializer inputs, attributes, number of outputs)
CASES: list[tuple[str, dict, dict, dict, int]] = [
    ("Abs", {"x": f32(2, 3)}, {}, {}, 1),
    ("Add", {"a": f32(2, 3), "b": f32(3)}, {}, {}, 1),
    ("And", {"a": B, "b": ~B}, {}, {}, 1),
    ("ArgMax", {"x": f32(3, 4)}, {}, {"axis": 1, "keepdims": 0}, 1),
    ("Cast", {"x": f32(2, 3) * 10}, {}, {"to": TensorProto.INT64}, 1),
    ("Ceil", {"x": f32(5)}, {}, {}, 1),
    ("Clip", {"x": f32(2, 5)}, {"lo": np.array(-0.5, np.float32), "hi": np.array(0.5, np.float32)}, {}, 1),
    ("Concat", {"a": f32(2, 3), "b": f32(2, 2)}, {}, {"axis": 1}, 1),
    ("ConstantOfShape", {}, {"s": i64(2, 3)}, {"value": numpy_helper.from_array(np.array([7], np.int64))}, 1),
    ("Conv", {"x": f32(1, 3, 8, 8)}, {"w": f32(4, 3, 3, 3), "b": f32(4)},
     {"strides": [2, 2], "pads": [1, 1, 0, 0], "dilations": [1, 1]}, 1),
    ("Conv", {"x": f32(1, 4, 6, 6)}, {"w": f32(4, 2, 2, 2)}, {"group": 2, "dilations": [2, 2]}, 1),
    ("Cos", {"x": f32(4)}, {}, {}, 1),
    ("CumSum", {"x": f32(3, 4)}, {"ax": np.array(1, np.int64)}, {"exclusive": 1, "reverse": 1}, 1),
    ("Div", {"a": f32(2, 3), "b": pos(2, 3)}, {}, {}, 1),
    ("Div", {"a": i64(7, -7, 7, -7)}, {"b": i64(2, 2, -2, -2)}, {}, 1),
    ("Dropout", {"x": f32(2, 3)}, {}, {}, 1),
    ("Einsum", {"a": f32(2, 3, 4), "b": f32(2, 4, 5)}, {}, {"equation": "bij,bjk->bik"}, 1),
    ("Equal", {"a": i64(1, 2, 3)}, {"b": i64(1, 0, 3)}, {}, 1),
    ("Erf", {"x": f32(4, 50) * 2}, {}, {}, 1),
    ("Exp", {"x": f32(2, 3)}, {}, {}, 1),
    ("Expand", {"x": f32(3, 1)}, {"s": i64(2, 3, 4)}, {}, 1),
    ("Flatten", {"x": f32(2, 3, 4)}, {}, {"axis": 2}, 1),
    ("Floor", {"x": f32(5)}, {}, {}, 1),
    ("Gather", {"x": f32(5, 4)}, {"i": i64(0, -1, 3)}, {"axis": 0}, 1),
    ("Gather", {"x": f32(5, 4)}, {"i": np.array(2, np.int64)}, {"axis": 1}, 1),
    ("GatherElements", {"x": f32(3, 4)}, {"i": np.array([[0, -1], [2, 1], [3, 0]], np.int64)}, {"axis": 1}, 1),
    ("GatherND", {"x": f32(4, 5, 3)}, {"i": np.array([[1, -1], [0, 2]], np.int64)}, {}, 1),
    ("GatherND", {"x": f32(2, 5, 3)}, {"i": np.array([[[4], [0]], [[-1], [2]]], np.int64)}, {"batch_dims": 1}, 1),
    ("Gelu", {"x": f32(3, 40) * 3}, {}, {}, 1),
    ("Gelu", {"x": f32(3, 40) * 3}, {}, {"approximate": "tanh"}, 1),
    ("Gemm", {"a": f32(4, 3)}, {"b": f32(5, 4), "c": f32(5)}, {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}, 1),
    ("Greater", {"a": f32(4), "b": f32(4)}, {}, {}, 1),
    ("GreaterOrEqual", {"a": i64(1, 2, 3)}, {"b": i64(2, 2, 2)}, {}, 1),
    ("Identity", {"x": f32(2)}, {}, {}, 1),
    ("IsNaN", {"x": np.array([1.0, np.nan], np.float32)}, {}, {}, 1),
    ("LayerNormalization", {"x": f32(2, 3, 8)}, {"g": f32(8), "b": f32(8)}, {"epsilon": 1e-5}, 1),
    ("LayerNormalization", {"x": f32(2, 3, 8)}, {"g": f32(3, 8)}, {"axis": 1}, 1),
    ("Less", {"a": f32(4), "b": f32(4)}, {}, {}, 1),
    ("LessOrEqual", {"a": i64(1, 2, 3)}, {"b": i64(2, 2, 2)}, {}, 1),
    ("Log", {"x": pos(4)}, {}, {}, 1),
    ("MatMul", {"a": f32(2, 3, 4, 5), "b": f32(2, 3, 5, 6)}, {}, {}, 1),
    ("MatMul", {"a": f32(7, 5)}, {"b": f32(5, 3)}, {}, 1),
    ("Max", {"a": f32(3), "b": f32(3), "c": f32(3)}, {}, {}, 1),
    ("Min", {"a": f32(2, 3), "b": f32(3)}, {}, {}, 1),
    ("Mod", {"a": i64(5, -5, 7)}, {"b": i64(3, 3, -4)}, {}, 1),
    ("Mod", {"a": f32(4) * 5, "b": pos(4)}, {}, {"fmod": 1}, 1),
    ("Mul", {"a": f32(2, 3), "b": f32(2, 1)}, {}, {}, 1),
    ("Neg", {"x": f32(3)}, {}, {}, 1),
    ("Not", {"x": B}, {}, {}, 1),
    ("Or", {"a": B, "b": ~B}, {}, {}, 1),
    ("Pad", {"x": f32(2, 3)}, {"p": i64(1, 0, 0, 2), "v": np.array(1.5, np.float32)}, {}, 1),
    ("Pow", {"a": pos(3, 4)}, {"b": np.array(3.0, np.float32)}, {}, 1),
    ("Range", {}, {"s": np.array(1, np.int64), "l": np.array(10, np.int64), "d": np.array(3, np.int64)}, {}, 1),
    ("Reciprocal", {"x": pos(3)}, {}, {}, 1),
    ("ReduceL1", {"x": f32(2, 3, 4)}, {"ax": i64(1)}, {}, 1),
    ("ReduceL2", {"x": f32(2, 3, 4)}, {"ax": i64(-1)}, {"keepdims": 0}, 1),
    ("ReduceSumSquare", {"x": f32(2, 3, 4)}, {}, {}, 1),
    ("ReduceMax", {"x": f32(2, 3, 4)}, {"ax": i64(1)}, {"keepdims": 0}, 1),
    ("ReduceMean", {"x": f32(2, 3, 4)}, {"ax": i64(-1)}, {}, 1),
    ("ReduceMin", {"x": f32(2, 3, 4)}, {"ax": i64(0, 2)}, {}, 1),
    ("ReduceProd", {"x": pos(2, 3)}, {}, {}, 1),
    ("ReduceSum", {"x": f32(2, 3, 4)}, {"ax": i64(1)}, {"keepdims": 1}, 1),
    ("Relu", {"x": f32(5)}, {}, {}, 1),
    ("Reshape", {"x": f32(2, 3, 4)}, {"s": i64(0, -1)}, {}, 1),
    ("ScatterND", {"x": f32(4, 3)}, {"i": np.array([[1], [3]], np.int64), "u": f32(2, 3)}, {}, 1),
    ("Shape", {"x": f32(2, 3, 4)}, {}, {"start": 1}, 1),
    ("Sigmoid", {"x": f32(6)}, {}, {}, 1),
    ("Sign", {"x": f32(6)}, {}, {}, 1),
    ("Sin", {"x": f32(6)}, {}, {}, 1),
    ("Size", {"x": f32(2, 3)}, {}, {}, 1),
    ("Slice", {"x": f32(5, 6)}, {"st": i64(4, 1), "en": i64(-100, 5), "ax": i64(0, 1), "sp": i64(-2, 2)}, {}, 1),
    ("Softmax", {"x": f32(2, 3, 5)}, {}, {"axis": 1}, 1),
    ("Split", {"x": f32(2, 7)}, {"s": i64(3, 4)}, {"axis": 1}, 2),
    ("Split", {"x": f32(5, 2)}, {}, {"num_outputs": 3}, 3),
    ("Sqrt", {"x": pos(4)}, {}, {}, 1),
    ("Squeeze", {"x": f32(1, 3, 1)}, {"ax": i64(-1)}, {}, 1),
    ("Sub", {"a": f32(2, 3), "b": f32(3)}, {}, {}, 1),
    ("Sum", {"a": f32(3), "b": f32(3)}, {}, {}, 1),
    ("Tanh", {"x": f32(5)}, {}, {}, 1),
    ("Tile", {"x": f32(2, 3)}, {"r": i64(2, 1)}, {}, 1),
    ("Transpose", {"x": f32(2, 3, 4)}, {}, {"perm": [2, 0, 1]}, 1),
    ("Trilu", {"x": f32(2, 4, 4)}, {"k": np.array(1, np.int64)}, {"upper": 0}, 1),
    ("Unsqueeze", {"x": f32(2, 3)}, {"ax": i64(0, -1)}, {}, 1),
    ("Where", {"c": B, "a": f32(2, 3), "b": f32(3)}, {}, {}, 1),
    ("Xor", {"a": B, "b": ~B[::-1]}, {}, {}, 1),
]


def test_every_dialect_op_has_semantics_and_a_test_case():
    assert {f"onnx.{t}" for t in ONNX_OP_TYPES} <= set(registered_ops())
    tested = {case[0] for case in CASES} | {"Constant"}  # Constant: covered by the frontend tests
    assert set(ONNX_OP_TYPES) == tested


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_op_matches_onnxruntime(case):
    op, inputs, constants, attrs, n_outputs = case
    opset = 20 if op == "Gelu" else 18  # Gelu exists from opset 20
    model = graphs.single_node(op, inputs, n_outputs, opset=opset, constant_inputs=constants, **attrs)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, inputs)
    module, store = import_onnx(model)
    got = run_module(module, inputs, store)
    assert list(got) == [f"out{i}" for i in range(n_outputs)]
    for value, reference in zip(got.values(), expected, strict=True):
        assert value.dtype == reference.dtype and value.shape == reference.shape
        if value.dtype.kind == "f":
            np.testing.assert_allclose(value, reference, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(value, reference)


def test_attention_block_matches_onnxruntime():
    model = graphs.attention_block(seq=12, width=32, heads=4)
    inputs = graphs.attention_inputs(12, width=32)
    reference = ort.InferenceSession(model.SerializeToString()).run(None, inputs)[0]
    module, store = import_onnx(model)
    got = run_module(module, inputs, store)["y"]
    assert np.abs(got - reference).max() <= 1e-5 * np.abs(reference).max()


def test_run_op_can_be_overridden_to_observe_values():
    module, store = import_onnx(graphs.attention_block(seq=4))

    class Recording(Interpreter):
        def __init__(self, store):
            super().__init__(store)
            self.seen: list[str] = []

        def run_op(self, op, args):
            self.seen.append(op.name)
            return super().run_op(op, args)

    interpreter = Recording(store)
    from esact_cc.ir_queries import main_function

    interpreter.run_function(main_function(module), graphs.attention_inputs(4))
    assert interpreter.seen.count("onnx.Softmax") == 1 and interpreter.seen.count("onnx.weight") == 10


def test_registered_implementation_replaces_semantics():
    module, store = import_onnx(graphs.single_node("Relu", {"x": f32(3)}))
    from esact_cc.interpreter import reference_interpreter

    original = reference_interpreter._IMPLS["onnx.Relu"]
    try:
        register("onnx.Relu")(lambda interp, op, args: [np.full(3, 42.0, np.float32)])
        assert run_module(module, {"x": f32(3)}, store)["out0"].tolist() == [42.0] * 3
    finally:
        register("onnx.Relu")(original)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, r"missing input\(s\): x"),
        ({"x": f32(4), "y": f32(3)}, r"unknown input\(s\): y"),
        ({"x": f32(4)}, r"input 'x' has shape \(4,\), the model expects \(3,\)"),
        ({"x": np.array(["a", "b", "c"])}, r"input 'x' has dtype <U1, the model expects float32"),
    ],
)
def test_bad_inputs(inputs, message):
    module, store = import_onnx(graphs.single_node("Relu", {"x": f32(3)}))
    with pytest.raises(CompileError, match=message):
        run_module(module, inputs, store)


def test_unknown_op_is_named_with_its_location():
    # A registered op with no interpreter semantics (func.call).
    from xdsl.dialects import func as func_dialect
    from xdsl.dialects.builtin import ModuleOp, NameLoc, NoneAttr, StringAttr, TensorType
    from xdsl.dialects.builtin import f32 as F32
    from xdsl.ir import Block, Region

    block = Block(arg_types=[TensorType(F32, [2])])
    call = func_dialect.CallOp("other", [block.args[0]], [TensorType(F32, [2])])
    call.location = NameLoc(StringAttr("/my/node"), NoneAttr())
    block.add_ops([call, func_dialect.ReturnOp(call.results[0])])
    module = ModuleOp([func_dialect.FuncOp("main", ([TensorType(F32, [2])], [TensorType(F32, [2])]), Region(block))])
    with pytest.raises(CompileError, match='no semantics for func.call at "/my/node"'):
        run_module(module, {"arg0": f32(2)}, store=None)


def test_conv_with_more_input_channels_than_the_weight_is_an_error_not_a_broadcast():
    """einsum broadcasts a 1-channel weight over any channel count: a fuzzed model with a
    1048576-channel input ran for minutes instead of failing (bench/fuzz_inputs.py model 2337)."""
    from esact_cc.interpreter.interpret_onnx_ops import run_kernel

    x = np.zeros((1, 3, 4, 4), np.float32)
    w = np.zeros((8, 1, 2, 2), np.float32)
    with pytest.raises(CompileError, match="Conv input has 3 channels.*expects 1"):
        run_kernel("Conv", [x, w], {"strides": [2, 2]}, 1)
    ok = run_kernel("Conv", [x[:, :1], w], {"strides": [2, 2]}, 1)[0]
    assert ok.shape == (1, 8, 2, 2)
