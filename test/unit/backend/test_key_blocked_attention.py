"""Key-blocked dense attention (passes/lower_attention_blocks.py) and causal key skipping
(passes/lower_attention.py): both rest on the chunked online softmax of
runtime/online_softmax.py, whose result does not depend on how the keys are blocked or on
keys no query of a tile sees. Checked here: the kernel (blocked == whole, cut-off == whole,
close to the textbook softmax) and whole programs on a shrunken ABUF where not one query row
over all keys fits: equal to the INT8 interpreter and to the whole-row program of the default
config, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from esact_cc.api import parse_ir
from esact_cc.backend.emit_esb import program_from_module
from esact_cc.dialect_registry import make_context
from esact_cc.interpreter.reference_interpreter import run_module
from esact_cc.passes.lower_to_esact import LowerToEsactPass
from esact_cc.passes.schedule import SchedulePass
from esact_cc.runtime import online_softmax
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program
from esact_cc.weight_store import WeightStore

# ----------------------------------------------------------------------------- the kernel


def _logits(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, cols)) * 4).astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("block", [64, 128, 192])
def test_blocks_at_chunk_multiples_give_the_whole_row_bit_for_bit(block: int) -> None:
    z = _logits(9, 300, block)
    valid = np.random.default_rng(1).random(z.shape) < 0.8
    valid[3] = False  # a row with no valid key
    whole = online_softmax.softmax(z, valid)
    m, s = online_softmax.initial_state(z.shape[0])
    for k0 in range(0, z.shape[1], block):
        m, s = online_softmax.fold(z[:, k0:k0 + block], valid[:, k0:k0 + block], m, s)
    m, s = online_softmax.unpack_state(online_softmax.pack_state(m, s))  # the VBUF round trip
    blocked = np.concatenate([online_softmax.normalize(z[:, k0:k0 + block],
                                                       valid[:, k0:k0 + block], m, s)
                              for k0 in range(0, z.shape[1], block)], axis=1)
    np.testing.assert_array_equal(blocked, whole)
    assert not whole[3].any()


def test_keys_past_the_last_visible_one_change_nothing() -> None:
    z = _logits(16, 256, 7)
    visible = np.arange(256)[None, :] <= np.arange(16)[:, None] + 100  # causal, offset 100
    whole = online_softmax.softmax(z, visible)
    cut = online_softmax.softmax(z[:, :116], visible[:, :116])  # 116: mid-chunk
    np.testing.assert_array_equal(cut, whole[:, :116])
    assert not whole[:, 116:].any()


def test_the_chunked_softmax_is_the_softmax() -> None:
    z = _logits(8, 1000, 3)
    reference = np.exp(z - z.max(axis=1, keepdims=True))
    reference /= reference.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(online_softmax.softmax(z, None), reference, rtol=1e-6, atol=1e-12)


# ----------------------------------------------------------------------------- programs

LENGTH, WIDTH, HEADS = 320, 8, 2


def _attention_ir(kv_heads: int, causal: bool, mask: str | None) -> str:
    """`mask`: None, "row" ([1, 1, 1, L]) or "query" ([1, 1, L, L])."""
    t = f"tensor<1x{LENGTH}x{WIDTH}xf32>"
    tkv = f"tensor<1x{LENGTH}x{WIDTH * kv_heads // HEADS}xf32>"
    mask_type = f"tensor<1x1x{LENGTH if mask == 'query' else 1}x{LENGTH}xf32>"
    mask_arg = f', %m: {mask_type} {{onnx.name = "m"}}' if mask else ""
    return f"""
func.func @main(%q: {t} {{onnx.name = "q"}}, %k: {tkv} {{onnx.name = "k"}},
                %v: {tkv} {{onnx.name = "v"}}{mask_arg}) -> ({t} {{onnx.name = "y"}}) {{
  %y = transformer.attention %q, %k, %v{" mask %m" if mask else ""} heads({HEADS})
       kv_heads({kv_heads}) scale(0.5) {"causal " if causal else ""}q_scale(0.05) k_scale(0.04)
       v_scale(0.03) p_scale(0.0078740157) :
       ({t}, {tkv}, {tkv}{", " + mask_type if mask else ""}) -> {t}
  func.return %y : {t}
}}
"""


def _inputs(kv_heads: int, mask: str | None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    values = {"q": rng.standard_normal((1, LENGTH, WIDTH)).astype(np.float32)}
    for name in "kv":
        values[name] = rng.standard_normal((1, LENGTH, WIDTH * kv_heads // HEADS)
                                           ).astype(np.float32)
    if mask == "row":
        m = np.zeros((1, 1, 1, LENGTH), np.float32)
        m[..., -70:] = -10000.0
        values["m"] = m
    elif mask == "query":
        values["m"] = np.where(rng.random((1, 1, LENGTH, LENGTH)) < 0.3, -10000.0,
                               0.0).astype(np.float32)
    return values


def _small_abuf(tmp_path: Path) -> str:
    """An ABUF of 3 KiB: attention gets half of it, 1536 bytes, and K and V of one head over
    320 keys alone take 2560 bytes, so not one query row over all keys fits; a 64-key block
    fits tiles of 5 query rows (4.7x fewer instructions to lower and run than 2 KiB's 1-row
    tiles, same blocks)."""
    path = tmp_path / "abuf.toml"
    path.write_text("[sram]\nactivation_buffer = 3072\n")
    return str(path)


def _program(ir: str, hw: str | None):
    module, store = parse_ir(ir), WeightStore({})
    for step in (LowerToEsactPass(hw=hw, store=store), SchedulePass()):
        step.apply(make_context(), module)
    names = [op.name for op in module.walk() if op.name.startswith("esact.")]
    return program_from_module(module, store), names


@pytest.mark.parametrize(("kv_heads", "causal", "mask"),
                         [(2, False, None), (1, True, None), (2, False, "row"),
                          (1, True, "query")])
def test_key_blocks_equal_the_interpreter_and_the_whole_row_program(
        kv_heads: int, causal: bool, mask: str | None, tmp_path: Path) -> None:
    ir, inputs = _attention_ir(kv_heads, causal, mask), _inputs(kv_heads, mask)
    expected = run_module(parse_ir(ir), inputs, WeightStore({}))["y"]
    hw = _small_abuf(tmp_path)
    blocked, names = _program(ir, hw)
    assert "esact.softmax_stats" in names and "esact.softmax_norm" in names
    assert "esact.softmax" not in names
    got = run_program(blocked, inputs, load_config(hw)).outputs["y"]
    np.testing.assert_array_equal(got, expected)
    whole, whole_names = _program(ir, None)
    assert "esact.softmax_stats" not in whole_names
    np.testing.assert_array_equal(run_program(whole, inputs, load_config()).outputs["y"], got)


def test_causal_attention_skips_the_keys_above_each_tile() -> None:
    """Query tiles of causal attention compute only up to their last visible key: about
    1/2 + 1/16 of the dense Q K^T and P V MACs with 8 tiles, same output."""
    ir, inputs = _attention_ir(2, True, None), _inputs(2, None)
    program, _ = _program(ir, None)
    result = run_program(program, inputs, load_config())
    np.testing.assert_array_equal(result.outputs["y"],
                                  run_module(parse_ir(ir), inputs, WeightStore({}))["y"])
    dense = 2 * HEADS * LENGTH * LENGTH * (WIDTH // HEADS)  # Q K^T and P V, every key
    executed = result.report["total"]["macs_executed"]
    assert executed < 0.6 * dense
    assert executed >= dense // 2


def test_causal_skipping_adds_a_per_query_mask_over_the_visible_columns_only() -> None:
    """A causal attention whose padding comes as a per-query [1, 1, L, L] mask (LLaMA's
    export) skips the keys above each tile too: the mask rows are loaded and added over the
    tile's visible columns, bit for bit."""
    t = f"tensor<1x{LENGTH}x{WIDTH}xf32>"
    mask_type = f"tensor<1x1x{LENGTH}x{LENGTH}xf32>"
    ir = f"""
func.func @main(%q: {t} {{onnx.name = "q"}}, %k: {t} {{onnx.name = "k"}},
                %v: {t} {{onnx.name = "v"}}, %m: {mask_type} {{onnx.name = "m"}})
                -> ({t} {{onnx.name = "y"}}) {{
  %y = transformer.attention %q, %k, %v mask %m heads({HEADS}) scale(0.5) causal q_scale(0.05)
       k_scale(0.04) v_scale(0.03) p_scale(0.0078740157) : ({t}, {t}, {t}, {mask_type}) -> {t}
  func.return %y : {t}
}}
"""
    inputs = _inputs(2, None)
    visible = np.tril(np.ones((LENGTH, LENGTH), bool))
    visible[:, :5] = False  # left padding: the first 5 keys hidden from every query
    inputs["m"] = np.where(visible, 0.0, -10000.0).astype(np.float32)[None, None]
    program, names = _program(ir, None)
    result = run_program(program, inputs, load_config())
    np.testing.assert_array_equal(result.outputs["y"],
                                  run_module(parse_ir(ir), inputs, WeightStore({}))["y"])
    assert names.count("esact.add") == names.count("esact.attn_qk") >= 8 * HEADS  # per tile
    assert result.report["total"]["macs_executed"] < 0.6 * 2 * HEADS * LENGTH * LENGTH * (
        WIDTH // HEADS)
