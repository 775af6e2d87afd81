"""Hostile inputs around per-token activation scales: a bad `activation-scales` value (esact-cc,
esact-opt), a malformed `synthetic` entry in a calibrated IR file, and an INT8 linear in an IR
file whose token_scales contradict its other scales. Each is one `prog: error:` line and
touches nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_run import assert_user_error, run_tool, tree_state
from onnx import TensorProto, helper, numpy_helper


def _calibrated_ir(tmp_path: Path) -> str:
    """A one-linear model, lifted and calibrated (synthetic samples) by esact-opt: cal.mlir."""
    w = (np.random.default_rng(0).standard_normal((8, 8)) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "one_linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
        [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "m.onnx")
    done = run_tool("esact-opt", "m.onnx", "-p", "lift-transformer,calibrate", "-o", "cal.mlir",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "cal.mlir").read_text()
    assert ", synthetic}" in text  # no calibration data: the range says so
    return text


def test_a_bad_activation_scales_value_is_one_line(tmp_path):
    _calibrated_ir(tmp_path)
    before = tree_state(tmp_path)
    result = run_tool("esact-opt", "cal.mlir", "-p", "quantize{activation-scales=rows}",
                      cwd=tmp_path)
    assert_user_error(result, "activation-scales must be one of tensor|token, got 'rows'",
                      code=2)  # a bad pass option is a bad command line
    result = run_tool("esact-cc", "m.onnx", "--activation-scales", "rows", "-o", "m.esb",
                      cwd=tmp_path)
    assert_user_error(result, "--activation-scales", "invalid choice: 'rows'", code=2)
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("entry, needle", [
    ("synthetic = 1 : i64", "'synthetic' must be a unit attribute (no value)"),
    ("synthetic = \"yes\"", "'synthetic' must be a unit attribute (no value)"),
])
def test_a_malformed_synthetic_entry_is_one_line(tmp_path, entry, needle):
    text = _calibrated_ir(tmp_path).replace(", synthetic}", f", {entry}}}")
    (tmp_path / "cal.mlir").write_text(text)
    before = tree_state(tmp_path)
    result = run_tool("esact-opt", "cal.mlir", "-p", "quantize", cwd=tmp_path)
    assert_user_error(result, "esact.calibration", needle)
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t.replace("token_scales", "input_scale(5.000000e-01) token_scales"),
     "input_scale and token_scales are exclusive"),
    (lambda t: t.replace(" weight_scale(%1)", "").replace(
        "tensor<8x8xi8>, tensor<8xf32>)", "tensor<8x8xi8>)"),
     "token_scales needs an INT8 weight_scale"),
])
def test_contradicting_scales_on_an_int8_linear_are_one_line(tmp_path, edit, needle):
    _calibrated_ir(tmp_path)
    done = run_tool("esact-opt", "cal.mlir", "-p", "quantize{activation-scales=token}", "-o",
                    "q.mlir", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "q.mlir").read_text()
    assert "weight_scale(%1) token_scales" in text
    (tmp_path / "q.mlir").write_text(edit(text))
    before = tree_state(tmp_path)
    result = run_tool("esact-cc", "q.mlir", "-o", "out.esb", cwd=tmp_path)
    assert_user_error(result, "transformer.linear", needle)
    assert tree_state(tmp_path) == before
