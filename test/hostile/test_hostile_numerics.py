"""A user's input that overflows float32 in the reference interpreter: the run finishes and
says so in one `prog: warning:` line, never numpy's RuntimeWarning with a source path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hostile_run import run_tool

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "esact_cc" / "models" / "digits_vit.onnx"


def test_float_overflow_is_one_warning_line(tmp_path: Path):
    np.save(tmp_path / "x.npy", np.full((1, 1, 8, 8), 1e30, np.float32))
    result = run_tool("esact-cc", MODEL, "--compile-to", "onnx", "-o", "m.mlir", "--run",
                      "--input", "pixel_values=x.npy", "--output-dir", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning" not in result.stderr and ".py:" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "encountered in" in line]
    assert lines == ["esact-cc: warning: overflow encountered in multiply (numpy, 1 place); "
                     "results may hold inf or NaN"]
    assert list((tmp_path / "out").glob("*.npy"))  # the outputs were written
