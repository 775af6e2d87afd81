"""Hostile `--input` / `--calibration-data` bindings, `--dim` values and inline IR weights:
one `prog: error:` line naming the input, array and file; exit 2 for a malformed command
line, 1 for a file that does not fit it; nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_run import assert_user_error, run_tool, tree_state
from onnx import TensorProto, helper, numpy_helper


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """m.onnx: y = x[1,seq,8] @ w; its binary for seq=4; arrays in several containers."""
    root = tmp_path_factory.mktemp("bindings")
    rng = np.random.default_rng(2)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="/MatMul")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seq", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seq", 8])],
        [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), root / "m.onnx")
    assert run_tool("esact-cc", "m.onnx", "--dim", "seq=4", "-o", "m.esb", cwd=root).returncode == 0
    x = rng.standard_normal((1, 4, 8)).astype(np.float32)
    np.save(root / "x.npy", x)
    np.savez(root / "one.npz", data=x)
    np.savez(root / "two.npz", x=x, extra=x)
    np.savez(root / "calib.npz", images=rng.standard_normal((3, 1, 4, 8)).astype(np.float32),
             labels=np.arange(3))
    np.savez(root / "strings.npz", x=np.array(["a", "b"]))
    (root / "adir.npz").mkdir()
    return root


RUN_CASES = [
    (["--input", "x.npy"], 2, ["--input 'x.npy'", "expected FILE.npz, NAME=FILE.npy"]),
    (["--input", "x=one.npz:"], 2, ["--input 'x=one.npz:'", "no array name after ':'"]),
    (["--input", "x=x.npy", "--input", "x=one.npz"], 2, ["--input x given twice"]),
    (["--input", "x=two.npz:nope"], 1, ["'two.npz' has no array 'nope'", "arrays: extra, x"]),
    (["--input", "x=calib.npz"], 1, ["has no array 'x' and more than one array",
                                     "x=calib.npz:ARRAY"]),
    (["--input", "two.npz"], 1, ["--input 'two.npz'", "array 'extra' is not an input"]),
    (["--input", "z=x.npy"], 1, ["--input 'z=x.npy'", "has no input 'z' (inputs: x)"]),
    (["--input", "x=strings.npz"], 1, ["'strings.npz'", "not a numeric array"]),
    (["--input", "x=adir.npz"], 1, ["adir.npz", "is a directory"]),
    ([], 1, ["--input: lacks input(s) x"]),
]


@pytest.mark.parametrize("args, code, needles", RUN_CASES)
def test_esact_run_bindings(work: Path, args: list[str], code: int, needles: list[str]) -> None:
    before = tree_state(work)
    result = run_tool("esact-run", "m.esb", *args, "--report", "r.json", cwd=work)
    assert_user_error(result, *needles, code=code)
    assert tree_state(work) == before


def test_each_binding_form_runs(work: Path) -> None:
    for spec in ("x=x.npy", "x=one.npz", "x=two.npz:x", "one.npz"):
        args = ["--input", spec] if spec != "one.npz" else ["--input", "x=one.npz:data"]
        result = run_tool("esact-run", "m.esb", *args, "--quiet", cwd=work)
        assert result.returncode == 0, result.stderr


CALIBRATION_CASES = [
    (["--calibration-data", "images=calib.npz:images"], 1,
     ["--calibration-data 'images=calib.npz:images'", "the model has no input 'images'"]),
    (["--calibration-data", "calib.npz"], 1,
     ["lacks input(s) x", "'images' of 'calib.npz'"]),
    (["--calibration-data", "x=strings.npz"], 1, ["calibration data 'strings.npz'",
                                                  "not a numeric array"]),
    (["--calibration-data", "x="], 2, ["--calibration-data 'x='", "expected NAME=FILE"]),
    (["--dim", "seq=0"], 2, ["--dim 'seq=0'", "expected SYMBOL=SIZE"]),
    (["--dim", "batch=2"], 2, ["--dim batch: no input of 'm.onnx' has a dim named 'batch'",
                               "symbolic dims: seq"]),
]


@pytest.mark.parametrize("args, code, needles", CALIBRATION_CASES)
def test_esact_cc_bindings_and_dims(work: Path, args: list[str], code: int,
                                    needles: list[str]) -> None:
    before = tree_state(work)
    shape = [] if "--dim" in args else ["--dim", "seq=4"]
    result = run_tool("esact-cc", "m.onnx", *shape, *args, "-o", "out.esb", cwd=work)
    assert_user_error(result, *needles, code=code)
    assert tree_state(work) == before


def test_a_calibration_binding_compiles(work: Path, tmp_path: Path) -> None:
    result = run_tool("esact-cc", work / "m.onnx", "--dim", "seq=4", "--calibration-data",
                      f"x={work / 'calib.npz'}:images", "-o", "q.esb", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


INLINE_CASES = [
    ('{-# dialect_resources: { builtin: { w: "0x40000000ZZ" } } #-}',
     ["is not KEY: \"0x<hex>\""]),
    ('{-# dialect_resources: { builtin: { w: "0x4000000093" } } #-}',
     ["resource 'w': not a .npy array"]),
    ('{-# dialect_resources: { builtin: { other: "0x40000000" } } #-}',
     ["resource 'other'"]),
]


@pytest.fixture(scope="module")
def lifted(work: Path) -> str:
    """m.onnx lifted by esact-cc, weights inline (printed to stdout)."""
    done = run_tool("esact-cc", "m.onnx", "--dim", "seq=4", "--compile-to", "transformer",
                    cwd=work)
    assert done.returncode == 0 and "{-#" in done.stdout, done.stderr
    return done.stdout


@pytest.mark.parametrize("section, needles", INLINE_CASES)
def test_hostile_inline_weights(lifted: str, tmp_path: Path, section: str,
                                needles: list[str]) -> None:
    (tmp_path / "in.mlir").write_text(lifted[:lifted.index("{-#")] + section + "\n")
    before = tree_state(tmp_path)
    for tool, args in (("esact-opt", ["in.mlir"]), ("esact-cc", ["in.mlir", "-o", "x.esb"])):
        assert_user_error(run_tool(tool, *args, cwd=tmp_path), "in.mlir", *needles)
    assert tree_state(tmp_path) == before


def test_inline_weights_and_a_weight_store_together_are_refused(work: Path,
                                                                tmp_path: Path) -> None:
    assert run_tool("esact-cc", work / "m.onnx", "--dim", "seq=4", "--compile-to", "onnx",
                    "-o", "f.mlir", cwd=tmp_path).returncode == 0
    inline = run_tool("esact-cc", work / "m.onnx", "--dim", "seq=4", "--compile-to", "onnx",
                      cwd=tmp_path).stdout
    both = (tmp_path / "f.mlir").read_text().rstrip("\n") + inline[inline.index("\n{-#"):]
    (tmp_path / "both.mlir").write_text(both)
    assert_user_error(run_tool("esact-opt", "both.mlir", cwd=tmp_path),
                      "has inline weights and names a weight store")
