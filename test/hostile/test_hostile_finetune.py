"""Hostile esact-finetune runs: no torch installed, bad numbers, a missing data file, a misspelt
SPLS option, the output over the model, a model without attention layers. Each is one
`esact-finetune: error:` line and no file written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_run import assert_user_error, run_tool, tree_state
from onnx import TensorProto, helper, numpy_helper

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"
VIT = FIXTURES / "vit_tiny_dynamo18.onnx"


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "model.onnx").write_bytes(VIT.read_bytes())
    images = np.load(FIXTURES / "vit_tiny_dynamo18.inputs.npz")["pixel_values"]
    np.savez(tmp_path / "data.npz", pixel_values=np.repeat(images, 2, axis=0))
    return tmp_path


def test_without_torch_one_line_names_the_extra(workdir, monkeypatch):
    shadow = workdir / "shadow"
    (shadow / "torch").mkdir(parents=True)
    (shadow / "torch" / "__init__.py").write_text("raise ImportError('no torch here')\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow))
    before = tree_state(workdir)
    result = run_tool("esact-finetune", "model.onnx", "--data", "data.npz", "-o", "out.onnx",
                      cwd=workdir)
    assert_user_error(result, "needs torch", "esact-cc[finetune]")
    assert tree_state(workdir) == before


@pytest.mark.parametrize("args, needles", [
    (["--epochs", "0"], ["--epochs"]),
    (["--learning-rate", "-1"], ["--learning-rate"]),
    (["--samples", "-2"], ["--samples"]),
    (["--validation", "-1"], ["--validation"]),
    (["--label-smoothing", "1"], ["--label-smoothing"]),
])
def test_bad_numbers_are_command_line_errors(workdir, args, needles):
    before = tree_state(workdir)
    result = run_tool("esact-finetune", "model.onnx", "--data", "data.npz", "-o", "out.onnx",
                      *args, cwd=workdir)
    assert_user_error(result, *needles, code=2)
    assert tree_state(workdir) == before


def test_validation_taking_every_input_leaves_nothing_to_train(workdir):
    pytest.importorskip("torch")  # the inputs are counted after the torch check
    before = tree_state(workdir)
    result = run_tool("esact-finetune", "model.onnx", "--data", "data.npz", "-o", "out.onnx",
                      "--validation", "2", cwd=workdir)
    assert_user_error(result, "--validation 2", "no training input")
    assert tree_state(workdir) == before


def test_output_over_the_model_is_refused(workdir):
    before = tree_state(workdir)
    result = run_tool("esact-finetune", "model.onnx", "--data", "data.npz", "-o", "model.onnx",
                      cwd=workdir)
    assert_user_error(result, "model.onnx")
    assert tree_state(workdir) == before


def test_missing_data_file(workdir):
    pytest.importorskip("torch")
    before = tree_state(workdir)
    result = run_tool("esact-finetune", "model.onnx", "--data", "nope.npz", "-o", "out.onnx",
                      cwd=workdir)
    assert_user_error(result, "nope.npz")
    assert tree_state(workdir) == before


def test_misspelt_spls_option(workdir):
    pytest.importorskip("torch")
    before = tree_state(workdir)
    result = run_tool("esact-finetune", "model.onnx", "--data", "data.npz", "-o", "out.onnx",
                      "--sparsity-option", "threshhold=0.5", cwd=workdir)
    assert_user_error(result, "threshhold", "threshold")
    assert tree_state(workdir) == before


def test_model_without_attention_layers(tmp_path):
    pytest.importorskip("torch")
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(tmp_path / "mlp.onnx"))
    np.savez(tmp_path / "data.npz", x=np.ones((2, 1, 3, 4), np.float32))
    before = tree_state(tmp_path)
    result = run_tool("esact-finetune", "mlp.onnx", "--data", "data.npz", "-o", "out.onnx",
                      cwd=tmp_path)
    assert_user_error(result, "no layer weight")
    assert tree_state(tmp_path) == before
