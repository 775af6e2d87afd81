"""esact-tune's `--loss-estimate` end to end on the tiny 2-layer classifier of
test/unit/spls_tuning/test_spls_tuning.py (fp32 IR, 16 inputs, small search tables): the
setting written keeps the budget on the bound the option names, the option is recorded in the
config, and a bad value is a one-line usage error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spls_tuning_fixtures import load_tuning_fixtures

from esact_cc.cli import esact_tune_main
from esact_cc.tuning import spls_calibration_inputs, spls_measurement, spls_tuning
from esact_cc.tuning.loss_bound import z_score

TABLES, FIXTURES = load_tuning_fixtures("tuning")


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> tuple[Path, Path]:
    return FIXTURES.write_tiny_classifier(tmp_path_factory.mktemp("loss_estimate"), 16, 1)


def test_the_search_holds_the_margin_price_to_the_budget(calibration, monkeypatch):
    TABLES.use_small_search_tables(monkeypatch)
    model, calib = calibration
    data = spls_calibration_inputs.load_calibration_data(
        calib, spls_calibration_inputs.model_inputs(model), "labels")
    evaluator = spls_measurement.SplsEvaluator(model, data, ir="transformer")
    budget, z = 20.0, z_score(0.8)
    result = spls_tuning.tune(evaluator, budget, search=spls_tuning.SearchOptions(
        confidence=0.8, loss_estimate="margins"))
    for m in result.history:  # every setting priced, never below its own flip count's zero
        assert m.margin_price is not None and m.margin_loss >= 0.0
        assert len(m.margin_price.per_input) == 16
    best = result.best
    assert best.loss_bound(z, "margins") == pytest.approx(
        best.margin_loss + z * best.margin_price.se)
    # The reuse-off fallback aside, the chosen setting fits on the margin price.
    if best.config.options["threshold"] != spls_measurement.REUSE_OFF:
        assert best.loss_bound(z, "margins") <= budget + 1e-9
    # Some setting the search measured erodes margins without flipping every input it would
    # flip on new inputs: the two estimates are not the same number.
    assert any(abs(m.margin_loss - m.loss) > 1e-6 for m in result.history)


def test_esact_tune_records_the_loss_estimate(calibration, tmp_path, monkeypatch):
    TABLES.use_small_search_tables(monkeypatch)
    model, calib = calibration
    out = tmp_path / "spls.json"
    assert esact_tune_main.main([str(model), "--calibration-data", str(calib), "--labels-key",
                                 "labels", "--ir", "transformer", "--budget", "20",
                                 "--loss-estimate", "flips", "--uniform-only", "-o", str(out),
                                 "--quiet"]) == 0
    info = json.loads(out.read_text())["info"]
    assert info["loss_estimate"] == "flips"
    uniform = info["uniform"]
    assert "margin_loss_points" in uniform and uniform["margin_loss_points"] >= 0.0


def test_a_bad_loss_estimate_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "spls.json"
    with pytest.raises(SystemExit) as exit_info:
        esact_tune_main.main(["model.onnx", "--calibration-data", "calib.npz", "-o", str(out),
                              "--loss-estimate", "margin"])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("esact-tune: error: ") and "--loss-estimate" in last
    assert not out.exists()


def test_margins_with_another_scheme_is_refused(calibration, tmp_path, capsys):
    """Sanger's and SpAtten's searches bound flips only: asking them for margins is an error,
    not a quietly ignored option."""
    model, calib = calibration
    out = tmp_path / "sanger.json"
    code = esact_tune_main.main([str(model), "--calibration-data", str(calib), "--labels-key",
                                 "labels", "--sparsity", "sanger", "--loss-estimate",
                                 "margins", "-o", str(out)])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("esact-tune: error: --loss-estimate margins")
    assert "--sparsity sanger" in lines[0]
    assert not out.exists()
