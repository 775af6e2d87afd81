"""bench/coverage_families.py without torch: a case's row for an ONNX model already exported
(the same steps as for a Hugging Face export), and the markdown table of rows."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "test" / "e2e"))

from conv_block_graphs import conv_block_model  # noqa: E402


def _coverage():  # noqa: ANN202 - the bench module
    spec = importlib.util.spec_from_file_location("coverage_families",
                                                  ROOT / "bench" / "coverage_families.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _export_like_the_bench(path: Path) -> None:
    """What `export_case` leaves for a case: model, test input, expected output, calibration."""
    onnx.save(conv_block_model(), path)
    rng = np.random.default_rng(0)
    inputs = {"audio": rng.standard_normal((1, 4, 32)).astype(np.float32)}
    np.savez(path.with_suffix(".inputs.npz"), **inputs)
    expected = ort.InferenceSession(str(path)).run(None, inputs)[0]
    np.save(path.with_suffix(".expected.npy"), expected)
    np.savez(path.with_suffix(".calib.npz"),
             audio=rng.standard_normal((4, 1, 4, 32)).astype(np.float32)[:, 0])


def test_a_case_row_and_its_table_line(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    coverage = _coverage()
    _export_like_the_bench(tmp_path / "block-legacy-eager.onnx")
    # The model has one output, `waveform`; the bench reads the first output by name.
    monkeypatch.setattr(coverage, "OUTPUT", "waveform")
    row = coverage.run_case("block", "legacy", "eager", tmp_path)
    assert row["lift"]["lifted"] == {"attention": 1, "linear": 6, "norm": 2}
    assert row["dense_cosine"] >= 0.99
    assert row["spls"]["runs"] is True and 0.0 <= row["spls"]["reused_row_fraction"] <= 1.0
    failed = {"family": "gone", "exporter": "dynamo", "attention": "sdpa",
              "export_error": "RuntimeError: no such op | here"}
    table = coverage.markdown([row, failed], {"commit": "abc1234", "date": "today",
                                              "cases": 2, "seconds": 1.0})
    lines = table.splitlines()
    assert lines[-2].startswith("| block | legacy | eager | 1/1 | 6/6 | 2/2 | ")
    assert lines[-1] == ("| gone | dynamo | sdpa | - | - | - | - | - | - | export error: "
                         "RuntimeError: no such op / here |")
