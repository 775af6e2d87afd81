"""`kv_heads` (grouped / multi-query attention) on the one attention op: the interpreter's
FP32 and INT8 semantics equal multi-head attention over K / V heads repeated per query-head
group, and the accelerator lowering refuses it in one line."""

from __future__ import annotations

import numpy as np
import pytest
from esact_cc.passes.lower_to_esact import LowerToEsactPass
from esact_cc.runtime.errors import CompileError

from esact_cc.api import parse_ir
from esact_cc.dialect_registry import make_context
from esact_cc.interpreter.interpret_quantized_ops import run_attention as run_int8_attention
from esact_cc.interpreter.interpret_transformer_ops import run_attention
from esact_cc.interpreter.reference_interpreter import run_module
from esact_cc.weight_store import WeightStore, attach

B, L, HEADS, KV_HEADS, D_HEAD = 2, 5, 4, 2, 3
SCALES = {"q_scale": 0.05, "k_scale": 0.04, "v_scale": 0.03, "p_scale": 1 / 127}


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, L, HEADS * D_HEAD)).astype(np.float32)
    k, v = (rng.standard_normal((B, L, KV_HEADS * D_HEAD)).astype(np.float32) for _ in range(2))
    return q, k, v


def _repeat_heads(x: np.ndarray) -> np.ndarray:
    """[B, L, KVH * d] -> [B, L, H * d]: each K / V head serves HEADS / KV_HEADS query heads."""
    heads = x.reshape(B, L, KV_HEADS, D_HEAD)
    return np.repeat(heads, HEADS // KV_HEADS, axis=2).reshape(B, L, HEADS * D_HEAD)


@pytest.mark.parametrize("causal", [False, True])
def test_grouped_query_attention_equals_repeated_heads(causal: bool) -> None:
    q, k, v = _inputs()
    grouped = run_attention(q, k, v, None, HEADS, 0.5, causal, kv_heads=KV_HEADS)
    expected = run_attention(q, _repeat_heads(k), _repeat_heads(v), None, HEADS, 0.5, causal)
    np.testing.assert_allclose(grouped, expected, rtol=1e-6, atol=1e-6)
    grouped8 = run_int8_attention(q, k, v, None, num_heads=HEADS, scale=0.5, causal=causal,
                                  kv_heads=KV_HEADS, **SCALES)
    expected8 = run_int8_attention(q, _repeat_heads(k), _repeat_heads(v), None,
                                   num_heads=HEADS, scale=0.5, causal=causal, **SCALES)
    np.testing.assert_array_equal(grouped8, expected8)


IR = f"""
func.func @main(%q: tensor<{B}x{L}x{HEADS * D_HEAD}xf32> {{onnx.name = "q"}},
                %k: tensor<{B}x{L}x{KV_HEADS * D_HEAD}xf32> {{onnx.name = "k"}},
                %v: tensor<{B}x{L}x{KV_HEADS * D_HEAD}xf32> {{onnx.name = "v"}})
    -> (tensor<{B}x{L}x{HEADS * D_HEAD}xf32> {{onnx.name = "y"}}) {{
  %y = transformer.attention %q, %k, %v heads({HEADS}) kv_heads({KV_HEADS}) scale(0.5)
       q_scale(0.05) k_scale(0.04) v_scale(0.03) p_scale(0.0078740157) :
       (tensor<{B}x{L}x{HEADS * D_HEAD}xf32>, tensor<{B}x{L}x{KV_HEADS * D_HEAD}xf32>,
        tensor<{B}x{L}x{KV_HEADS * D_HEAD}xf32>) -> tensor<{B}x{L}x{HEADS * D_HEAD}xf32>
  func.return %y : tensor<{B}x{L}x{HEADS * D_HEAD}xf32>
}}
"""


def test_the_ir_op_runs_grouped_and_the_lowering_refuses_it_in_one_line() -> None:
    module = parse_ir(IR)
    store = WeightStore({})
    attach(module, store)
    q, k, v = _inputs(1)
    got = run_module(module, {"q": q, "k": k, "v": v}, store)["y"]
    expected = run_int8_attention(q, _repeat_heads(k), _repeat_heads(v), None, num_heads=HEADS,
                                  scale=0.5, causal=False, q_scale=0.05, k_scale=0.04,
                                  v_scale=0.03, p_scale=float(np.float32(0.0078740157)))
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(CompileError, match="grouped-query attention") as info:
        LowerToEsactPass().apply(make_context(), module)
    assert "\n" not in str(info.value)
