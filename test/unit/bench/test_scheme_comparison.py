"""bench/scheme_comparison.py's core on a tiny onnx.helper encoder (no torch): every scheme tuned
on calibration inputs, measured on reporting inputs held apart, run as a binary that must equal
the INT8 interpreter, and written as the table and the trade-off plot."""

from __future__ import annotations

import encoder_graphs
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))

from scheme_comparison_core import (  # noqa: E402
    LAYER_COMPONENTS,
    SCHEMES,
    Case,
    Settings,
    compare_case,
    fp32_outputs,
    on_inputs,
    tune_scheme,
)
from scheme_comparison_models import split  # noqa: E402
from scheme_comparison_report import (  # noqa: E402
    COLUMNS,
    markdown,
    paper_sparsity_section,
    plot,
    reached_sparsity,
    scheme_row,
)

from esact_cc.tuning.spls_measurement import SplsEvaluator  # noqa: E402

SEQ, VOCAB = 12, 50


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    graphs = encoder_graphs
    path = tmp_path_factory.mktemp("comparison") / "tiny.onnx"
    onnx.save(graphs.encoder(layers=2, seq=SEQ, hidden=16, heads=2, ffn=32, vocab=VOCAB,
                             seed=0), path)
    samples = [graphs.encoder_inputs(seq=SEQ, vocab=VOCAB, padding=0, seed=s)
               for s in range(6)]
    calibration, reporting = split(samples, None, 3, 3, "random ids")
    case = Case("tiny", "tiny encoder", path, "last_hidden_state", calibration, reporting)
    settings = Settings(per_layer=False, search="quick", hw_inputs=2)
    return compare_case(case, settings, lambda message: None)


def test_inputs_are_held_apart_and_the_budget_is_a_cosine_to_fp32(result):
    assert result["calibration_inputs"] == result["reporting_inputs"] == 3
    assert result["hardware_inputs"] == 2
    assert result["metric"] == "cosine to FP32 x100"
    dense = result["dense_int8"]["calibration"]
    assert 99.0 < dense <= 100.0  # INT8 dense itself scores its cosine to FP32
    assert result["budget_points"] == pytest.approx(dense - 99.0)


def test_every_scheme_is_tuned_measured_and_run_against_the_interpreter(result):
    schemes = result["schemes"]
    assert tuple(schemes) == SCHEMES
    for name in SCHEMES:
        hw = schemes[name]["hardware"]
        assert "error" not in hw, hw
        # same integer datapath; the FP32 SFU functions (layer norm, erf GELU) of this
        # encoder round differently (test/e2e/test_compile_to_esb.py's bound)
        assert hw["bit_exact"] == (hw["max_abs_diff"] == 0.0)
        assert hw["max_rel_diff"] <= 1e-4, name
        assert hw["system_uj"] > hw["on_chip_uj"] > 0
        assert hw["attention_tops_per_watt"] > 0
    for name in SCHEMES[1:]:
        entry = schemes[name]
        held = entry["reporting"]
        assert held["loss_points"] == pytest.approx(held["dense_score"] - held["score"])
        assert entry["calibration"]["loss_points"] <= result["budget_points"] + 1e-9
        assert len(entry["curve"]) >= 5
        assert all(p["mac_removed"] is not None for p in entry["curve"])


def test_computation_removed_is_counted_per_component(result):
    schemes = result["schemes"]
    dense = schemes["dense"]["hardware"]
    for group in LAYER_COMPONENTS:
        assert dense[f"{group}_macs_executed"] == dense[f"{group}_macs_dense"] > 0
        assert dense["prediction_pj"] == 0
    for name in ("sanger", "spatten"):  # attention-only schemes: projections and FFN dense
        hw = schemes[name]["hardware"]
        for group in ("qkv", "o", "ffn"):
            assert hw[f"{group}_macs_executed"] == hw[f"{group}_macs_dense"]
        assert hw["attention_macs_executed"] <= hw["attention_macs_dense"]
        assert hw["prediction_pj"] > 0
    assert schemes["spls"]["hardware"]["prediction_pj"] > 0


def test_attention_ratios_are_spls_over_each_baseline(result):
    schemes = result["schemes"]
    spls = schemes["spls"]["hardware"]["attention_tops_per_watt"]
    for other, paper in (("spatten", 2.95), ("sanger", 2.26)):
        ratio = result["attention_ratios"][f"spls_over_{other}"]
        assert ratio["paper"] == paper
        assert ratio["measured"] == pytest.approx(
            spls / schemes[other]["hardware"]["attention_tops_per_watt"])


def test_table_and_plot_are_written(result, tmp_path):
    table = markdown([result])
    for name in SCHEMES:
        assert f"\n| {name} |" in table
    assert "(paper: 2.95x)" in table and "(paper: 2.26x)" in table
    pytest.importorskip("matplotlib")
    png = tmp_path / "tiny.png"
    assert plot(result, png)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_each_baseline_is_set_beside_its_papers_sparsity(result):
    section = paper_sparsity_section([result])
    for scheme in ("spls", "sanger", "spatten"):
        hw = result["schemes"][scheme]["hardware"]
        groups = tuple(LAYER_COMPONENTS) if scheme == "spls" else ("attention",)
        removed = 1 - (sum(hw[f"{g}_macs_executed"] for g in groups)
                       / sum(hw[f"{g}_macs_dense"] for g in groups))
        assert reached_sparsity(scheme, hw) == pytest.approx(removed)
        line = next(x for x in section.splitlines() if x.startswith(f"- {scheme} ("))
        assert f"tiny {100 * removed:.1f}%" in line
    assert "52.03%" in section and "73-92%" in section and "3.8x" in section
    assert reached_sparsity("sanger", {"error": "x"}) is None


def test_a_compile_error_fills_the_row_instead_of_dropping_it():
    entry = {"reporting": {"loss_points": 0.5},
             "hardware": {"error": "lower-to-esact: masks do not fit half of MBUF"}}
    row = scheme_row("sanger", entry, {"error": "x"})
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == len(COLUMNS)
    assert cells[:3] == ["sanger", "0.50", "compile error: lower-to-esact: masks do not fit "
                                           "half of MBUF"]


def test_split_refuses_overlapping_requests():
    samples = [{"x": np.zeros(1)}] * 4
    calibration, reporting = split(samples, np.arange(4), 1, 3, "four")
    assert list(calibration.labels) == [0] and list(reporting.labels) == [1, 2, 3]
    with pytest.raises(SystemExit, match="2 calibration \\+ 3 reporting"):
        split(samples, None, 2, 3, "four")


def test_spls_reuse_off_check_compares_with_dense_int8_not_fp32(result, tmp_path):
    # the tuner's "reuse off equals dense" check must not count INT8's own error vs FP32
    graphs = encoder_graphs
    path = tmp_path / "tiny.onnx"
    onnx.save(graphs.encoder(layers=1, seq=SEQ, hidden=16, heads=2, ffn=32, vocab=VOCAB,
                             seed=0), path)
    samples = [graphs.encoder_inputs(seq=SEQ, vocab=VOCAB, padding=0, seed=s) for s in range(2)]
    calibration, _ = split(samples, None, 2, 0, "random ids")
    case = Case("tiny", "tiny", path, "last_hidden_state", calibration, calibration)
    base = SplsEvaluator(path, calibration, "last_hidden_state")
    anchored = on_inputs(base, calibration, fp32_outputs(case, calibration.samples))
    assert anchored.dense_accuracy < 100.0  # INT8 dense is scored against FP32
    assert anchored.reuse_off_gap() == base.reuse_off_gap() == 0.0


def test_screen_margin_reaches_esact_tunes_search(result, monkeypatch):
    """--screen-margin is passed to SPLS's search as esact-tune's own option, and recorded."""
    from esact_cc.tuning import spls_tuning
    from esact_cc.tuning.layer_screen import DEFAULT_SCREEN_MARGIN

    assert result["spls_screen_margin"] == DEFAULT_SCREEN_MARGIN
    seen = []

    class Chosen:
        best = "chosen"

    def fake_tune(evaluator, budget, per_layer=True, log=None, search=None):
        seen.append(search.screen_margin)
        return Chosen()

    monkeypatch.setattr(spls_tuning, "tune", fake_tune)
    for margin in (1, None):
        assert tune_scheme("spls", None, 0.5, True, lambda m: None, margin) == "chosen"
    assert seen == [1, DEFAULT_SCREEN_MARGIN]
