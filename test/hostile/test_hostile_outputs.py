"""Hostile output paths and the one error path, every tool run as a whole process.

Outputs: a FIFO (standing in for a device: tests never write to a real one) is written
through, not replaced; a symlink stays a link and its target is written; an output that is an
input is refused; errors name the output path, not a temporary file; two outputs that map to
one file are an error; SIGTERM during a write leaves no temporary file. Errors: each of the
seven tools says `prog: error:` (argparse usage errors: exit 2; others: exit 1).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_run import assert_user_error, run_tool, tree_state
from onnx import TensorProto, helper, numpy_helper
from fifo_reader import read_fifo_in_background

TOOLS = ("esact-cc", "esact-opt", "esact-run", "esact-objdump", "esact-as", "esact-tune",
         "esact-demo")

MISSING_FILE_ARGS = {
    "esact-cc": ["missing.onnx", "-o", "out.esb"],
    "esact-opt": ["missing.mlir", "-o", "out.mlir"],
    "esact-run": ["missing.esb", "--report", "out.json"],
    "esact-objdump": ["missing.esb"],
    "esact-as": ["missing.s", "-o", "out.esb"],
    "esact-tune": ["missing.onnx", "--calibration-data", "missing.npz", "-o", "out.json"],
    "esact-demo": ["--hw", "missing.toml", "--samples", "1"],
}


def two_output_model(path: Path) -> None:
    """Outputs 'a/b' and 'a_b': both are `a_b.npy` once made file names."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4])
               for name in ("a/b", "a_b")]
    nodes = [helper.make_node("Relu", ["x"], ["a/b"]), helper.make_node("Neg", ["x"], ["a_b"])]
    graph = helper.make_graph(nodes, "two_outputs", [x], outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), path)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A small model, its input, its binary and the binary's assembly text."""
    root = tmp_path_factory.mktemp("built")
    two_output_model(root / "two.onnx")
    np.save(root / "x.npy", np.linspace(-1, 1, 4, dtype=np.float32).reshape(1, 4))
    assert run_tool("esact-cc", "two.onnx", "-o", "two.esb", cwd=root).returncode == 0
    listing = run_tool("esact-objdump", "-d", "two.esb", cwd=root)
    assert listing.returncode == 0, listing.stderr
    (root / "two.s").write_text(listing.stdout)
    return root


@pytest.fixture
def work(built, tmp_path) -> Path:
    for name in ("two.onnx", "x.npy", "two.esb", "two.s"):
        shutil.copy(built / name, tmp_path / name)
    return tmp_path


# --- the one error path -------------------------------------------------------------------
@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_names_itself_on_a_bad_argument(tool, tmp_path):
    result = run_tool(tool, "--no-such-option", cwd=tmp_path)
    assert result.stderr.startswith("usage: ")
    assert_user_error(result, code=2)
    assert tree_state(tmp_path) == {}


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_names_itself_on_a_missing_file(tool, tmp_path):
    result = run_tool(tool, *MISSING_FILE_ARGS[tool], cwd=tmp_path)
    assert_user_error(result, "missing.")
    assert tree_state(tmp_path) == {}


# --- where outputs go ---------------------------------------------------------------------
def test_a_fifo_output_is_written_through_and_stays_a_fifo(work):
    fifo = work / "out.fifo"
    os.mkfifo(fifo)
    thread, received = read_fifo_in_background(fifo)
    result = run_tool("esact-as", "two.s", "-o", fifo, cwd=work)
    thread.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert received == [(work / "two.esb").read_bytes()]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert not [p for p in os.listdir(work) if p.endswith(".tmp")]


def test_ir_with_weights_is_not_sent_to_a_fifo(work):
    """The weight store cannot go beside a FIFO: refused before the FIFO is opened."""
    fifo = work / "ir.fifo"
    os.mkfifo(fifo)
    np.save(work / "w.npy", np.ones((4, 4), np.float32))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.ones((4, 4), np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), work / "mm.onnx")
    before = tree_state(work)
    result = run_tool("esact-cc", "mm.onnx", "--compile-to", "onnx", "-o", fifo, cwd=work)
    assert_user_error(result, "ir.fifo", "not a regular file")
    assert tree_state(work) == before and stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("existing", [True, False])
def test_a_symlink_output_stays_a_link_and_its_target_is_written(work, existing):
    (work / "elsewhere").mkdir()
    real = work / "elsewhere" / "real.esb"
    if existing:
        real.write_bytes(b"old")
    (work / "link.esb").symlink_to(real)
    result = run_tool("esact-as", "two.s", "-o", "link.esb", cwd=work)
    assert result.returncode == 0, result.stderr
    assert (work / "link.esb").is_symlink() and os.readlink(work / "link.esb") == str(real)
    assert real.read_bytes() == (work / "two.esb").read_bytes()
    assert os.listdir(work / "elsewhere") == ["real.esb"]


@pytest.mark.parametrize("tool, args, needles", [
    ("esact-as", ["two.s", "-o", "./two.s"], ["-o './two.s'", "FILE 'two.s'"]),
    ("esact-cc", ["two.onnx", "--compile-to", "esb", "-o", "hardlink.onnx"],
     ["-o 'hardlink.onnx'", "MODEL"]),
    ("esact-cc", ["two.onnx", "--compile-to", "quantized", "-o", "x.mlir", "--calibration-data",
                  "x.npz"], ["-o (its weight store) 'x.npz'", "--calibration-data"]),
    ("esact-run", ["two.esb", "--input", "x=x.npy", "--report", "two.esb"], ["--report"]),
    ("esact-run", ["two.esb", "--input", "x=x.npy", "--trace", "x.npy"], ["--input x"]),
    ("esact-opt", ["in.mlir", "-o", "in.mlir"], ["INPUT 'in.mlir'"]),
])
def test_an_output_that_is_an_input_is_refused(work, tool, args, needles):
    os.link(work / "two.onnx", work / "hardlink.onnx")  # the same file under another name
    (work / "in.mlir").write_text("builtin.module {}\n")
    np.savez(work / "x.npz", x=np.zeros((1, 1, 4), np.float32))
    before = tree_state(work)
    line = assert_user_error(run_tool(tool, *args, cwd=work), *needles)
    assert "refusing to overwrite an input" in line
    assert tree_state(work) == before


def test_an_x_npy_output_is_refused_when_it_overwrites_the_input(work):
    """`--run` writes output arrays as <name>.npy: an output named like an input file is
    caught once the outputs are known (here the model's output `x` would replace x.npy)."""
    x = helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x_in"], ["x"])], "g", [x],
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), work / "relu.onnx")
    before = tree_state(work)
    result = run_tool("esact-cc", "relu.onnx", "--compile-to", "onnx", "--run", "--input",
                      "x_in=x.npy", "--output-dir", ".", cwd=work)
    assert_user_error(result, "--output-dir (output 'x')", "--input x_in")
    assert tree_state(work) == before


def test_two_outputs_in_one_file_are_refused(work):
    before = tree_state(work)
    result = run_tool("esact-run", "two.esb", "--input", "x=x.npy", "--report", "r.json",
                      "--trace", "./r.json", cwd=work)
    assert_user_error(result, "--report and --trace are the same file")
    assert tree_state(work) == before


@pytest.mark.parametrize("tool, args", [
    ("esact-run", ["two.esb", "--input", "x=x.npy", "--output-dir", "out", "--quiet"]),
    ("esact-cc", ["two.onnx", "--compile-to", "onnx", "--run", "--input", "x=x.npy",
                  "--output-dir", "out"]),
])
def test_output_names_that_collide_once_sanitised_are_an_error(work, tool, args):
    before = tree_state(work)
    result = run_tool(tool, *args, cwd=work)
    assert_user_error(result, "'a/b' and 'a_b'", "'a_b.npy'")
    assert tree_state(work) == before and not (work / "out").exists()


@pytest.mark.parametrize("tool, args, named", [
    ("esact-as", ["two.s", "-o", "a_dir"], "-o 'a_dir' is a directory"),
    ("esact-run", ["two.esb", "--input", "x=x.npy", "--report", "a_dir"], "--report 'a_dir'"),
    ("esact-cc", ["two.onnx", "-o", "two.s/out.esb"], "two.s/out.esb"),
    ("esact-as", ["two.s", "-o", "loop/out.esb"], "'loop/out.esb': Too many levels of symbolic"),
])
def test_unwritable_outputs_are_named_not_their_temporary_files(work, tool, args, named):
    (work / "a_dir").mkdir()
    (work / "loop").symlink_to(work / "loop")  # a symlink loop: every open fails with ELOOP
    before = tree_state(work)
    line = assert_user_error(run_tool(tool, *args, cwd=work), named)
    assert ".tmp" not in line
    assert tree_state(work) == before


# --- esact-tune validates before searching ------------------------------------------------
def test_tune_does_not_replace_a_missing_input_array_by_another(work):
    np.savez(work / "calib.npz", other=np.zeros((3, 1, 4), np.float32))
    result = run_tool("esact-tune", "two.onnx", "--calibration-data", "calib.npz",
                      "--input", "x=missing", "--output", "a_b", "-o", "spls.json", cwd=work)
    assert_user_error(result, "--input x=missing", "no such array", "other")
    assert not (work / "spls.json").exists()


def test_tune_checks_its_output_before_the_search(work):
    np.savez(work / "calib.npz", x=np.zeros((3, 1, 4), np.float32))
    (work / "spls_dir").mkdir()
    result = run_tool("esact-tune", "two.onnx", "--calibration-data", "calib.npz",
                      "--output", "a_b", "-o", "spls_dir", cwd=work)
    assert_user_error(result, "-o 'spls_dir' is a directory")
    assert result.stderr.count("\n") == 1  # no search progress was printed before it


# --- signals ------------------------------------------------------------------------------
def test_sigterm_while_writing_leaves_no_temporary_file(tmp_path):
    """Compile a model with 64 MB of weights to IR (the weight store takes a moment to
    write), send SIGTERM as soon as a temporary file appears."""
    n = 4096
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])
    weight = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), tmp_path / "big.onnx")
    proc = subprocess.Popen([shutil.which("esact-cc"), "big.onnx", "--compile-to", "onnx",
                             "-o", "big.mlir"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    signalled = False
    while proc.poll() is None and time.monotonic() < deadline:
        if any(name.endswith(".tmp") for name in os.listdir(tmp_path)):
            proc.send_signal(signal.SIGTERM)
            signalled = True
            break
        time.sleep(0.001)
    _, err = proc.communicate(timeout=120)
    assert signalled, "no temporary file was seen while the tool ran"
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.decode().splitlines()[-1:] == ["esact-cc: error: terminated by SIGTERM"]
    assert "Traceback" not in err.decode()
    assert sorted(os.listdir(tmp_path)) == ["big.onnx"]
