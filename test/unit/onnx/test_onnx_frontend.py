"""ONNX frontend: import, shape fixing, folding, weight handles, locations, errors."""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from esact_cc.dialects.onnx import WeightOp
from esact_cc.runtime.errors import CompileError
from onnx import TensorProto, helper, numpy_helper

from esact_cc.api import ir_text, parse_ir
from esact_cc.frontend.onnx_frontend import import_onnx, parse_input_shape
from esact_cc.frontend.onnx_validation import first_inference_error
from esact_cc.ir_queries import main_function

_spec = importlib.util.spec_from_file_location("onnx_graphs", Path(__file__).with_name("onnx_graphs.py"))
graphs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graphs)

SHAPES = {"x": (1, 6, 16), "mask": (1, 6)}


def op_counts(module) -> Counter:
    return Counter(op.name for op in main_function(module).body.block.ops)


def test_import_folds_shape_subgraphs_and_keeps_one_op_per_compute_node():
    module, store = import_onnx(graphs.attention_block(), SHAPES)
    counts = op_counts(module)
    # Shape/Gather/Unsqueeze(of shapes)/Concat are folded; what computes stays, one op per node.
    assert counts["onnx.Shape"] == 0 and counts["onnx.Gather"] == 0 and counts["onnx.Concat"] == 0
    assert counts["onnx.MatMul"] == 6 and counts["onnx.Reshape"] == 4 and counts["onnx.Softmax"] == 1
    assert counts["onnx.Unsqueeze"] == 2  # of the mask input: not constant
    reshape_shapes = sorted(
        tuple(op.operands[1].owner.attributes["value"].get_values())
        for op in main_function(module).body.block.ops if op.name == "onnx.Reshape"
    )
    assert reshape_shapes == [(1, 6, -1), (1, 6, 2, 8), (1, 6, 2, 8), (1, 6, 2, 8)]
    assert sorted(store) == ["b_k", "b_o", "b_q", "b_v", "ln_b", "ln_g", "w_k", "w_o", "w_q", "w_v"]


def test_weights_are_handles_with_store_values_not_literals():
    model = graphs.attention_block()
    expected = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    module, store = import_onnx(model, SHAPES)
    weights = [op for op in main_function(module).body.block.ops if isinstance(op, WeightOp)]
    assert {op.weight_name.data for op in weights} == set(store)
    for op in weights:
        np.testing.assert_array_equal(store[op.weight_name.data], expected[op.weight_name.data])
        assert tuple(op.result.type.get_shape()) == store[op.weight_name.data].shape
    text = ir_text(module)
    assert f"{expected['w_q'][0, 0]:.6g}"[:6] not in text  # no weight values in the IR
    assert 'onnx.weight "w_q" : tensor<16x16xf32> loc("w_q")' in text


def test_locations_are_node_names_and_io_names_are_kept():
    text = ir_text(import_onnx(graphs.attention_block(), SHAPES)[0])
    assert 'onnx.Softmax %30 {axis = -1 : i64} : (tensor<1x2x6x6xf32>) -> tensor<1x2x6x6xf32> loc("/attn/probs")' in text
    assert '%x: tensor<1x6x16xf32> {onnx.name = "x"} loc("x")' in text
    assert '-> (tensor<1x6x16xf32> {onnx.name = "y"})' in text


def test_printed_ir_parses_back_identically():
    text = ir_text(import_onnx(graphs.attention_block(), SHAPES)[0])
    assert ir_text(parse_ir(text)) == text


def test_import_is_deterministic():
    first = ir_text(import_onnx(graphs.attention_block(), SHAPES)[0])
    assert ir_text(import_onnx(graphs.attention_block(), SHAPES)[0]) == first


def test_input_shapes_fix_dynamic_dims():
    module, _ = import_onnx(graphs.attention_block(), {"x": (1, 9, 16), "mask": (1, 9)})
    main = main_function(module)
    assert [tuple(a.type.get_shape()) for a in main.body.block.args] == [(1, 9, 16), (1, 9)]
    assert tuple(main.function_type.outputs.data[0].get_shape()) == (1, 9, 16)


def test_static_model_needs_no_input_shapes():
    module, _ = import_onnx(graphs.attention_block(seq=5))
    assert tuple(main_function(module).body.block.args[1].type.get_shape()) == (1, 5)


def test_unknown_dim_error_names_input_and_dim():
    with pytest.raises(CompileError, match=r"input 'x' dim 1 \('seq'\) is dynamic.*--input-shape x=1xNx16"):
        import_onnx(graphs.attention_block(), {"mask": (1, 6)})


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({"x": (1, 6, 16), "mask": (1, 6), "ids": (1,)}, r"names 'ids', which is not a model input"),
        ({"x": (1, 6), "mask": (1, 6)}, r"input 'x' has rank 3 but --input-shape gives 2 dims"),
        ({"x": (1, 6, 32), "mask": (1, 6)}, r"input 'x' dim 2 is 16 in the model, but --input-shape gives 32"),
    ],
)
def test_bad_input_shapes(shapes, message):
    with pytest.raises(CompileError, match=message):
        import_onnx(graphs.attention_block(), shapes)


def test_parse_input_shape():
    assert parse_input_shape("input_ids=1x128") == ("input_ids", (1, 128))
    for bad in ("input_ids", "input_ids=1xa", "=1x2", "x=0x3"):
        with pytest.raises(CompileError, match="bad --input-shape"):
            parse_input_shape(bad)


def test_unsupported_ops_are_all_listed_in_one_error():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="ok"),
        helper.make_node("Loop", ["a"], ["b"], name="/loop"),
        helper.make_node("StringNormalizer", ["b"], ["c"], name="/strings"),
        helper.make_node("FusedMatMul", ["c"], ["y"], name="/fused", domain="com.microsoft"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(CompileError) as info:
        import_onnx(model)
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        "unsupported ONNX ops (3 nodes): /loop (Loop): control flow with subgraphs, which the IR "
        "does not hold; /strings (StringNormalizer): its values are sequences, optionals or "
        "strings, not numeric tensors; /fused (com.microsoft.FusedMatMul)")


def test_malformed_and_missing_files(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07this is not a protobuf \xff\xff\xff")
    with pytest.raises(CompileError, match=r"cannot read ONNX model '.*garbage.onnx'"):
        import_onnx(garbage)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(CompileError, match="cannot read ONNX model"):
        import_onnx(empty)
    with pytest.raises(CompileError, match="no such file"):
        import_onnx(tmp_path / "missing.onnx")


def test_constant_nodes_small_inline_large_in_store():
    small = helper.make_node("Constant", [], ["s"], name="/small", value=numpy_helper.from_array(
        np.arange(4, dtype=np.float32)))
    large = helper.make_node("Constant", [], ["l"], name="/large", value=numpy_helper.from_array(
        np.arange(32, dtype=np.float32).reshape(8, 4)))
    nodes = [small, large, helper.make_node("MatMul", ["x", "l"], ["m"], name="/mm"),
             helper.make_node("Add", ["m", "s"], ["y"], name="/add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    module, store = import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    text = ir_text(module)
    assert ('onnx.Constant {value = dense<[0.000000e+00, 1.000000e+00, 2.000000e+00, 3.000000e+00]> '
            ': tensor<4xf32>} : () -> tensor<4xf32> loc("/small")') in text
    assert 'onnx.weight "l" : tensor<8x4xf32> loc("/large")' in text
    np.testing.assert_array_equal(store["l"], np.arange(32, dtype=np.float32).reshape(8, 4))


def test_constant_subgraph_on_weights_is_folded_into_the_store():
    # Transpose(W) with W an initializer: folded to a new stored weight.
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], name="/wT", perm=[1, 0]),
             helper.make_node("MatMul", ["x", "wt"], ["y"], name="/mm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(w, "w")])
    module, store = import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert op_counts(module)["onnx.Transpose"] == 0
    np.testing.assert_array_equal(store["wt"], w.T)


def test_optional_input_gap_is_recorded():
    # Slice with starts, ends, (no axes), steps.
    nodes = [helper.make_node("Slice", ["x", "st", "en", "", "sp"], ["y"], name="/slice")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([5]), "st"), numpy_helper.from_array(np.array([0]), "en"),
         numpy_helper.from_array(np.array([-2]), "sp")])
    module, _ = import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert "onnx_input_positions = array<i64: 0, 1, 2, 4>" in ir_text(module)
    assert "-> tensor<3xf32>" in ir_text(module)


def test_local_functions_are_inlined():
    inner = helper.make_function("custom", "Double", ["a"], ["b"],
                                 [helper.make_node("Add", ["a", "a"], ["b"])],
                                 opset_imports=[helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("Double", ["x"], ["y"], name="/double", domain="custom")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, functions=[inner], opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)])
    assert op_counts(import_onnx(model)[0])["onnx.Add"] == 1


def test_import_from_path_clears_nothing_in_callers_proto(tmp_path):
    model = graphs.attention_block()
    before = model.SerializeToString()
    import_onnx(model, SHAPES)
    assert model.SerializeToString() == before  # a caller's ModelProto is never modified
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    _, store = import_onnx(path, SHAPES)
    np.testing.assert_array_equal(store["w_q"], numpy_helper.to_array(model.graph.initializer[8]))


def test_shape_inference_failure_is_one_short_line(tmp_path):
    # The bundled ViT with its input's batch edited to 4: the reshape's declared batch 1 no
    # longer merges, and every later node fails too; the error names the first and a count.
    from esact_cc.bundled_model import MODELS_DIR

    model = onnx.load(MODELS_DIR / "digits_vit.onnx")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    path = tmp_path / "batch4.onnx"
    onnx.save(model, path)
    with pytest.raises(CompileError) as info:
        import_onnx(path)
    message = str(info.value)
    assert "\n" not in message and message.count("(op_type:") == 1
    assert message.startswith("ONNX shape inference failed: ")
    assert re.search(r"Inferred=4 Declared=1 Dimension=0 \(\d+ more\)$", message), message


def test_one_inference_error_has_no_count():
    error = RuntimeError("[ShapeInferenceError] Inference error(s): (op_type:Add, node name: a):"
                         " [TypeInferenceError] bad\n")
    assert first_inference_error(error) == ("[ShapeInferenceError] Inference error(s): "
                                            "(op_type:Add, node name: a): [TypeInferenceError] bad")
    assert first_inference_error(ValueError("other\nerror")) == "other error"
