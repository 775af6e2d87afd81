"""Hostile inputs around quantize's bias correction: a bad `bias-correction` value (esact-cc,
esact-opt) and a calibrated IR file whose `channel_means` entry is malformed, names no stored
tensor or one of the wrong size. Each is one `prog: error:` line and touches nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_run import assert_user_error, run_tool, tree_state
from one_linear import one_linear_model


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A one-linear model (m.onnx) lifted and calibrated on calibration data (calib.npz) by
    esact-opt: cal.mlir + cal.npz, made once, copied by each test."""
    directory = tmp_path_factory.mktemp("bias_correction")
    onnx.save(one_linear_model(), directory / "m.onnx")
    rng = np.random.default_rng(0)
    np.savez(directory / "calib.npz", x=rng.standard_normal((2, 1, 4, 8)).astype(np.float32))
    done = run_tool("esact-opt", "m.onnx", "-p",
                    'lift-transformer,calibrate{calibration-data="calib.npz"}', "-o", "cal.mlir",
                    cwd=directory)
    assert done.returncode == 0, done.stderr
    assert 'channel_means = "w.input_channel_means"' in (directory / "cal.mlir").read_text()
    return directory


def _copy(made: Path, tmp_path: Path) -> str:
    """The fixture's files in tmp_path; cal.mlir's text."""
    for name in ("m.onnx", "calib.npz", "cal.npz", "cal.mlir"):
        shutil.copy(made / name, tmp_path / name)
    return (tmp_path / "cal.mlir").read_text()


def test_a_bad_bias_correction_value_is_one_line(tmp_path, made):
    _copy(made, tmp_path)
    before = tree_state(tmp_path)
    result = run_tool("esact-opt", "cal.mlir", "-p", "quantize{bias-correction=yes}",
                      cwd=tmp_path)
    assert_user_error(result, "bias-correction must be one of auto|on|off, got 'yes'", code=2)
    result = run_tool("esact-cc", "m.onnx", "--bias-correction", "yes", "-o", "m.esb",
                      cwd=tmp_path)
    assert_user_error(result, "--bias-correction", "invalid choice: 'yes'", code=2)
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("replacement, needle", [
    ('channel_means = 3 : i64', "'channel_means' must be a weight-store name (string)"),
    ('channel_means = "nowhere"', "channel_means 'nowhere' is not in the weight store"),
    ('channel_means = "w"', "must be 8 finite values (the input channels), got shape [8, 8]"),
])
def test_a_bad_channel_means_entry_is_one_line(tmp_path, made, replacement, needle):
    text = _copy(made, tmp_path)
    (tmp_path / "cal.mlir").write_text(
        text.replace('channel_means = "w.input_channel_means"', replacement))
    before = tree_state(tmp_path)
    result = run_tool("esact-opt", "cal.mlir", "-p", "quantize", cwd=tmp_path)
    assert_user_error(result, "transformer.linear", needle)
    assert tree_state(tmp_path) == before
