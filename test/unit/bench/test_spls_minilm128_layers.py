"""bench/spls_minilm128_layers.py's per-layer figures from a run report (the parts that need
no model): layer cycles and energy, the prediction's share, rows reused, and the table."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))

import spls_minilm128_layers as bench


def _report(layer1_cycles: int, predict: bool) -> dict:
    layers = {"0": {"cycles": 100, "energy_on_chip_pj": 2e6},
              "1": {"cycles": layer1_cycles, "energy_on_chip_pj": 3e6},
              "none": {"cycles": 7, "energy_on_chip_pj": 1e6}}
    report = {"layers": layers, "components": {"ffn1": {"layers": {"1": {
        "energy_on_chip_pj": 1.5e6}}}}}
    if predict:
        report["components"]["predict"] = {"layers": {"1": {"cycles": 40,
                                                            "energy_on_chip_pj": 5e5}}}
        report["spls"] = {"layers": {"1": {"reused_rows": 90, "rows": 128}}}
    return report


def test_layer_figures_split_the_prediction_from_the_layer() -> None:
    figures = bench.layer_figures(_report(250, predict=True))
    assert set(figures) == {"0", "1"}  # work outside every layer is not a layer
    assert figures["0"] == {"cycles": 100, "on_chip_uj": 2.0, "predict_cycles": 0,
                            "predict_uj": 0.0, "reused_rows": 0}
    assert figures["1"] == {"cycles": 250, "on_chip_uj": 3.0, "predict_cycles": 40,
                            "predict_uj": 0.5, "reused_rows": 90, "ffn1_uj": 1.5}


def test_table_and_summary_are_against_dense() -> None:
    dense = {"mean": {"cycles": 1000.0, "on_chip_uj": 10.0, "system_uj": 20.0, "cosine": 0.99},
             "min_cosine": 0.98, "per_layer": bench.layer_figures(_report(300, False))}
    spls = {"mean": {"cycles": 950.0, "on_chip_uj": 11.0, "system_uj": 20.0, "cosine": 0.985},
            "min_cosine": 0.97, "per_layer": bench.layer_figures(_report(250, True))}
    spls["per_layer"]["1"]["real_rows_reused"] = 3.5
    line = bench.summary_line("tuned", spls, dense)
    assert "(0.9500x dense)" in line and "(1.1000x)" in line and "mean 0.9850 min 0.9700" in line
    table = bench.layer_table({"dense": dense, "tuned": spls, "broken": {"error": "x"}})
    assert "| tuned | 1 | -50 | +0.0 | 40 | 0.5 | 90.0 | 3.5 |" in table
    assert "broken" not in table
