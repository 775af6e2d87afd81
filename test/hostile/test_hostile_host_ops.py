"""Hostile models using host-only ONNX ops (run by onnxruntime): an op onnxruntime refuses, a
result beyond the element limit, control flow and random ops are one-line errors before
anything runs, and leave no output behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_run import assert_user_error, run_tool, tree_state
from onnx import TensorProto, helper, numpy_helper


def _save(tmp_path: Path, nodes, inputs, outputs, initializers=()) -> Path:  # noqa: ANN001
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _det_of_doubles(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, [3, 2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, [3])
    return (_save(tmp_path, [helper.make_node("Det", ["x"], ["y"], name="/det")], [x], [y]),
            ("/det (Det): onnxruntime cannot run it", "NOT_IMPLEMENTED"))


def _huge_resize(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    scales = numpy_helper.from_array(np.array([1, 1, 1e6], np.float32), "scales")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4096])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="/up", mode="nearest")
    return _save(tmp_path, [node], [x], [y], [scales]), ("'/up'", "beyond the limit")


def _loop(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    node = helper.make_node("Loop", ["x"], ["y"], name="/loop")
    return _save(tmp_path, [node], [x], [y]), ("/loop (Loop): control flow",)


def _random(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    node = helper.make_node("RandomNormal", [], ["y"], name="/noise", shape=[2])
    return _save(tmp_path, [node], [], [y]), ("/noise (RandomNormal): random",)


@pytest.mark.parametrize("make", [_det_of_doubles, _huge_resize, _loop, _random],
                         ids=["refused-by-onnxruntime", "huge-result", "loop", "random"])
def test_host_only_op_models_are_one_line_errors(tmp_path: Path, make) -> None:  # noqa: ANN001
    model, needles = make(tmp_path)
    before = tree_state(tmp_path)
    out = tmp_path / "out.esb"
    assert_user_error(run_tool("esact-cc", model, "-o", out, cwd=tmp_path), *needles)
    assert tree_state(tmp_path) == before
