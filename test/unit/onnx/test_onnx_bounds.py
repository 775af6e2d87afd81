"""Size bounds of folded results (folded_result_size) and their use by the frontend."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from esact_cc.dialects.onnx import ONNX_OP_TYPES
from esact_cc.frontend.folded_result_size import NON_GROWING, PREDICTED_OPS, result_elements
from esact_cc.interpreter.interpret_onnx_ops import ONNX_KERNELS, run_kernel
from esact_cc.frontend.onnx_frontend import import_onnx
from esact_cc.frontend.onnx_limits import (
    FOLD_MAX_ELEMENTS,
    MAX_DIM,
    MAX_TENSOR_ELEMENTS,
    check_shape,
    count_text,
    shape_text,
)
from esact_cc.ir_queries import main_function
from esact_cc.runtime.errors import CompileError

rng = np.random.default_rng(0)


def f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def test_every_op_is_bounded():
    assert set(ONNX_OP_TYPES) <= NON_GROWING | PREDICTED_OPS
    assert set(ONNX_KERNELS) <= NON_GROWING | PREDICTED_OPS
    assert not NON_GROWING & PREDICTED_OPS


# (op, inputs, attrs): the bound must hold for what the kernel then computes.
CASES = [
    ("Tile", [f32(2, 3), i64(4, 5)], {}),
    ("Tile", [f32(3), i64(4, 5)], {}),
    ("Tile", [f32(2, 3), i64(4)], {}),
    ("Expand", [f32(3, 1), i64(2, 3, 4)], {}),
    ("ConstantOfShape", [i64(3, 7)], {}),
    (
        "Range",
        [np.array(1.5, np.float32), np.array(9.0, np.float32), np.array(0.7, np.float32)],
        {},
    ),
    ("Range", [np.array(10, np.int64), np.array(0, np.int64), np.array(-3, np.int64)], {}),
    ("Pad", [f32(2, 3), i64(1, 0, 2, 4)], {}),
    ("Pad", [f32(2, 3), i64(3, 5), None, i64(-1)], {}),
    ("MatMul", [f32(2, 1, 3, 4), f32(5, 4, 6)], {}),
    ("MatMul", [f32(4), f32(4, 6)], {}),
    ("Gemm", [f32(4, 3), f32(5, 4), f32(5)], {"transA": 1, "transB": 1}),
    ("Einsum", [f32(2, 3), f32(4, 5)], {"equation": "ij,kl->ijkl"}),
    ("Einsum", [f32(2, 3, 4), f32(4, 5)], {"equation": "...j,jk->...k"}),
    ("Conv", [f32(1, 2, 5, 5), f32(3, 2, 2, 2)], {"pads": [1, 2, 0, 1]}),
    ("Gather", [f32(5, 4), i64(0, 1, 2, 3, 4, 4, 4)], {"axis": 0}),
    ("GatherND", [f32(4, 5, 3), np.array([[1, -1], [0, 2]], np.int64)], {}),
    ("Concat", [f32(2, 3), f32(2, 5)], {"axis": 1}),
    ("Add", [f32(7, 1), f32(1, 9)], {}),
    ("Where", [np.ones((4, 1, 1), bool), f32(1, 5, 1), f32(6)], {}),
    ("LayerNormalization", [f32(8, 1), f32(1, 8)], {"axis": -1}),
    ("Transpose", [f32(2, 3, 4)], {"perm": [2, 0, 1]}),
    ("Reshape", [f32(2, 6), i64(3, 4)], {}),
]


@pytest.mark.parametrize(
    "op, inputs, attrs", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_bound_holds_for_what_the_kernel_computes(op, inputs, attrs):
    outputs = run_kernel(op, inputs, attrs, 1)
    assert result_elements(op, inputs, attrs) >= max(np.asarray(o).size for o in outputs)


def test_huge_results_are_sized_without_allocating():
    base = np.ones(4, np.float32)
    assert result_elements("Tile", [base, i64(65536 * 65536)], {}) == 4 * 2**32
    assert result_elements("ConstantOfShape", [i64(1 << 40, 1 << 40)], {}) == 2**80
    assert result_elements("Expand", [base, i64(1 << 30, 4)], {}) == 2**32
    assert result_elements("Range", [np.array(0.0), np.array(1e30), np.array(1e-30)], {}) > 2**100


def test_a_tile_whose_repeats_are_folded_in_the_same_sweep_stays_a_node():
    # reps = 512 * 1024 only exists once the Mul is folded; shape inference has not seen it yet
    # when the sweep reaches the Tile, so only the predicted size keeps it from being evaluated.
    reps = 512 * 1024
    nodes = [
        helper.make_node("Constant", [], ["a"], value=numpy_helper.from_array(i64(512)), name="/a"),
        helper.make_node(
            "Constant", [], ["b"], value=numpy_helper.from_array(i64(1024)), name="/b"
        ),
        helper.make_node("Mul", ["a", "b"], ["reps"], name="/mul"),
        helper.make_node(
            "Constant",
            [],
            ["base"],
            value=numpy_helper.from_array(np.ones(4, np.float32)),
            name="/base",
        ),
        helper.make_node("Tile", ["base", "reps"], ["big"], name="/tile"),
        helper.make_node("ReduceSum", ["big"], ["s"], name="/sum", keepdims=1),
        helper.make_node("Add", ["x", "s"], ["y"], name="/add"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    assert 4 * reps > FOLD_MAX_ELEMENTS
    module, store = import_onnx(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    )
    ops = [op.name for op in main_function(module).body.block.ops]
    assert ops.count("onnx.Tile") == 1 and ops.count("onnx.ReduceSum") == 1
    assert all(store[name].size <= FOLD_MAX_ELEMENTS for name in store)


def test_error_lines_stay_short_for_huge_counts_and_shapes():
    assert count_text(12345) == "12345"
    assert count_text(2**5000) == count_text(2**5001 - 1) == "at least 2^5000"
    assert shape_text([2, 3]) == "2x3"
    assert shape_text([2] * 5000) == "2x2x2x2x2x2x2x2x... (rank 5000)"
    long_shape = r"shape 2x2x2x2x2x2x2x2x\.\.\. \(rank 64\) has at least 2\^64"
    with pytest.raises(CompileError, match=long_shape):
        check_shape([2] * 64, "value 'v'")
    with pytest.raises(CompileError, match=f"value 'v': dim 1 is {MAX_DIM + 1}"):
        check_shape([1, MAX_DIM + 1], "value 'v'")
    check_shape([-1, MAX_DIM, 0], "value 'v'")  # unknown dims skipped, MAX_DIM itself fine
    check_shape([-1, MAX_TENSOR_ELEMENTS], "value 'v'")
