"""`kv_heads` (grouped / multi-query attention) on the one attention op: the interpreter's
FP32 and INT8 semantics equal multi-head attention over K / V heads repeated per query-head
group, and the accelerator program (query head h reads K / V head h // (heads / kv_heads)) is
bit-identical to the interpreter, also when a head group straddles two K / V heads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from esact_cc.passes.lower_to_esact import LowerToEsactPass
from esact_cc.passes.schedule import SchedulePass
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program

from esact_cc.api import parse_ir
from esact_cc.backend.emit_esb import program_from_module
from esact_cc.dialect_registry import make_context
from esact_cc.interpreter.interpret_quantized_ops import run_attention as run_int8_attention
from esact_cc.interpreter.interpret_transformer_ops import run_attention
from esact_cc.interpreter.reference_interpreter import run_module
from esact_cc.quantized_kernels import quant_multiplier
from esact_cc.weight_store import WeightStore

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


def _ir(heads: int, kv_heads: int, causal: bool) -> str:
    q, kv = f"tensor<{B}x{L}x{heads * D_HEAD}xf32>", f"tensor<{B}x{L}x{kv_heads * D_HEAD}xf32>"
    return f"""
func.func @main(%q: {q} {{onnx.name = "q"}}, %k: {kv} {{onnx.name = "k"}},
                %v: {kv} {{onnx.name = "v"}}) -> ({q} {{onnx.name = "y"}}) {{
  %y = transformer.attention %q, %k, %v heads({heads}) kv_heads({kv_heads}) scale(0.5)
       {"causal " if causal else ""}q_scale(0.05) k_scale(0.04) v_scale(0.03) p_scale(0.0078740157) :
       ({q}, {kv}, {kv}) -> {q}
  func.return %y : {q}
}}
"""


def _small_abuf(tmp_path: Path) -> str:
    """ABUF so small that attention runs 3 query heads per group: with 2 query heads per
    K / V head, the group of heads 0-2 reads K / V heads 0 and 1, the next starts mid-head."""
    path = tmp_path / "abuf.toml"
    path.write_text("[sram]\nactivation_buffer = 300\n")
    return str(path)


@pytest.mark.parametrize(("heads", "kv_heads", "causal", "small"), [
    (4, 2, False, False), (4, 2, True, False), (4, 1, False, False), (4, 2, False, True),
    (6, 2, True, True)])
def test_the_accelerator_program_equals_the_interpreter(
        heads: int, kv_heads: int, causal: bool, small: bool, tmp_path: Path) -> None:
    module = parse_ir(_ir(heads, kv_heads, causal))
    store = WeightStore({})
    rng = np.random.default_rng(heads + kv_heads)
    inputs = {"q": rng.standard_normal((B, L, heads * D_HEAD)).astype(np.float32),
              **{n: rng.standard_normal((B, L, kv_heads * D_HEAD)).astype(np.float32)
                 for n in ("k", "v")}}
    expected = run_module(module, inputs, store)["y"]
    hw = _small_abuf(tmp_path) if small else None
    LowerToEsactPass(hw=hw, store=store).apply(make_context(), module)
    SchedulePass().apply(make_context(), module)
    k_mult = float(quant_multiplier(SCALES["k_scale"]))
    k_quants = [op for op in module.walk()
                if op.name == "esact.quant" and op.properties["mult"].value.data == k_mult]
    assert len(k_quants) == B * (2 if small else 1)  # one K block per batch element and head group
    result = run_program(program_from_module(module, store), inputs, load_config(hw))
    np.testing.assert_array_equal(result.outputs["y"], expected)
