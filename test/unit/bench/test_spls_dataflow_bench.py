"""bench/spls_dataflow.py on the bundled digits ViT: one run re-timed under every dataflow.
At 17 tokens no GEMM reaches R = 32 rows, so both dataflows must give the same cycles (the
documented finding); the SPLS row executes fewer MACs than dense and its ratios are stated
against the dense program under the same dataflow."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))

from spls_dataflow import DEFAULT_HW, digits_case, measure  # noqa: E402


def test_digits_dataflows_agree_below_a_row_tile(tmp_path: Path):
    rows = measure(*digits_case(tmp_path), str(DEFAULT_HW), [], None)
    by = {(r["scheme"], r["dataflow"]): r for r in rows}
    assert set(by) == {(s, d) for s in ("dense", "spls")
                       for d in ("output_stationary", "weight_stationary")}
    for scheme in ("dense", "spls"):
        os_row, ws_row = by[scheme, "output_stationary"], by[scheme, "weight_stationary"]
        assert os_row["cycles"] == ws_row["cycles"]
        assert os_row["on_chip_uj"] == ws_row["on_chip_uj"]
    dense, spls = by["dense", "output_stationary"], by["spls", "output_stationary"]
    assert dense["cycles_vs_dense"] == 1.0
    assert spls["macs_executed"] < dense["macs_executed"] == spls["macs_dense"]
    assert spls["cycles_vs_dense"] == spls["cycles"] / dense["cycles"]
    assert spls["system_uj"] > spls["on_chip_uj"] > 0
