"""onnx dialect -> ONNX export: import -> export -> onnxruntime reproduces the original."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from esact_cc.dialects.onnx import WeightOp
from onnx import TensorProto, helper, numpy_helper

from esact_cc.frontend.onnx_export import export_module, export_ops
from esact_cc.frontend.onnx_frontend import import_onnx
from esact_cc.ir_queries import main_function

_spec = importlib.util.spec_from_file_location("onnx_graphs", Path(__file__).with_name("onnx_graphs.py"))
graphs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graphs)


def run_ort(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, inputs)


def test_attention_block_round_trips_through_onnxruntime():
    model = graphs.attention_block(seq=10, width=32, heads=4)
    inputs = graphs.attention_inputs(10, width=32)
    module, store = import_onnx(model)
    exported = export_module(module, store)
    onnx.checker.check_model(exported, full_check=True)
    assert [i.name for i in exported.graph.input] == ["x", "mask"]
    assert [o.name for o in exported.graph.output] == ["y"]
    assert {i.name for i in exported.graph.initializer} == set(store)
    np.testing.assert_allclose(run_ort(exported, inputs)[0], run_ort(model, inputs)[0], rtol=1e-6, atol=1e-6)
    # Node names are the locations, i.e. the original node names.
    assert "/attn/probs" in {n.name for n in exported.graph.node}


def test_optional_input_gaps_and_multi_results_survive_export():
    nodes = [helper.make_node("Split", ["x"], ["a", "b"], name="/split", axis=0, num_outputs=2),
             helper.make_node("Slice", ["a", "st", "en", "", "sp"], ["s"], name="/slice"),
             helper.make_node("Add", ["s", "b"], ["y"], name="/add")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.array([2]), "st"), numpy_helper.from_array(np.array([-10]), "en"),
         numpy_helper.from_array(np.array([-1]), "sp")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    x = np.arange(6, dtype=np.float32)
    exported = export_module(*import_onnx(model))
    np.testing.assert_array_equal(run_ort(exported, {"x": x})[0], run_ort(model, {"x": x})[0])


def test_export_of_a_host_region_with_outside_values():
    """A sub-range of ops (here: the mask preprocessing) becomes a standalone model."""
    module, store = import_onnx(graphs.attention_block(seq=6))
    ops = list(main_function(module).body.block.ops)
    first = next(i for i, op in enumerate(ops) if op.name == "onnx.Unsqueeze")
    last = next(i for i, op in enumerate(ops) if op.name == "onnx.Mul" and i > first)
    region = ops[first:last + 1]
    mask_arg = main_function(module).body.block.args[1]
    # Constants the region uses but which are defined before it are pulled in as ops too.
    defined = {r for op in region for r in op.results}
    needed = list(dict.fromkeys(o.owner for op in region for o in op.operands
                                if o not in defined and o is not mask_arg))
    exported = export_ops(needed + region, [mask_arg], [region[-1].results[0]], store,
                          input_names=["mask"], output_names=["additive_mask"])
    mask = np.array([[1, 1, 1, 1, 0, 0]], np.int64)
    result = run_ort(exported, {"mask": mask})[0]
    np.testing.assert_array_equal(result, ((1.0 - mask) * -10000.0).reshape(1, 1, 1, 6).astype(np.float32))


def test_weight_output_and_input_passthrough_use_identity():
    w = np.arange(20, dtype=np.float32).reshape(4, 5)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="/mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
                              [numpy_helper.from_array(w, "w")])
    module, store = import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    block = main_function(module).body.block
    weight = next(op for op in block.ops if isinstance(op, WeightOp))
    exported = export_ops([weight], [block.args[0]], [block.args[0], weight.result], store)
    x = np.ones((2, 4), np.float32)
    got_x, got_w = run_ort(exported, {"input0": x})
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_w, w)
