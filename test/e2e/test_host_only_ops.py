"""Ops without numpy semantics (1-D Conv, Resize, ConvTranspose) around a Transformer block:
they stay on the host, onnxruntime runs them in the reference interpreter and in the binary's
host segments, and the binary's outputs equal the INT8 interpreter's bit for bit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from esact_cc import api
from esact_cc.lift_summary import summarize_lift
from esact_cc.runtime.esb import read_esb
from esact_cc.runtime.run_program import run_program
from esact_cc.runtime.hw_config import load_config


def _load(name: str, path: Path):  # noqa: ANN202 - a module
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


graphs = _load("conv_block_graphs", Path(__file__).with_name("conv_block_graphs.py"))


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("conv_block")
    path = root / "conv_block.onnx"
    onnx.save(graphs.conv_block_model(), path)
    rng = np.random.default_rng(1)
    calibration = root / "calib.npz"
    np.savez(calibration, audio=rng.standard_normal((4, 4, 32)).astype(np.float32))
    inputs = {"audio": rng.standard_normal((1, 4, 32)).astype(np.float32)}
    return path, calibration, inputs


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_host_only_ops_stay_on_the_host_around_the_lifted_block(model_files) -> None:
    path, _, _ = model_files
    summary = summarize_lift(api.compile(path, stage="transformer").module)
    assert (summary.lifted["attention"], summary.lifted["linear"], summary.lifted["norm"]) == \
        (1, 6, 2)
    assert not any(summary.on_host.values())
    reasons = [region.reason for region in summary.host_regions]
    assert any("Conv" in r for r in reasons)
    assert any("Resize" in r and "ConvTranspose" in r for r in reasons)


def test_onnx_stage_interpreter_matches_onnxruntime(model_files) -> None:
    path, _, inputs = model_files
    expected = ort.InferenceSession(str(path)).run(None, inputs)[0]
    got = api.compile(path, stage="onnx").run(inputs)["waveform"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_binary_runs_host_segments_bit_exact_to_the_int8_interpreter(model_files,
                                                                       tmp_path: Path) -> None:
    path, calibration, inputs = model_files
    esb = tmp_path / "conv_block.esb"
    api.compile(path, stage="esb", calibration_data=str(calibration)).save_esb(esb)
    program = read_esb(esb)
    segment_ops = {node.op_type for segment in program.host_segments
                   for node in onnx.ModelProto.FromString(segment.onnx).graph.node}
    assert {"Conv", "Resize", "ConvTranspose"} <= segment_ops
    got = run_program(program, inputs, load_config()).outputs["waveform"]
    golden = api.compile(path, stage="quantized",
                         calibration_data=str(calibration)).run(inputs)["waveform"]
    np.testing.assert_array_equal(got, golden)
    expected = ort.InferenceSession(str(path)).run(None, inputs)[0]
    assert _cosine(got, expected) >= 0.999
