"""One command-line convention across the seven tools (README "Command-line conventions"):
`--version`, `prog: error:` lines, exit 2 for a bad command line and 1 for a bad input,
`-o/--output` with `-o -` for stdout, diagnostics and IR dumps on stderr only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from in_process_tool import run_in_process
from onnx import TensorProto, helper, numpy_helper

from esact_cc.runtime.cli.conventions import tool_version

TOOLS = ("esact-cc", "esact-opt", "esact-run", "esact-objdump", "esact-as", "esact-tune",
         "esact-demo")
WITH_OUTPUT_OPTION = ("esact-cc", "esact-opt", "esact-objdump", "esact-as", "esact-tune")
"""esact-run and esact-demo write several files: --output-dir DIR (and --report, --trace)."""


def run(*args: str | Path, cwd: Path | None = None, stdin: bytes | None = None,
        ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(a) for a in args], capture_output=True, cwd=cwd, input=stdin,
                          check=False)


def call(tool: str, *args: str | Path, cwd: Path | None = None,
         ) -> subprocess.CompletedProcess[bytes]:
    """In process, for the tests about what a tool writes where (stdout, stderr, files) rather
    than about the process; --version, usage errors, missing inputs and the terminal check run
    every tool as a whole process."""
    return run_in_process(tool, *args, cwd=cwd or Path.cwd())


def error_lines(result: subprocess.CompletedProcess[bytes], tool: str) -> list[str]:
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith(f"{tool}: error: ")]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A one-layer model (x[1,4,8] @ w + b), its binary and its disassembly."""
    root = tmp_path_factory.mktemp("conventions")
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["mm"], name="/MatMul"),
         helper.make_node("Add", ["mm", "b"], ["y"], name="/Add")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
        [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), root / "m.onnx")
    assert call("esact-cc", "m.onnx", "-o", "m.esb", cwd=root).returncode == 0
    assert call("esact-objdump", "-d", "m.esb", "-o", "m.s", cwd=root).returncode == 0
    np.save(root / "x.npy", rng.standard_normal((1, 4, 8)).astype(np.float32))
    return root


@pytest.mark.parametrize("tool", TOOLS)
def test_version(tool: str) -> None:
    result = run(tool, "--version")
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"{tool} {tool_version()}"


@pytest.mark.parametrize("tool", TOOLS)
def test_an_unknown_option_is_a_usage_error(tool: str) -> None:
    result = run(tool, "--no-such-option")
    assert result.returncode == 2
    assert result.stderr.decode().startswith("usage: ")
    assert len(error_lines(result, tool)) == 1  # argparse names what is wrong first


BAD_INPUT = {
    "esact-cc": ["missing.onnx", "-o", "x.esb"],
    "esact-opt": ["missing.mlir"],
    "esact-run": ["missing.esb"],
    "esact-objdump": ["missing.esb"],
    "esact-as": ["missing.s", "-o", "x.esb"],
    "esact-tune": ["missing.onnx", "--calibration-data", "c.npz", "-o", "t.json"],
    "esact-demo": ["--hw", "missing.toml"],
}


@pytest.mark.parametrize("tool", TOOLS)
def test_a_missing_input_file_is_a_user_error(tool: str, tmp_path: Path) -> None:
    result = run(tool, *BAD_INPUT[tool], cwd=tmp_path)
    assert result.returncode == 1
    [line] = error_lines(result, tool)
    assert "missing" in line
    assert not any(tmp_path.iterdir())  # no partial output


BAD_COMBINATION = {
    "esact-cc": (["m.onnx", "--run"], "--run needs --output-dir"),
    "esact-opt": (["m.onnx", "-p", "no-such-pass"], "Unrecognized passes"),
    "esact-run": (["m.esb", "--input", "x.npy"], "--input 'x.npy': expected FILE.npz"),
    "esact-as": (["m.s", "-o", "-"], "refusing to write the .esb binary to a terminal"),
    "esact-tune": (["m.onnx", "--calibration-data", "c.npz", "--samples", "-1", "-o", "t.json"],
                   "--samples must be >= 0"),
    "esact-demo": (["--samples", "0"], "--samples must be in 1.."),
}


@pytest.mark.parametrize("tool", sorted(BAD_COMBINATION))
def test_a_bad_option_value_found_after_parsing_exits_2(tool: str, work: Path) -> None:
    args, fragment = BAD_COMBINATION[tool]
    if tool == "esact-as":  # stdout must look like a terminal for this one
        pytest.importorskip("pty")
        import os
        import pty

        leader, follower = pty.openpty()
        try:
            proc = subprocess.run([tool, *args], cwd=work, stdout=follower, stderr=subprocess.PIPE,
                                  check=False)
        finally:
            os.close(leader)
            os.close(follower)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, b"", proc.stderr)
    else:
        result = call(tool, *args, cwd=work)
    assert result.returncode == 2, result.stderr
    [line] = error_lines(result, tool)
    assert fragment in line


@pytest.mark.parametrize("tool", WITH_OUTPUT_OPTION)
def test_output_option_spellings(tool: str) -> None:
    help_text = call(tool, "--help").stdout.decode()
    assert "-o " in help_text and "--output" in help_text


def test_dash_o_dash_writes_to_stdout(work: Path) -> None:
    ir = call("esact-cc", "m.onnx", "--compile-to", "transformer", "-o", "-", cwd=work)
    assert ir.returncode == 0 and ir.stdout.startswith(b"builtin.module")
    opt = call("esact-opt", "m.onnx", "-o", "-", cwd=work)
    assert opt.returncode == 0 and opt.stdout.startswith(b"builtin.module")
    text = call("esact-objdump", "-d", "m.esb", "-o", "-", cwd=work)
    assert text.stdout.decode() == (work / "m.s").read_text()
    binary = call("esact-as", "m.s", "-o", "-", cwd=work)
    assert binary.stdout == (work / "m.esb").read_bytes()
    assert not (work / "-").exists()


def test_esact_cc_output_kind_follows_the_extension(work: Path, tmp_path: Path) -> None:
    assert call("esact-cc", work / "m.onnx", "-o", "a.esb", cwd=tmp_path).returncode == 0
    assert (tmp_path / "a.esb").read_bytes() == (work / "m.esb").read_bytes()
    assert call("esact-cc", work / "m.onnx", "-o", "a.mlir", cwd=tmp_path).returncode == 0
    assert "esact.gemm" in (tmp_path / "a.mlir").read_text()  # the last IR stage
    piped = call("esact-cc", work / "m.onnx", cwd=tmp_path)  # stdout is a pipe: the binary
    assert piped.returncode == 0 and piped.stdout == (work / "m.esb").read_bytes()
    for args, fragment in ((["-o", "y.esb", "--compile-to", "transformer"], "names a binary"),
                           (["-o", "y.mlir", "--compile-to", "esb"], "names IR"),
                           (["-o", "y.bin"], "the extension says neither")):
        result = call("esact-cc", work / "m.onnx", *args, cwd=tmp_path)
        assert result.returncode == 2 and fragment in error_lines(result, "esact-cc")[0]


@pytest.fixture(scope="module")
def plain_outputs() -> dict:
    """Each tool's stdout without the diagnostic flags, computed once."""
    return {}


@pytest.mark.parametrize("tool", ["esact-cc", "esact-opt"])
@pytest.mark.parametrize("flags", [["--mlir-print-ir-after-all"], ["--mlir-timing"],
                                   ["--mlir-print-ir-before=quantize",
                                    "--mlir-print-ir-after=lift-transformer"]])
def test_dumps_and_timings_go_to_stderr_only(tool: str, flags: list[str], work: Path,
                                              plain_outputs: dict) -> None:
    args = (["m.onnx", "--compile-to", "quantized"] if tool == "esact-cc"
            else ["m.onnx", "-p", "lift-transformer,calibrate,quantize"])
    if tool not in plain_outputs:
        plain = call(tool, *args, cwd=work)
        assert plain.returncode == 0, plain.stderr
        plain_outputs[tool] = plain.stdout
    traced = call(tool, *args, *flags, cwd=work)
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout == plain_outputs[tool]
    stderr = traced.stderr.decode()
    if "--mlir-timing" in flags:
        assert "Execution time report" in stderr and "quantize" in stderr
    else:
        assert "// -----// IR Dump After LiftTransformer" in stderr or \
            "// -----// IR Dump After" in stderr
    if "--mlir-print-ir-before=quantize" in flags:
        assert stderr.count("IR Dump Before") == 1 and "(quantize) //----- //" in stderr
        assert stderr.count("IR Dump After") == 1 and "(lift-transformer) //----- //" in stderr


@pytest.mark.parametrize("tool", ["esact-cc", "esact-opt"])
def test_old_spellings_still_print_the_ir(tool: str, work: Path) -> None:
    old = "--print-ir-after-all" if tool == "esact-cc" else "--print-between-passes"
    args = ["m.onnx", "--compile-to", "transformer"] if tool == "esact-cc" else \
        ["m.onnx", "-p", "lift-transformer"]
    result = call(tool, *args, old, cwd=work)
    assert result.returncode == 0
    assert "IR Dump After" in result.stderr.decode() and b"IR Dump" not in result.stdout


def test_tree_dir_writes_one_ir_file_per_pass_with_weights(work: Path, tmp_path: Path) -> None:
    result = call("esact-opt", work / "m.onnx", "-p", "lift-transformer,calibrate,quantize",
                 "--mlir-print-ir-after-all", "--mlir-print-ir-tree-dir", tmp_path / "tree")
    assert result.returncode == 0, result.stderr
    assert b"IR Dump" not in result.stderr
    folder = tmp_path / "tree" / "builtin_module_no-symbol-name"
    names = sorted(p.name for p in folder.glob("*.mlir"))
    assert names == ["0_lift-transformer.mlir", "1_calibrate.mlir", "2_quantize.mlir"]
    # each file is an IR file another tool reads, weights and all
    again = call("esact-cc", folder / "2_quantize.mlir", "-o", tmp_path / "q.esb")
    assert again.returncode == 0, again.stderr


def test_x86_target_is_a_one_line_usage_error(work: Path) -> None:
    result = call("esact-opt", "m.onnx", "-t", "x86-asm", cwd=work)
    assert result.returncode == 2
    assert "invalid choice: 'x86-asm' (choose from mlir)" in error_lines(result, "esact-opt")[0]


def test_unknown_pass_name_in_print_option(work: Path) -> None:
    result = call("esact-cc", "m.onnx", "--mlir-print-ir-after=quantise", cwd=work)
    assert result.returncode == 2
    assert "did you mean 'quantize'" in error_lines(result, "esact-cc")[0]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
