"""Hostile inputs around per-token activation scales: a bad `activation-scales` value (esact-cc,
esact-opt), a malformed `synthetic` entry in a calibrated IR file, and an INT8 linear in an IR
file whose token_scales contradict its other scales. Each is one `prog: error:` line and
touches nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
from hostile_run import assert_user_error, run_tool, tree_state
from one_linear import one_linear_model


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A one-linear model (m.onnx), lifted and calibrated (synthetic samples) by esact-opt
    (cal.mlir + cal.npz), then quantized with token scales (q.mlir + q.npz): made once, copied
    by each test."""
    directory = tmp_path_factory.mktemp("activation_scales")
    onnx.save(one_linear_model(), directory / "m.onnx")
    done = run_tool("esact-opt", "m.onnx", "-p", "lift-transformer,calibrate", "-o", "cal.mlir",
                    cwd=directory)
    assert done.returncode == 0, done.stderr
    assert ", synthetic}" in (directory / "cal.mlir").read_text()  # no data: the range says so
    done = run_tool("esact-opt", "cal.mlir", "-p", "quantize{activation-scales=token}", "-o",
                    "q.mlir", cwd=directory)
    assert done.returncode == 0, done.stderr
    assert "weight_scale(%1) token_scales" in (directory / "q.mlir").read_text()
    return directory


def _copy(made: Path, tmp_path: Path, *names: str) -> str:
    """Copy `names` from the fixture's directory into tmp_path; the last one's text."""
    for name in names:
        shutil.copy(made / name, tmp_path / name)
    return (tmp_path / names[-1]).read_text()


def test_a_bad_activation_scales_value_is_one_line(tmp_path, made):
    _copy(made, tmp_path, "m.onnx", "cal.npz", "cal.mlir")
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
def test_a_malformed_synthetic_entry_is_one_line(tmp_path, made, entry, needle):
    text = _copy(made, tmp_path, "cal.npz", "cal.mlir").replace(", synthetic}", f", {entry}}}")
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
def test_contradicting_scales_on_an_int8_linear_are_one_line(tmp_path, made, edit, needle):
    (tmp_path / "q.mlir").write_text(edit(_copy(made, tmp_path, "q.npz", "q.mlir")))
    before = tree_state(tmp_path)
    result = run_tool("esact-cc", "q.mlir", "-o", "out.esb", cwd=tmp_path)
    assert_user_error(result, "transformer.linear", needle)
    assert tree_state(tmp_path) == before
