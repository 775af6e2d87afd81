"""quantize's bias correction: the calibrated input means fold the INT8 weights' mean rounding
error into each linear's bias (with calibration data by default; `bias-correction=on|off`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from esact_cc import api
from esact_cc.calibrated_ranges import LinearRange, read_range, record_range
from esact_cc.dialect_registry import make_context
from esact_cc.dialects.transformer import LinearOp
from esact_cc.passes.quantize import QuantizePass, corrected_bias, per_channel_weight
from esact_cc.runtime.errors import CompileError
from esact_cc.tuning.calibrate_pass import CalibratePass

_spec = importlib.util.spec_from_file_location("transformer_layer", Path(__file__).with_name("transformer_layer.py"))
layer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(layer)


def test_corrected_bias_removes_the_mean_output_error() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 24)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    x = (rng.standard_normal((200, 64)) + rng.uniform(-3, 3, 64)).astype(np.float64)  # non-zero means
    q, s = per_channel_weight(w)
    exact = x @ w.astype(np.float64) + b

    def mean_error(bias: np.ndarray) -> np.ndarray:
        return (x @ (q.astype(np.float64) * s) + bias - exact).mean(axis=0)

    corrected = corrected_bias(w, q, s, b, x.mean(axis=0))
    assert corrected.dtype == np.float32 and corrected.shape == (24,)
    assert np.abs(mean_error(b)).max() > 1e-3  # rounding shifts the outputs' means
    np.testing.assert_allclose(mean_error(corrected), 0, atol=2e-6)  # float32 rounding of the bias
    np.testing.assert_array_equal(corrected_bias(w, q, s, None, x.mean(axis=0)),
                                  corrected_bias(w, q, s, np.zeros(24, np.float32), x.mean(axis=0)))


def _calibrated(tmp_path: Path, real: bool):
    """The test layer, calibrated on samples with non-zero channel means (or synthetic ones)."""
    module, store = layer.build()
    rng = np.random.default_rng(4)
    xs = (rng.standard_normal((3, 1, 16, 32)) + rng.uniform(-2, 2, 32)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=xs, mask=np.zeros((3, 1, 1, 1, 16), np.float32))
    data = str(tmp_path / "calib.npz") if real else None
    CalibratePass(calibration_data=data, store=store).apply(make_context(), module)
    return module, store, xs


def _linears(module) -> list[LinearOp]:
    return [op for op in module.walk() if isinstance(op, LinearOp)]


def test_calibrate_records_the_input_channel_means(tmp_path: Path) -> None:
    module, store, xs = _calibrated(tmp_path, real=True)
    observed = read_range(_linears(module)[0], LinearRange)
    # The first linear reads the host output x + pos; its mean over every row of every sample.
    expected = np.mean([x + store["pos"] for x in xs], axis=(0, 1, 2))
    np.testing.assert_allclose(store[observed.channel_means], expected, rtol=1e-5, atol=1e-6)


def _bias_names(module) -> list[str]:
    return [op.bias.owner.weight_name.data for op in _linears(module)]


def test_calibration_data_corrects_every_bias_by_default(tmp_path: Path) -> None:
    module, store, _ = _calibrated(tmp_path, real=True)
    ranges = [read_range(op, LinearRange) for op in _linears(module)]
    originals = [(op.weight.owner.weight_name.data, op.bias.owner.weight_name.data)
                 for op in _linears(module)]
    QuantizePass(store=store).apply(make_context(), module)
    module.verify()
    for op, (weight, bias), observed in zip(_linears(module), originals, ranges):
        name = op.bias.owner.weight_name.data
        assert name == bias + ".corrected"
        expected = corrected_bias(store[weight], store[op.weight.owner.weight_name.data],
                                  store[op.weight_scale.owner.weight_name.data], store[bias],
                                  store[observed.channel_means])
        np.testing.assert_array_equal(store[name], expected)
        assert not np.array_equal(store[name], store[bias])


@pytest.mark.parametrize("real, option, corrected", [
    (False, "auto", False),  # synthetic means are not real inputs'
    (False, "on", True),
    (True, "off", False),
])
def test_the_option_decides_where_biases_are_corrected(tmp_path, real, option, corrected) -> None:
    module, store, _ = _calibrated(tmp_path, real=real)
    before = _bias_names(module)
    QuantizePass(store=store, bias_correction=option).apply(make_context(), module)
    after = _bias_names(module)
    assert after == ([b + ".corrected" for b in before] if corrected else before)


def test_on_without_recorded_means_is_one_line(tmp_path: Path) -> None:
    module, store, _ = _calibrated(tmp_path, real=True)
    first = _linears(module)[0]
    observed = read_range(first, LinearRange)
    record_range(first, LinearRange(observed.input_peak, observed.channel_peaks))  # no means
    with pytest.raises(CompileError, match=r'bias-correction=on but transformer.linear at '
                                           r'"/layer.0/attention/self/query/MatMul" has no '
                                           r'calibrated input means') as info:
        QuantizePass(store=store, bias_correction="on").apply(make_context(), module)
    assert "\n" not in str(info.value)


def test_a_linear_without_bias_gets_one_and_the_binary_equals_the_interpreter(tmp_path) -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "no_bias",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
        [numpy_helper.from_array(w, "w")])
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    xs = (rng.standard_normal((4, 1, 4, 16)) + 1.5).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=xs)
    options = {"calibration_data": str(tmp_path / "calib.npz")}
    quantized = api.compile(str(model), stage="quantized", **options)
    (linear,) = _linears(quantized.module)
    assert linear.bias is not None and linear.bias.owner.weight_name.data == "w.bias.corrected"
    plain = api.compile(str(model), stage="quantized", bias_correction="off", **options)

    def mean_error(compiled) -> np.ndarray:  # per output channel, over the calibration rows
        return np.mean([compiled.run({"x": x})["y"] - x @ w for x in xs], axis=(0, 1, 2))

    # The weights' rounding is most of the mean error: the correction removes it.
    assert np.linalg.norm(mean_error(quantized)) < 0.5 * np.linalg.norm(mean_error(plain))
    program = api.compile(str(model), stage="esact", **options)
    np.testing.assert_array_equal(program.simulate({"x": xs[0]}).outputs["y"],
                                  quantized.run({"x": xs[0]})["y"])
