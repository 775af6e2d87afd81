"""Hostile inputs around esact-dead-rows: a malformed `transformer.select_rows` in an IR file,
and the switch given where it cannot act. Each is one `prog: error:` line."""

from __future__ import annotations

import pytest
from hostile_run import assert_user_error, run_tool, tree_state
from one_linear import one_linear_model

from esact_cc import api

SELECT = ("builtin.module {{\n  func.func @main(%x: tensor<1x4x8xf32>) -> tensor<1x{n}x8xf32> {{\n"
          "    %y = transformer.select_rows %x rows [{rows}] : (tensor<1x4x8xf32>) -> "
          "tensor<1x{n}x8xf32>\n    func.return %y : tensor<1x{n}x8xf32>\n  }}\n}}\n")


@pytest.mark.parametrize("tool, rows, n, needles", [
    ("esact-opt", "4", 1, ["row 4 is out of range for 4 rows"]),
    ("esact-opt", "1, 1", 2, ["rows must be strictly increasing and non-negative, got [1, 1]"]),
    ("esact-opt", "-1", 1, ["rows must be strictly increasing and non-negative, got [-1]"]),
    ("esact-opt", "", 0, ["rows must not be empty"]),
    ("esact-opt", "0", 2, ["result must be 1x1x8, got 1x2x8"]),
    ("esact-cc", "4", 1, ["invalid IR", "row 4 is out of range for 4 rows"]),
])
def test_a_bad_select_rows_is_one_line(tmp_path, tool, rows, n, needles):
    (tmp_path / "in.mlir").write_text(SELECT.format(rows=rows, n=n))
    before = tree_state(tmp_path)
    result = run_tool(tool, "in.mlir", "-o", "out.mlir", cwd=tmp_path)
    assert_user_error(result, "in.mlir", "transformer.select_rows", *needles)
    assert tree_state(tmp_path) == before


def test_the_switch_on_ir_past_the_quantized_stage_is_a_command_line_error(tmp_path):
    api.compile(one_linear_model(), stage="quantized").save_ir(tmp_path / "q.mlir")
    before = tree_state(tmp_path)
    result = run_tool("esact-cc", "q.mlir", "--no-dead-rows", "-o", "out.mlir", cwd=tmp_path)
    assert_user_error(result, "--dead-rows is used by stage 'quantized'", "q.mlir", code=2)
    assert tree_state(tmp_path) == before
