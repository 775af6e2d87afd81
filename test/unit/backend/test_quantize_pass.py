"""quantize pass and the INT8 reference semantics, against independent numpy formulas."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from esact_cc.dialects.transformer import AttentionOp, LinearOp
from esact_cc.passes.quantize import QuantizePass, per_channel_weight
from esact_cc.tuning.calibrate_pass import CalibratePass
from esact_cc.runtime.errors import CompileError, EsactError

from esact_cc.dialect_registry import make_context
from esact_cc.interpreter.interpret_quantized_ops import run_attention, run_linear
from esact_cc.interpreter.reference_interpreter import run_module

_spec = importlib.util.spec_from_file_location("transformer_layer", Path(__file__).with_name("transformer_layer.py"))
layer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(layer)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def fake_quant(x: np.ndarray, scale: float) -> np.ndarray:
    """Symmetric INT8 codes of x, written from the textbook formula."""
    return np.clip(np.round(x.astype(np.float64) / scale), -127, 127)


def test_per_channel_weight_scales_and_codes() -> None:
    w = np.random.default_rng(0).standard_normal((24, 10)).astype(np.float32)
    w[:, 3] = 0.0  # an all-zero channel gets scale 1
    q, scale = per_channel_weight(w)
    assert q.dtype == np.int8 and scale.dtype == np.float32
    expected = np.abs(w).max(axis=0) / 127
    expected[3] = 1.0
    np.testing.assert_allclose(scale, expected, rtol=1e-6)
    assert np.abs(q).max() == 127 and not q[:, 3].any()
    assert np.all(np.abs(q * scale - w) <= scale / 2 + 1e-7)


@pytest.mark.parametrize("shape", [(1, 1), (7, 1), (63, 1024), (64, 1024), (65, 1024), (300, 7),
                                   (2, 3, 4), (5,)])
def test_per_channel_weight_in_row_chunks_equals_the_whole_matrix_formula(shape) -> None:
    """The chunked rounding (WEIGHT_CHUNK_ELEMENTS) gives the codes and scales of rounding the
    whole matrix at once, with zero, signed-zero and non-finite channels too."""
    rng = np.random.default_rng(len(shape) * 1000 + shape[0])
    w = (rng.standard_normal(shape) * rng.uniform(0.01, 100)).astype(np.float32)
    if w.ndim == 2 and w.shape[1] > 3:
        w[:, 1], w[:, 2], w[0, 3] = 0.0, -0.0, np.inf
    with np.errstate(invalid="ignore"):
        peak = np.max(np.abs(w), axis=0)
        scale = np.where(peak > 0, peak / np.float32(127), np.float32(1)).astype(np.float32)
        expected = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        q, got_scale = per_channel_weight(w)
    np.testing.assert_array_equal(got_scale, scale)
    np.testing.assert_array_equal(q, expected)


def test_linear_semantics_match_fake_quant_formula() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 5, 16)).astype(np.float32)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    q, ws = per_channel_weight(w)
    s = float(np.abs(x).max() / 127)
    got = run_linear(x, q, ws, b, s)
    expected = fake_quant(x, s) @ q.astype(np.float64) * (s * ws.astype(np.float64)) + b
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # And it approximates the FP32 linear.
    assert cosine(got, x @ w + b) > 0.999


def test_attention_semantics_match_fake_quant_formula() -> None:
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((2, 6, 8)).astype(np.float32) for _ in range(3))
    mask = np.zeros((2, 1, 1, 6), np.float32)
    mask[1, ..., -2:] = -1e4
    scales = {n: float(np.abs(t).max() / 127) for n, t in (("q", q), ("k", k), ("v", v))}
    got = run_attention(q, k, v, mask, num_heads=2, scale=0.5, causal=True, q_scale=scales["q"],
                        k_scale=scales["k"], v_scale=scales["v"], p_scale=1 / 127)
    expected = np.zeros_like(got, dtype=np.float64)
    visible = np.tril(np.ones((6, 6), bool))
    for b in range(2):
        for h in range(2):
            cols = slice(4 * h, 4 * h + 4)
            s = (fake_quant(q[b, :, cols], scales["q"]) @ fake_quant(k[b, :, cols], scales["k"]).T) \
                * scales["q"] * scales["k"] * 0.5 + mask[b, 0]
            s = np.where(visible, s, -np.inf)
            p = np.exp(s - s.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            expected[b, :, cols] = fake_quant(p, 1 / 127) @ fake_quant(v[b, :, cols], scales["v"]) \
                * (scales["v"] / 127)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def _quantize(module, store, calibration: str | None = None, **options) -> None:
    CalibratePass(calibration_data=calibration, store=store).apply(make_context(), module)
    QuantizePass(store=store, **options).apply(make_context(), module)
    module.verify()


def test_pass_rewrites_gemm_ops_and_keeps_accuracy(capsys: pytest.CaptureFixture[str]) -> None:
    module, store = layer.build()
    inputs = layer.inputs()
    reference = run_module(module, inputs, store)["y"]
    _quantize(module, store)
    assert capsys.readouterr().err.count("warning: no --calibration-data") == 1
    gemms = [op for op in module.walk() if isinstance(op, (LinearOp, AttentionOp))]
    assert all(op.is_quantized for op in gemms)
    assert [op.name for op in gemms].count("transformer.linear") == 6 and len(gemms) == 7
    got = run_module(module, inputs, store)["y"]
    assert cosine(got, reference) > 0.999
    assert store["q.w.int8"].dtype == np.int8


def test_calibration_data_sets_activation_scales(tmp_path: Path) -> None:
    module, store = layer.build()
    rng = np.random.default_rng(7)
    xs = rng.standard_normal((3, 1, 16, 32)).astype(np.float32) * 3
    masks = np.zeros((3, 1, 1, 1, 16), np.float32)
    path = tmp_path / "calib.npz"
    np.savez(path, x=xs, mask=masks)
    _quantize(module, store, str(path), activation_scales="tensor")
    first = next(op for op in module.walk() if isinstance(op, LinearOp))
    # The first linear reads the host output x + pos: its peak over the samples sets the scale.
    peak = max(float(np.abs(x + store["pos"]).max()) for x in xs)
    assert first.input_scale.value.data == pytest.approx(peak / 127, rel=1e-6)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((2, 1, 16, 32), np.float32)}, "lacks input(s) mask"),
        ({"x": np.zeros((2, 16, 31), np.float32), "mask": np.zeros((2, 1, 1, 1, 16), np.float32)},
         "input 'x' has shape [2, 16, 31]"),
    ],
)
def test_bad_calibration_data_is_one_line_error(tmp_path: Path, arrays, message: str) -> None:
    module, store = layer.build()
    path = tmp_path / "calib.npz"
    np.savez(path, **arrays)
    with pytest.raises(EsactError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")) as info:
        _quantize(module, store, str(path))
    assert "\n" not in str(info.value)


def test_missing_calibration_file(tmp_path: Path) -> None:
    module, store = layer.build()
    with pytest.raises(CompileError, match="not found"):
        _quantize(module, store, str(tmp_path / "nope.npz"))


def test_probability_scale_follows_the_calibrated_peak() -> None:
    from esact_cc.passes.quantize import probability_scale

    assert probability_scale(0.02) == pytest.approx(0.04 / 127, rel=1e-6)
    assert probability_scale(0.8) == pytest.approx(1 / 127, rel=1e-6)
    module, store = layer.build(L=64, mask="none")
    inputs = layer.inputs(L=64, mask="none")
    reference = run_module(module, inputs, store)["y"]
    # calibrated on the synthetic default, evaluated on other inputs
    _quantize(module, store, probability_scales="tensor")
    attention = next(op for op in module.walk() if isinstance(op, AttentionOp))
    assert attention.p_scale.value.data < 1 / 127  # 64 random keys: diffuse attention
    assert cosine(run_module(module, inputs, store)["y"], reference) > 0.999


def test_probability_row_scales_by_default() -> None:
    """The default quantizes probabilities per query row (no calibrated p_scale); a value
    that is neither row nor tensor is one error naming the choices."""
    module, store = layer.build(L=64, mask="none")
    inputs = layer.inputs(L=64, mask="none")
    reference = run_module(module, inputs, store)["y"]
    _quantize(module, store)
    attention = next(op for op in module.walk() if isinstance(op, AttentionOp))
    assert attention.p_row_scales is not None and attention.p_scale is None
    assert attention.int8_scales()[3] is None
    assert cosine(run_module(module, inputs, store)["y"], reference) > 0.999
    with pytest.raises(CompileError, match="probability-scales must be one of row|tensor"):
        QuantizePass(store=store, probability_scales="token")


def test_input_groups_only_for_outlier_channels() -> None:
    from esact_cc.passes.quantize import input_group_scales

    flat = np.ones(256, np.float32)
    assert input_group_scales(flat, 64, 3.0) is None
    spiky = flat.copy()
    spiky[70] = 20.0
    scales = input_group_scales(spiky, 64, 3.0, margin=1.5)
    np.testing.assert_allclose(scales, [1.5 / 127, 20 / 127, 1.5 / 127, 1.5 / 127], rtol=1e-6)
    assert input_group_scales(spiky, 0, 3.0) is None  # disabled
