"""The README's first command: `esact-demo` on the bundled digits ViT."""

import json
import subprocess

from in_process_tool import run_in_process


def test_demo_compiles_runs_and_compares_with_onnxruntime(tmp_path) -> None:
    result = subprocess.run(
        ["esact-demo", "--samples", "8", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "onnxruntime (fp32)" in result.stdout and "esact-run (INT8, dense)" in result.stdout
    assert "top-1 agreement" in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["total"]["cycles"] >= report["roofline_cycles"] > 0
    assert report["total"]["macs_executed"] == report["total"]["macs_dense"] > 0
    assert (tmp_path / "model.esb").stat().st_size > 0
    assert json.loads((tmp_path / "trace.json").read_text())["traceEvents"]


def test_demo_rejects_a_bad_sample_count_in_one_line(tmp_path) -> None:
    result = run_in_process("esact-demo", "--samples", "0", cwd=tmp_path)  # the line's content
    assert result.returncode == 2  # a bad option value: a usage error
    assert result.stderr.decode().strip().splitlines() == ["esact-demo: error: --samples must be in 1..360, got 0"]
