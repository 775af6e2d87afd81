"""Host-only ONNX ops: every default-domain op onnxruntime runs is imported (no numpy kernel
needed); those it cannot run, and those that cannot be host ops, are one error naming why."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from esact_cc import api
from esact_cc.dialects.onnx import HOST_ONLY_OP_TYPES, ONNX_OP_TYPES
from esact_cc.dialects.onnx_host_op_types import NOT_ON_HOST
from esact_cc.frontend.onnx_frontend import import_onnx
from esact_cc.interpreter.interpret_onnx_ops import run_kernel
from esact_cc.runtime.errors import CompileError


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17):  # noqa: ANN001, ANN202
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_host_only_types_are_disjoint_from_numpy_ops_and_cover_decoder_ops() -> None:
    assert not set(HOST_ONLY_OP_TYPES) & set(ONNX_OP_TYPES)
    assert {"ConvTranspose", "Resize", "MaxPool", "AveragePool", "InstanceNormalization"} <= \
        set(HOST_ONLY_OP_TYPES)
    assert not set(NOT_ON_HOST) & set(HOST_ONLY_OP_TYPES)
    assert "nondeterministic" in NOT_ON_HOST["RandomNormal"].replace("not deterministic",
                                                                     "nondeterministic")


def test_pooling_model_runs_like_onnxruntime() -> None:
    import onnxruntime as ort

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])
    model = _model([helper.make_node("MaxPool", ["x"], ["p"], name="/pool", kernel_shape=[2, 2],
                                     strides=[2, 2]),
                    helper.make_node("HardSwish", ["p"], ["y"], name="/act")], [x], [y])
    inputs = {"x": np.random.default_rng(0).standard_normal((1, 2, 8, 8)).astype(np.float32)}
    expected = ort.InferenceSession(model.SerializeToString()).run(None, inputs)[0]
    for stage in ("onnx", "transformer"):
        np.testing.assert_array_equal(api.compile(model, stage=stage).run(inputs)["y"], expected)


def test_a_node_onnxruntime_refuses_is_one_error_naming_it() -> None:
    # A valid ONNX model (Det of float64), but onnxruntime's CPU provider has no such kernel.
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, [3, 2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, [3])
    model = _model([helper.make_node("Det", ["x"], ["y"], name="/det")], [x], [y])
    with pytest.raises(CompileError) as info:
        import_onnx(model)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("unsupported ONNX ops (1 nodes): /det (Det): onnxruntime cannot "
                              "run it: ")
    assert "NOT_IMPLEMENTED" in message


def test_random_op_is_refused_with_its_reason() -> None:
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    model = _model([helper.make_node("RandomUniform", [], ["y"], name="/noise", shape=[2])],
                   [], [y])
    with pytest.raises(CompileError, match=r"/noise \(RandomUniform\): random, so its outputs "
                                           r"are not deterministic"):
        import_onnx(model)


def test_host_only_op_on_constants_is_not_folded() -> None:
    image = numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(1, 1, 8), "image")
    scales = numpy_helper.from_array(np.array([1, 1, 2], np.float32), "scales")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 16])
    model = _model([helper.make_node("Resize", ["image", "", "scales"], ["up"], name="/up",
                                     mode="nearest"),
                    helper.make_node("Add", ["up", "x"], ["y"], name="/add")],
                   [x], [y], [image, scales])
    compiled = api.compile(model, stage="onnx")
    assert "onnx.Resize" in compiled.ir()
    got = compiled.run({"x": np.zeros((1, 1, 16), np.float32)})["y"]
    np.testing.assert_array_equal(got, np.repeat(np.arange(8, dtype=np.float32), 2)[None, None])


def test_run_kernel_of_a_host_only_op_needs_an_opset() -> None:
    x = np.ones((1, 1, 4), np.float32)
    with pytest.raises(CompileError, match="no numpy semantics for ONNX op Softsign"):
        run_kernel("Softsign", [x], {}, 1)
    np.testing.assert_array_equal(run_kernel("Softsign", [x], {}, 1, opset=17)[0], x / 2)


def test_exported_host_nodes_sharing_a_location_get_distinct_names() -> None:
    # A lift that copies an op (BLOOM's dynamo export) left two nodes named
    # `node_view/as_4d` in one host segment, which onnxruntime refuses.
    from esact_cc.frontend.onnx_export import _number_repeated_names

    nodes = [helper.make_node("Relu", ["a"], ["b"], name="n"),
             helper.make_node("Relu", ["b"], ["c"], name="n"),
             helper.make_node("Relu", ["c"], ["d"], name="n_1"),
             helper.make_node("Relu", ["d"], ["e"], name="n")]
    _number_repeated_names(nodes)
    assert [node.name for node in nodes] == ["n", "n_2", "n_1", "n_3"]
