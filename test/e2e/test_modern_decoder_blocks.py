"""LLaMA-style decoders end to end: RMSNorm, SwiGLU / GeGLU, rotary (full and partial) and
grouped- / multi-query attention lift completely, interpret like onnxruntime, and compile to
binaries whose outputs equal the INT8 interpreter's bit for bit, dense and with SPLS.

The models are built with onnx.helper in the exporters' shapes (decoder_graphs.py).
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from esact_cc.dialects.transformer import AttentionOp, HostOp, RotaryOp

from esact_cc import api
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program

_spec = importlib.util.spec_from_file_location("decoder_graphs", Path(__file__).with_name("decoder_graphs.py"))
graphs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graphs)  # type: ignore[union-attr]

VARIANTS = {
    "llama_gqa_swiglu": {},
    "partial_rotary_geglu_div": {"rotary_dim": 4, "act": "gelu", "rms_inverse": "div_one"},
    "mqa_rms_div": {"kv_heads": 1, "rms_inverse": "div"},
    "mha": {"kv_heads": 4},
    "sdpa_legacy": {"sdpa": "legacy"},
    "sdpa_dynamo_mha": {"sdpa": "dynamo", "kv_heads": 4},
    "sdpa_dynamo_gqa": {"sdpa": "dynamo"},
    "local_window": {"window": 3},
    "relu_ffn_mha": {"act": "relu", "gated": False, "kv_heads": 4},
}
ACCELERATOR_ONNX_OPS = {"onnx.MatMul", "onnx.Softmax", "onnx.Sigmoid", "onnx.Sqrt", "onnx.Erf",
                        "onnx.ReduceMean", "onnx.Neg", "onnx.Concat", "onnx.Expand", "onnx.IsNaN"}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def save(tmp_path: Path, **variant) -> Path:
    path = tmp_path / "decoder.onnx"
    onnx.save(graphs.decoder(**variant), path)
    return path


def calibration(tmp_path: Path, count: int = 4) -> str:
    samples = [graphs.decoder_inputs(seed=50 + i)["input_ids"] for i in range(count)]
    path = tmp_path / "calib.npz"
    np.savez(path, input_ids=np.stack(samples))
    return str(path)


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_decoder_lifts_completely_and_interprets_like_onnxruntime(tmp_path: Path, variant) -> None:
    path = save(tmp_path, **variant)
    compiled = api.compile(path, stage="transformer")
    outside_host = Counter(op.name for op in compiled.module.walk()
                           if op.name.startswith("onnx.") and not isinstance(op.parent_op(), HostOp))
    assert not set(outside_host) & ACCELERATOR_ONNX_OPS, outside_host
    attention = [op for op in compiled.module.walk() if isinstance(op, AttentionOp)]
    assert [(op.heads, op.key_heads, op.causal is not None, op.mask is not None)
            for op in attention] == [(4, variant.get("kv_heads", 2), "window" not in variant,
                                      "window" in variant)] * 2
    rotary = [op for op in compiled.module.walk() if isinstance(op, RotaryOp)]
    assert [op.rotated for op in rotary] == [variant.get("rotary_dim", 8)] * 4
    names = Counter(op.name for op in compiled.module.walk())
    assert names["transformer.rms_norm"] == 5
    assert names["transformer.mul"] == (2 if variant.get("gated", True) else 0)
    assert names[f"transformer.{variant.get('act', 'silu')}"] == 2

    inputs = graphs.decoder_inputs()
    expected = ort.InferenceSession(str(path)).run(None, inputs)[0]
    got = compiled.run(inputs)["last_hidden_state"]
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize("variant", ["llama_gqa_swiglu", "partial_rotary_geglu_div", "local_window",
                                     "relu_ffn_mha"])
def test_decoder_binary_equals_the_int8_interpreter(tmp_path: Path, variant: str) -> None:
    path = save(tmp_path, **VARIANTS[variant])
    calib = calibration(tmp_path)
    inputs = graphs.decoder_inputs()
    expected = ort.InferenceSession(str(path)).run(None, inputs)[0]
    golden = api.compile(path, stage="quantized", calibration_data=calib).run(inputs)
    program = api.compile(path, stage="esb", calibration_data=calib).program()
    result = run_program(program, inputs, load_config())
    got = result.outputs["last_hidden_state"]
    np.testing.assert_array_equal(got, golden["last_hidden_state"])
    assert cosine(got, expected) >= 0.99
    opcodes = Counter(instr.opcode_name for instr in program.instructions)
    assert opcodes["rmsnorm"] >= 5 and opcodes["rope"] >= 4
    assert opcodes["mul" if VARIANTS[variant].get("gated", True) else "relu"] >= 2


def test_decoder_spls_reuses_gated_ffn_and_gqa_rows(tmp_path: Path) -> None:
    path = save(tmp_path)
    calib = calibration(tmp_path)
    inputs = graphs.decoder_inputs()
    spls = {"sparsity": "spls", "spls_option": ["threshold=0.5"]}
    reference = api.compile(path, stage="sparsity", calibration_data=calib, **spls).run(inputs)
    program = api.compile(path, stage="esb", calibration_data=calib, **spls).program()
    result = run_program(program, inputs, load_config())
    np.testing.assert_array_equal(result.outputs["last_hidden_state"], reference["last_hidden_state"])
    report = result.report
    assert report["spls"]["reused_row_fraction"] > 0
    ffn1 = report["components"]["ffn1"]  # gate and up projections
    assert ffn1["macs_executed"] < ffn1["macs_dense"]
    for component in ("qk", "pv"):  # the grouped-query attention rows
        row = report["components"][component]
        assert row["macs_executed"] < row["macs_dense"]


def test_a_query_without_visible_keys_gets_zeros_like_the_sdpa_guard(tmp_path: Path) -> None:
    path = save(tmp_path, sdpa="legacy", first_row_hidden=True, layers=1)
    compiled = api.compile(path, stage="transformer")
    assert sum(isinstance(op, AttentionOp) for op in compiled.module.walk()) == 1
    inputs = graphs.decoder_inputs()
    expected = ort.InferenceSession(str(path)).run(None, inputs)[0]
    got = compiled.run(inputs)["last_hidden_state"]
    assert not np.isnan(got).any()
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_rotary_table_computed_from_an_input_runs_on_the_accelerator(tmp_path: Path) -> None:
    """Exports with a position_ids input compute cos / sin on the host: the rotary op reads
    them as activations (here cos is an input, shifted positions)."""
    path = save(tmp_path, cos_from_input=True)
    calib = tmp_path / "calib.npz"
    samples = [graphs.decoder_inputs(seed=50 + i, cos_heads=1) for i in range(4)]
    np.savez(calib, **{k: np.stack([s[k] for s in samples]) for k in samples[0]})
    inputs = graphs.decoder_inputs(cos_heads=1)
    compiled = api.compile(path, stage="transformer")
    rotary = [op for op in compiled.module.walk() if isinstance(op, RotaryOp)]
    assert len(rotary) == 4 and all(op.cos.type.get_shape() == (1, 8, 8) for op in rotary)
    expected = ort.InferenceSession(str(path)).run(None, inputs)[0]
    assert np.abs(compiled.run(inputs)["last_hidden_state"] - expected).max() <= 1e-4 * np.abs(expected).max()
    golden = api.compile(path, stage="quantized", calibration_data=str(calib)).run(inputs)
    program = api.compile(path, stage="esb", calibration_data=str(calib)).program()
    got = run_program(program, inputs, load_config()).outputs["last_hidden_state"]
    np.testing.assert_array_equal(got, golden["last_hidden_state"])


def test_rotary_table_differing_per_head_is_one_precise_near_miss(tmp_path: Path, capsys) -> None:
    path = save(tmp_path, cos_from_input=True, cos_per_head=True, kv_heads=4)
    compiled = api.compile(path, stage="transformer", debug_lift=True)
    err = capsys.readouterr().err
    assert "attention at '/layers.0/Softmax': the Q heads: rotary cos is computed as 1x4x8x8, " \
           "expected [B or 1, 1, 8, 8] (one row per position, the same for every head)" in err
    assert not any(isinstance(op, AttentionOp) for op in compiled.module.walk())
