"""IR in and out as iree-compile / mlir-opt do: IR on stdout carries its weights inline, any
stage's IR compiles further, and every route gives the binary the direct compile gives."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from in_process_tool import run_in_process
from onnx import TensorProto, helper, numpy_helper


def run_process(*args: str | Path, cwd: Path, stdin: bytes | None = None,
                ) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run([str(a) for a in args], capture_output=True, cwd=cwd, input=stdin,
                            check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result


def run(tool: str, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """In process: these tests are about the IR and the binary, not the process; the pipe test
    below runs whole processes."""
    result = run_in_process(tool, *args, cwd=cwd)
    assert result.returncode == 0, result.stderr.decode()
    return result


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A two-linear model with a GELU between, and its binary compiled directly."""
    root = tmp_path_factory.mktemp("round_trip")
    rng = np.random.default_rng(1)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="/fc1/MatMul"),
         helper.make_node("Add", ["h", "b1"], ["hb"], name="/fc1/Add"),
         helper.make_node("Relu", ["hb"], ["r"], name="/act"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="/fc2/MatMul")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seq", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seq", 8])],
        [numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w1"),
         numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b1"),
         numpy_helper.from_array(rng.standard_normal((32, 8)).astype(np.float32), "w2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), root / "m.onnx")
    run("esact-cc", "m.onnx", "--dim", "seq=4", "-o", "direct.esb", cwd=root)
    return root


def test_esact_opt_pipes_keep_the_weights(work: Path) -> None:
    """esact-opt | esact-opt | esact-cc - : the weights travel inline; same binary."""
    lifted = run_process("esact-opt", "m.onnx", "--dim", "seq=4", "-p", "lift-transformer",
                         cwd=work)
    assert b"{-#\n  dialect_resources: {\n    builtin: {\n" in lifted.stdout
    assert b"esact.weight_store" not in lifted.stdout
    quantized = run_process("esact-opt", "-", "-p", "calibrate,quantize", cwd=work,
                            stdin=lifted.stdout)
    assert b"dialect_resources" in quantized.stdout
    binary = run_process("esact-cc", "-", "-o", "-", cwd=work, stdin=quantized.stdout)
    assert binary.stdout == (work / "direct.esb").read_bytes()


@pytest.mark.parametrize("stage", ["onnx", "transformer", "quantized", "esact"])
def test_every_stage_compiles_further_to_the_same_binary(work: Path, tmp_path: Path,
                                                         stage: str) -> None:
    run("esact-cc", work / "m.onnx", "--dim", "seq=4", "--compile-to", stage, "-o",
        f"{stage}.mlir", cwd=tmp_path)
    assert (tmp_path / f"{stage}.npz").exists()  # a file: the weights beside it
    run("esact-cc", f"{stage}.mlir", "-o", "again.esb", cwd=tmp_path)
    assert (tmp_path / "again.esb").read_bytes() == (work / "direct.esb").read_bytes()


@pytest.fixture(scope="module")
def piped(work: Path) -> str:
    """The lifted model as esact-cc prints it to stdout (weights inline)."""
    return run("esact-cc", "m.onnx", "--dim", "seq=4", "--compile-to", "transformer",
               cwd=work).stdout.decode()


def test_stdout_ir_is_the_file_ir_with_weights_inline(work: Path, tmp_path: Path,
                                                      piped: str) -> None:
    """The same module either way; only where the weights are differs."""
    from esact_cc.ir_files import split_weights_section
    from esact_cc.weight_store import WeightStore

    run("esact-cc", work / "m.onnx", "--dim", "seq=4", "--compile-to", "transformer", "-o",
        "t.mlir", cwd=tmp_path)
    text, inline = split_weights_section(piped, "stdout")
    in_file = (tmp_path / "t.mlir").read_text().replace(', esact.weight_store = "t.npz"', "")
    assert text == in_file
    beside = WeightStore.load(tmp_path / "t.npz")
    assert inline is not None and sorted(inline) == sorted(beside)
    for name in beside:
        np.testing.assert_array_equal(inline[name], beside[name])


def test_ir_without_its_weights_is_refused_naming_the_weight(piped: str, tmp_path: Path) -> None:
    (tmp_path / "bare.mlir").write_text(piped[:piped.index("{-#")])
    result = run_in_process("esact-cc", "bare.mlir", "-o", "x.esb", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.decode().startswith("esact-cc: error: IR file 'bare.mlir': onnx.weight names "
                                    "weight '")
    assert not (tmp_path / "x.esb").exists()


def test_options_of_stages_the_ir_has_passed_are_refused(work: Path, tmp_path: Path) -> None:
    run("esact-cc", work / "m.onnx", "--dim", "seq=4", "--compile-to", "quantized", "-o",
        "q.mlir", cwd=tmp_path)
    for args, fragment in ((["--calibration-data", "c.npz"], "--calibration-data is used by "
                            "stage 'quantized', which the IR 'q.mlir' has been through"),
                           (["--compile-to", "transformer"], "is IR of stage 'quantized', after "
                            "--compile-to transformer"),
                           (["--dim", "seq=4"], "has static shapes already")):
        result = run_in_process("esact-cc", "q.mlir", "-o", "y.mlir", *args, cwd=tmp_path)
        assert result.returncode == 2 and fragment in result.stderr.decode(), result.stderr
