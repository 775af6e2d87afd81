"""Calibration is its own step before quantize: it records the ranges as printable op attributes,
quantize reads only those (and the store), and passes/ never imports the interpreter."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from esact_cc.api import ir_text, load_ir, write_ir
from esact_cc.calibrated_ranges import CALIBRATION_ATTR, LinearRange, read_range
from esact_cc.dialect_registry import make_context
from esact_cc.dialects.transformer import AttentionOp, LinearOp
from esact_cc.passes.quantize import QuantizePass
from esact_cc.runtime.errors import CompileError
from esact_cc.tuning.calibrate_pass import CalibratePass

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location(
    "transformer_layer", ROOT / "test" / "unit" / "backend" / "transformer_layer.py")
layer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(layer)

FORBIDDEN = ("esact_cc.interpreter", "esact_cc.tuning")


def _imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against esact_cc.passes
                base = "esact_cc.passes" + ("." + base if base else "")
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


def test_no_pass_imports_the_interpreter_or_tuning() -> None:
    offenders = {
        f"{path.name}: {name}"
        for path in sorted((ROOT / "passes").glob("*.py"))
        for name in _imported_modules(path)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    }
    assert not offenders
    # the walk does see imports: quantize imports the calibrated-ranges reader
    assert "esact_cc.calibrated_ranges" in _imported_modules(ROOT / "passes" / "quantize.py")


def _calibrated(tmp_path: Path):
    module, store = layer.build()
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((2, 1, 16, 32)).astype(np.float32) * 2,
             mask=np.zeros((2, 1, 1, 1, 16), np.float32))
    CalibratePass(calibration_data=str(tmp_path / "calib.npz"), store=store).apply(
        make_context(), module)
    return module, store


def test_calibrate_records_printable_ranges_and_quantize_reads_them_from_a_file(tmp_path) -> None:
    module, store = _calibrated(tmp_path)
    text = ir_text(module)
    assert text.count(f"{CALIBRATION_ATTR} = {{input_peak = ") == 6
    assert text.count("probability_peak = ") == 1
    first = next(op for op in module.walk() if isinstance(op, LinearOp))
    observed = read_range(first, LinearRange)
    assert observed.channel_peaks is not None  # from calibration data: per-channel peaks too
    assert store[observed.channel_peaks].max() == pytest.approx(observed.input_peak)

    # Quantized later, from the file, without the samples: the same scales as in memory.
    write_ir(module, store, tmp_path / "calibrated.mlir")
    again = load_ir(tmp_path / "calibrated.mlir")
    QuantizePass(store=again.store).apply(make_context(), again.module)
    QuantizePass(store=store).apply(make_context(), module)
    assert ir_text(again.module) == ir_text(module)
    assert CALIBRATION_ATTR not in ir_text(module)  # consumed by quantize
    attention = next(op for op in module.walk() if isinstance(op, AttentionOp))
    assert attention.is_quantized


def test_probability_peaks_are_recorded_only_when_asked(tmp_path) -> None:
    """calibrate{probability-peaks=false} (the pipeline's choice under the default per-row
    probability scales) leaves the peak out: row scales quantize the same IR, tensor scales
    are one error line naming the op; the compile pipeline asks for it with tensor scales."""
    from esact_cc.pipeline import CompileOptions, _quantize_passes

    module, store = layer.build()
    np.savez(tmp_path / "calib.npz", x=np.ones((1, 1, 16, 32), np.float32),
             mask=np.zeros((1, 1, 1, 1, 16), np.float32))
    CalibratePass(calibration_data=str(tmp_path / "calib.npz"), probability_peaks=False,
                  store=store).apply(make_context(), module)
    text = ir_text(module)
    assert "q_peak = " in text and "probability_peak" not in text
    write_ir(module, store, tmp_path / "calibrated.mlir")
    again = load_ir(tmp_path / "calibrated.mlir")  # the attribute without the peak reads back
    with pytest.raises(CompileError, match=r"probability-scales=tensor but transformer.attention "
                                           r"at .* without its probability peak") as info:
        QuantizePass(store=again.store, probability_scales="tensor").apply(make_context(), again.module)
    assert "\n" not in str(info.value)
    QuantizePass(store=store).apply(make_context(), module)  # row scales: no peak needed
    assert next(op for op in module.walk() if isinstance(op, AttentionOp)).is_quantized
    asked = {scales: _quantize_passes(CompileOptions(extra={"probability_scales": scales}))[0]
             for scales in ("row", "tensor", None)}
    assert {k: p.probability_peaks for k, p in asked.items()} == {"row": False, "tensor": True, None: False}


def test_quantize_without_calibration_names_the_op() -> None:
    module, store = layer.build()
    with pytest.raises(CompileError, match=r'quantize: transformer.linear at "/layer.0/attention/'
                                           r'self/query/MatMul" has no calibrated ranges') as info:
        QuantizePass(store=store).apply(make_context(), module)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("entries, message", [
    ("{input_peak = -1.0 : f64}", "'input_peak' must be a float >= 0"),
    ('{input_peak = "big"}', "'input_peak' must be a float >= 0"),
    ("{input_peak = 1.0 : f64, channel_peaks = 3 : i64}", "'channel_peaks' must be a weight-store"),
    ("{input_peak = 1.0 : f64, bias_peak = 1.0 : f64}", "unknown entry 'bias_peak'"),
])
def test_a_malformed_calibration_attribute_is_one_line(tmp_path, entries, message) -> None:
    module, store = _calibrated(tmp_path)
    text = ir_text(module)
    start = text.index(f"{CALIBRATION_ATTR} = {{input_peak")
    end = text.index("}", start) + 1
    write_ir(module, store, tmp_path / "in.mlir")
    bad = (tmp_path / "in.mlir").read_text().replace(text[start:end], f"{CALIBRATION_ATTR} = {entries}", 1)
    (tmp_path / "in.mlir").write_text(bad)
    again = load_ir(tmp_path / "in.mlir")
    with pytest.raises(CompileError, match=message) as info:
        QuantizePass(store=again.store).apply(make_context(), again.module)
    assert "\n" not in str(info.value)
