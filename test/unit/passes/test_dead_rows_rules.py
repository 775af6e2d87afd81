"""esact-dead-rows' rules on small IR: what an attention may narrow, what a host read is, the
copy's row runs and the summary line."""

from __future__ import annotations

import numpy as np
import pytest

from esact_cc.api import parse_ir
from esact_cc.dialects import transformer
from esact_cc.ir_queries import main_function
from esact_cc.passes.dead_rows import (dead_rows_line, eliminate_dead_rows, narrowed_query_note,
                                       needed_rows)
from esact_cc.interpreter.reference_interpreter import run_module
from esact_cc.passes.lower_select_rows import row_runs
from esact_cc.weight_store import WeightStore

SCALES = "q_scale(0.03) k_scale(0.04) v_scale(0.02) p_scale(0.00787401572)"


def _module(attention_extra: str = "", mask: str = "", read: str = "dense<0> : tensor<i64>",
            out: str = "tensor<1x8xf32>"):
    mask_arg = f', %m: {mask} {{onnx.name = "m"}}' if mask else ""
    mask_use = " mask %m" if mask else ""
    mask_type = f", {mask}" if mask else ""
    return parse_ir(f"""
builtin.module {{
  func.func @main(%x: tensor<1x4x8xf32> {{onnx.name = "x"}}{mask_arg}) -> {out} {{
    %a = transformer.attention %x, %x, %x{mask_use} heads(2) scale(0.5) {attention_extra} {SCALES} {{layer = 0 : i64, role = "attention"}} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>{mask_type}) -> tensor<1x4x8xf32>
    %y = transformer.host(%a) : (tensor<1x4x8xf32>) -> {out} {{
    ^bb0(%t: tensor<1x4x8xf32>):
      %i = onnx.Constant {{value = {read}}} : () -> tensor<{read.split('tensor<')[1]}
      %g = onnx.Gather %t, %i {{axis = 1 : i64}} : (tensor<1x4x8xf32>, tensor<{read.split('tensor<')[1]}) -> {out}
      transformer.yield %g : {out}
    }}
    func.return %y : {out}
  }}
}}
""")


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.removeprefix("tensor<").split("x")[:-1])


def _attention(module) -> transformer.AttentionOp:
    return next(op for op in module.walk() if isinstance(op, transformer.AttentionOp))


@pytest.mark.parametrize("extra, mask, read, narrowed", [
    ("", "", "dense<0> : tensor<i64>", True),
    # a padding mask broadcast over the queries does not depend on the query row
    ("", "tensor<1x1x1x4xf32>", "dense<0> : tensor<i64>", True),
    # a mask with a query axis would have to be narrowed too: every query row is kept
    ("", "tensor<1x1x4x4xf32>", "dense<0> : tensor<i64>", False),
    # causal attention places its Lq queries last: a suffix narrows, row 0 does not
    ("causal", "", "dense<3> : tensor<i64>", True),
    ("causal", "", "dense<0> : tensor<i64>", False),
])
def test_an_attention_narrows_its_queries_only_where_its_rule_allows(extra, mask, read, narrowed):
    module = _module(extra, mask, read)
    before = module.clone()
    eliminate_dead_rows(main_function(module).body.block)
    module.verify()
    assert _attention(module).q.type.get_shape()[1] == (1 if narrowed else 4)
    rng = np.random.default_rng(1)
    inputs = {"x": rng.standard_normal((1, 4, 8)).astype(np.float32)}
    if mask:
        inputs["m"] = np.where(rng.random(_shape(mask)) < 0.3, -1e4, 0).astype(np.float32)
    outputs = [run_module(m, inputs, WeightStore({})) for m in (module, before)]
    np.testing.assert_array_equal(*(next(iter(o.values())) for o in outputs))


def test_a_host_region_doing_more_than_gathering_reads_every_row():
    module = parse_ir("""
builtin.module {
  func.func @main(%x: tensor<1x4x8xf32>) -> tensor<1x4x8xf32> {
    %g = onnx.weight "g" : tensor<8xf32>
    %n = transformer.layer_norm %x, %g eps(1.0e-05) : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %y = transformer.host(%n) : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32> {
    ^bb0(%t: tensor<1x4x8xf32>):
      %e = onnx.Exp %t : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
      transformer.yield %e : tensor<1x4x8xf32>
    }
    func.return %y : tensor<1x4x8xf32>
  }
}
""")
    assert needed_rows(main_function(module).body.block) == {}


def test_out_of_range_gather_indices_keep_every_row():
    module = _module(read="dense<4> : tensor<i64>")  # onnxruntime's error to give, not ours
    assert needed_rows(main_function(module).body.block) == {}


def test_the_note_and_line_name_what_was_narrowed():
    module = _module(read="dense<-1> : tensor<i64>")
    assert narrowed_query_note(_attention(module)) is None  # before the pass: no note
    assert dead_rows_line(module) is None
    eliminate_dead_rows(main_function(module).body.block)
    assert dead_rows_line(module) == ("dead rows (esact-dead-rows; --no-dead-rows keeps them): "
                                      "1 of 4 token rows computed from layer 0 on "
                                      "(1 select_rows)")
    # q is the function argument narrowed directly: the note finds its select_rows
    assert narrowed_query_note(_attention(module)).startswith("computes 1 of 4 query rows")


@pytest.mark.parametrize("rows, runs", [
    ((0,), [(0, 0, 1)]),
    ((1, 2, 3, 7), [(1, 0, 3), (7, 3, 1)]),
    ((0, 2, 4), [(0, 0, 1), (2, 1, 1), (4, 2, 1)]),
])
def test_the_copy_moves_runs_of_consecutive_rows(rows, runs):
    assert row_runs(rows) == runs
