"""esact-cc and esact-opt end to end: IR output, --run against onnxruntime, one-line errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from in_process_tool import run_in_process
from onnx import TensorProto, helper, numpy_helper


def small_model(seq: int | str = "seq") -> onnx.ModelProto:
    """x[1,seq,8] -> MatMul + bias -> Softmax, with a folded Shape subgraph in front of a Reshape."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="/proj/MatMul"),
        helper.make_node("Add", ["mm", "b"], ["lin"], name="/proj/Add"),
        helper.make_node("Shape", ["lin"], ["shape"], name="/Shape"),
        helper.make_node("Reshape", ["lin", "shape"], ["same"], name="/Reshape"),
        helper.make_node("Softmax", ["same"], ["probs"], name="/Softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, seq, 8])],
        [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run(tool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """In process (the results, output files and error lines are the subject here; the
    whole-process conventions of every tool are test_cli_conventions.py's)."""
    result = run_in_process(tool, *args, cwd=cwd or Path.cwd())
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(),
                                       result.stderr.decode())


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str,
                          code: int = 1) -> None:
    """One `prog: error:` line, exit `code` (2: a bad command line, 1: a bad input); or
    argparse's usage lines and that line, exit 2."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    if lines and lines[0].startswith("usage: "):
        assert result.returncode == 2, result.stdout + result.stderr
        lines = lines[-1:]
    else:
        assert result.returncode == code, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"{result.args[0]}: error: "), result.stderr
    assert fragment in lines[0], lines[0]


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "small.onnx"
    onnx.save(small_model(), path)
    return path


def test_compile_to_onnx_prints_ir_with_locations(model_path):
    result = run("esact-cc", str(model_path), "--compile-to", "onnx", "--input-shape", "x=1x4x8")
    assert result.returncode == 0, result.stderr
    assert 'onnx.MatMul %x, %0 : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32> loc("/proj/MatMul")' in result.stdout
    assert "onnx.Shape" not in result.stdout  # folded
    assert 'onnx.weight "w" : tensor<8x8xf32> loc("w")' in result.stdout


def test_output_file_and_weights_are_deterministic(model_path, tmp_path):
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name / "model.mlir"
        out.parent.mkdir()
        result = run("esact-cc", str(model_path), "--compile-to", "onnx", "--input-shape", "x=1x4x8", "-o", str(out))
        assert result.returncode == 0, result.stderr
        outputs.append((out.read_bytes(), out.with_suffix(".npz").read_bytes()))
    assert outputs[0] == outputs[1]
    assert b'esact.weight_store = "model.npz"' in outputs[0][0]


def test_run_writes_outputs_matching_onnxruntime(model_path, tmp_path):
    x = np.random.default_rng(0).standard_normal((1, 5, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = run("esact-cc", str(model_path), "--compile-to", "onnx", "--run", "--input", f"x={tmp_path / 'x.npy'}",
                 "--output-dir", str(tmp_path / "out"), "--dump-ir-dir", str(tmp_path / "dump"))
    assert result.returncode == 0, result.stderr
    expected = ort.InferenceSession(str(model_path)).run(None, {"x": x})[0]
    got = np.load(tmp_path / "out" / "probs.npy")
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert sorted(p.name for p in (tmp_path / "dump").iterdir()) == ["1-onnx.mlir", "1-onnx.npz"]
    assert "tensor<1x5x8xf32>" in (tmp_path / "dump" / "1-onnx.mlir").read_text()  # shape from x.npy


def test_esact_opt_reads_onnx_and_its_own_output(model_path, tmp_path):
    out = tmp_path / "m.mlir"
    result = run("esact-opt", str(model_path), "--input-shape", "x=1x3x8", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m.npz").exists()
    again = run("esact-opt", str(out), "-o", str(tmp_path / "n.mlir"))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "n.mlir").read_text() == out.read_text()  # it names the same m.npz


COMMAND_LINE_ERRORS = {"--run needs --output-dir"}
"""Fragments of the errors below that are about the command line alone: exit 2."""


@pytest.mark.parametrize(
    ("make_args", "fragment"),
    [
        (lambda m, t: [str(t / "missing.onnx")], "no such file"),
        (lambda m, t: [str(t / "garbage.onnx")], "cannot read ONNX model"),
        (lambda m, t: [str(m), "--compile-to", "onnx"], "input 'x' dim 1 ('seq') is dynamic"),
        (lambda m, t: [str(m), "--input-shape", "x=1xq"], "bad --input-shape 'x=1xq'"),
        (lambda m, t: [str(m), "--input-shape", "y=1x4"], "names 'y', which is not a model input"),
        (lambda m, t: [str(t / "unsupported.onnx")], "unsupported ONNX ops (2 nodes): /a (Loop): control flow with subgraphs"),
        (lambda m, t: [str(m), "--compile-to", "onnx", "--run", "--input", f"x={t / 'none.npy'}",
                       "--output-dir", str(t / "out")], "cannot read --input x"),
        (lambda m, t: [str(m), "--compile-to", "onnx", "--run", "--input", "x=a.npy"], "--run needs --output-dir"),
        (lambda m, t: [str(m), "--compile-to", "nowhere"], "invalid choice: 'nowhere'"),
        (lambda m, t: [str(m), "--compile-to", "onnx", "--input-shape", "x=1x4x8", "--run", "--input",
                       f"x={t / 'wrong.npy'}", "--output-dir", str(t / "out")], "input 'x' has shape (1, 4, 3)"),
    ],
)
def test_errors_are_one_line_without_partial_outputs(model_path, tmp_path, make_args, fragment):
    (tmp_path / "garbage.onnx").write_bytes(b"\x12\x34not an onnx model at all\xff")
    nodes = [helper.make_node("Loop", ["x"], ["y"], name="/a"), helper.make_node("If", ["y"], ["z"], name="/b")]
    bad = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                            [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(bad, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "unsupported.onnx")
    np.save(tmp_path / "wrong.npy", np.zeros((1, 4, 3), np.float32))
    out = tmp_path / "result.mlir"
    result = run("esact-cc", *make_args(model_path, tmp_path), "-o", str(out))
    assert_one_line_error(result, fragment, 2 if fragment in COMMAND_LINE_ERRORS else 1)
    assert not out.exists() and not out.with_suffix(".npz").exists()
    assert not (tmp_path / "out").exists()


def test_esact_opt_errors_are_one_line(tmp_path):
    nodes = [helper.make_node("Loop", ["x"], ["y"], name="/a")]
    bad = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(bad, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "u.onnx")
    assert_one_line_error(run("esact-opt", str(tmp_path / "u.onnx"), "-o", str(tmp_path / "u.mlir")),
                          "unsupported ONNX ops (1 nodes): /a (Loop): control flow")
    assert not (tmp_path / "u.mlir").exists()
    assert_one_line_error(run("esact-opt", str(tmp_path / "u.onnx"), "-p", "no-such-pass"),
                          "Unrecognized passes: ['no-such-pass']", code=2)
