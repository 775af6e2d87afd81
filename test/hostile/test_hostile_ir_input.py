"""Hostile IR text and pass pipelines given to esact-opt: each is one `esact-opt: error:` line.

xDSL raises its own exceptions (ParseError, VerifyException, ArgSpecParseError, ValueError,
UnicodeDecodeError, RecursionError); esact-opt turns those its input causes into one line
naming the input, and bounds what it reads.
"""

from __future__ import annotations

import pytest
from hostile_run import assert_user_error, run_tool, tree_state

from esact_cc.ir_files import MAX_IR_TEXT_BYTES


@pytest.mark.parametrize("text, needles", [
    (b'builtin.module attributes {a = "\xff\xfe"} {}\n', ["in.mlir", "not UTF-8", "byte 32"]),
    (b'builtin.module {\n  "test.op"() {a = [1, } : () -> ()\n}\n',
     ["in.mlir:2:24: attribute expected"]),
    (b"builtin.module {" + b'"test.op"() ({' * 3000 + b"})" * 3000 + b"}\n",
     ["in.mlir", "nested too deeply"]),
    (b'builtin.module { "builtin.module"() ({}) {sym_name = 3 : i32} : () -> () }\n',
     ["in.mlir: invalid IR", "expected a single block"]),
    (b"builtin.module {\n  %0 = onnx.Constant {value = dense<[1, 2]> : tensor<2xi64>} : "
     b"() -> tensor<3xi64>\n}\n",
     ["in.mlir: invalid IR", "onnx.Constant value has type tensor<2xi64>"]),
    (b"builtin.module attributes {esact.weight_store = 3 : i64} {}\n",
     ["esact.weight_store must be a string"]),
])
def test_bad_ir_text_is_one_line(tmp_path, text, needles):
    (tmp_path / "in.mlir").write_bytes(text)
    before = tree_state(tmp_path)
    result = run_tool("esact-opt", "--allow-unregistered-dialect", "in.mlir", "-o", "out.mlir",
                      cwd=tmp_path)
    assert_user_error(result, *needles)
    assert tree_state(tmp_path) == before


def test_an_endless_input_is_bounded(tmp_path):
    # /dev/zero as an *input* (nothing is written to a device): read up to the cap, then refused.
    result = run_tool("esact-opt", "/dev/zero", cwd=tmp_path)
    assert_user_error(result, "'/dev/zero'", f"{MAX_IR_TEXT_BYTES >> 30} GiB limit")


@pytest.mark.parametrize("args, needles", [
    (["-p", "no-such-pass"], ["-p 'no-such-pass'", "Unrecognized passes"]),
    (["-p", "insert-spls{"], ["-p 'insert-spls{'", "Expected argument name"]),
])
def test_bad_pass_pipelines_are_one_line(tmp_path, args, needles):
    (tmp_path / "in.mlir").write_text("builtin.module {}\n")
    assert_user_error(run_tool("esact-opt", "in.mlir", *args, cwd=tmp_path), *needles, code=2)


def test_an_unknown_extension_is_one_line(tmp_path):
    (tmp_path / "in.txt").write_text("builtin.module {}\n")
    assert_user_error(run_tool("esact-opt", "in.txt", cwd=tmp_path), "in.txt",
                      "Unrecognized file extension 'txt'")
