"""In a quantized function the reference interpreter computes layer norm, GELU and softmax with
the SFU instructions' row functions (float64 rounded once), not the ONNX kernels' FP32
arithmetic: with per-token scales (the default without calibration data) one ulp in a row's
peak moves the scale of the whole row, so the binary must equal the interpreter bit for bit.
An FP32 function keeps the ONNX kernels (they define the ops, and calibration runs them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from esact_cc.dialects import transformer
from esact_cc.interpreter import interpret_quantized_ops as quantized_ops
from esact_cc.interpreter import interpret_transformer_ops as fp32_ops
from esact_cc.passes.lower_to_esact import LowerToEsactPass
from esact_cc.passes.quantize import QuantizePass
from esact_cc.passes.schedule import SchedulePass
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program
from esact_cc.tuning.calibrate_pass import CalibratePass

from esact_cc.backend.emit_esb import program_from_module
from esact_cc.dialect_registry import make_context
from esact_cc.interpreter.reference_interpreter import run_module


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


layer = _load("transformer_layer", Path(__file__).parent / "transformer_layer.py")


def _quantized(gelu: str, mask: str, causal: bool, scales: str):
    module, store = layer.build(L=24, D=64, H=4, F=128, gelu=gelu, mask=mask, causal=causal)
    for step in (CalibratePass(store=store), QuantizePass(store=store, activation_scales=scales)):
        step.apply(make_context(), module)
    return module, store


def _binary_outputs(module, store, inputs):
    program = module.clone()
    for step in (LowerToEsactPass(store=store), SchedulePass()):
        step.apply(make_context(), program)
    return run_program(program_from_module(program, store), inputs, load_config()).outputs


@pytest.mark.parametrize("gelu, mask, causal", [
    ("none", "row", False), ("tanh", "full", False), ("none", "none", True)])
def test_token_scaled_binary_equals_the_interpreter_bit_for_bit(gelu, mask, causal):
    module, store = _quantized(gelu, mask, causal, "token")
    linears = [op for op in module.walk() if isinstance(op, transformer.LinearOp)]
    assert linears and all(op.token_scales is not None for op in linears)
    for seed in (1, 2):
        inputs = layer.inputs(L=24, D=64, seed=seed, mask=mask)
        got = _binary_outputs(module, store, inputs)
        for name, expected in run_module(module, inputs, store).items():
            np.testing.assert_array_equal(got[name], expected)


def test_only_a_quantized_function_uses_the_sfu_functions():
    fp32, _ = layer.build()
    quantized, _ = _quantized("none", "row", False, "tensor")
    for module, expected in ((fp32, False), (quantized, True)):
        norms = [op for op in module.walk() if isinstance(op, transformer.LayerNormOp)]
        assert norms and all(quantized_ops.in_quantized_function(op) is expected for op in norms)


def test_the_sfu_functions_round_once_where_the_onnx_kernels_round_per_step():
    """Why the distinction matters: on the same rows the two differ by an ulp here and there."""
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal((64, 384))).astype(np.float32)
    gamma = (1 + 0.1 * rng.standard_normal(384)).astype(np.float32)
    beta = (0.1 * rng.standard_normal(384)).astype(np.float32)
    pairs = [(fp32_ops.run_layer_norm(x, gamma, beta, 1e-12),
              quantized_ops.run_sfu_layer_norm(x, gamma, beta, 1e-12)),
             (fp32_ops.run_gelu(x, "none"), quantized_ops.run_sfu_gelu(x, "none")),
             (fp32_ops.run_softmax(x), quantized_ops.run_sfu_softmax(x))]
    for onnx_value, sfu_value in pairs:
        np.testing.assert_allclose(sfu_value, onnx_value, rtol=1e-5, atol=1e-6)
    assert any(not np.array_equal(a, b) for a, b in pairs)
    exact = np.float32((x.astype(np.float64) - x.astype(np.float64).mean(-1, keepdims=True))
                       / x.astype(np.float64).std(-1, keepdims=True) * gamma + beta)
    assert np.abs(pairs[0][1] - exact).max() <= np.abs(pairs[0][0] - exact).max()
