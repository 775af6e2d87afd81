"""esact-tune's hardware price of the SPLS prediction (esact_cc/tuning/prediction_price.py) on
the tiny 2-layer classifier of test/unit/spls_tuning/test_spls_tuning.py, INT8 IR: the price
is the hardware model's own prediction energy per product over its dense energy per MAC (an
independent esact-cc compile and run of the same setting agrees), the objective uses it, and
esact-tune records it; bad combinations are one-line usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from spls_tuning_fixtures import load_tuning_fixtures

from esact_cc import api
from esact_cc.cli import esact_tune_main
from esact_cc.tuning import spls_calibration_inputs, spls_measurement
from esact_cc.tuning.prediction_price import hardware_price

TABLES, FIXTURES = load_tuning_fixtures("price")


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> tuple[Path, Path]:
    return FIXTURES.write_tiny_classifier(tmp_path_factory.mktemp("price"), 6, 1)


@pytest.fixture(scope="module")
def evaluator(calibration) -> spls_measurement.SplsEvaluator:
    model, calib = calibration
    data = spls_calibration_inputs.load_calibration_data(
        calib, spls_calibration_inputs.model_inputs(model), "labels")
    return spls_measurement.SplsEvaluator(model, data)


def _inputs(calib: Path, index: int) -> dict[str, np.ndarray]:
    with np.load(calib) as arrays:
        return {name: arrays[name][index:index + 1] for name in arrays.files
                if name != "labels"}


def test_the_price_is_the_hardware_models_energy_ratio(evaluator, calibration, tmp_path):
    model, calib = calibration
    config = spls_measurement.uniform_config()
    price = hardware_price(evaluator, config)
    # The same setting compiled by esact-cc from the ONNX file and run on input 0.
    path = tmp_path / "spls.json"
    path.write_text(config.to_json())
    sample = _inputs(calib, 0)
    spls = api.compile(str(model), stage="esact", calibration_data=str(calib),
                       sparsity="spls", spls_config=str(path)).simulate(sample).report
    dense = api.compile(str(model), stage="esact",
                        calibration_data=str(calib)).simulate(sample).report
    predict_pj = spls["components"]["predict"]["energy_on_chip_pj"]
    dense_pj = dense["energy"]["on_chip"]["dynamic_pj"]
    single = evaluator.subset([0])  # the same INT8 module, measuring input 0 only
    work = single.measure([config])[0].work
    products = sum(w.prediction_products for w in work.layers)
    assert price.mac_per_product == pytest.approx((predict_pj / products)
                                                  / (dense_pj / work.dense), rel=1e-9)
    assert price.mac_per_product > 0.1  # SRAM traffic: dearer than the design's 0.1
    # The objective prices the prediction at it: the prediction's share of the dense work is
    # its share of the dense program's on-chip dynamic energy.
    single.mac_per_product = price.mac_per_product
    priced = single.measure([config])[0].work
    assert priced.prediction_macs / priced.dense == pytest.approx(predict_pj / dense_pj,
                                                                  rel=1e-9)
    assert priced.reduction < work.reduction


def test_the_system_price_adds_the_dram_energy_beyond_dense(evaluator, calibration):
    model, calib = calibration
    config = spls_measurement.uniform_config()
    on_chip, system = hardware_price(evaluator, config), hardware_price(evaluator, config,
                                                                        dram=True)
    sample = _inputs(calib, 0)
    path = calib.parent / "spls_system.json"
    path.write_text(config.to_json())
    spls = api.compile(str(model), stage="esact", calibration_data=str(calib),
                       sparsity="spls", spls_config=str(path)).simulate(sample).report
    dense = api.compile(str(model), stage="esact",
                        calibration_data=str(calib)).simulate(sample).report
    extra = spls["energy"]["breakdown_pj"]["dram"] - dense["energy"]["breakdown_pj"]["dram"]
    assert extra != 0, "SPLS and dense move the same DRAM bytes here: test is vacuous"
    products = (on_chip.prediction_pj_per_product and
                spls["components"]["predict"]["energy_on_chip_pj"]
                / on_chip.prediction_pj_per_product)
    assert system.dram_pj_per_product == pytest.approx(extra / products, rel=1e-9)
    assert system.mac_per_product == pytest.approx(
        (on_chip.prediction_pj_per_product + extra / products) / on_chip.dense_pj_per_mac,
        rel=1e-9)
    assert system.dense_pj_per_mac == on_chip.dense_pj_per_mac
    assert on_chip.dram_pj_per_product is None and "DRAM" in system.source


def test_esact_tune_records_the_hardware_price(calibration, tmp_path, monkeypatch):
    TABLES.use_small_search_tables(monkeypatch)
    model, calib = calibration
    out = tmp_path / "spls.json"
    assert esact_tune_main.main([str(model), "--calibration-data", str(calib), "--labels-key",
                                 "labels", "--budget", "50", "--uniform-only",
                                 "--prediction-price", "hardware", "-o", str(out),
                                 "--quiet"]) == 0
    info = json.loads(out.read_text())["info"]
    price = info["prediction_price"]
    assert price["source"].startswith("hardware model")
    assert info["prediction_mac_per_product"] == price["mac_per_product"] > 0.1
    assert info["uniform"]["prediction_mac_per_product"] == price["mac_per_product"]


@pytest.mark.parametrize("extra, message", [
    (["--prediction-price", "hardware", "--ir", "transformer"], "IR 'transformer'"),
    (["--hw", "hw.toml"], "--hw: only --prediction-price hardware"),
    (["--sparsity", "sanger", "--prediction-price", "hardware"], "--prediction-price hardware"),
])
def test_bad_price_options_are_one_line_errors(calibration, tmp_path, capsys, extra, message):
    model, calib = calibration
    out = tmp_path / "spls.json"
    code = esact_tune_main.main([str(model), "--calibration-data", str(calib), "--labels-key",
                                 "labels", "-o", str(out), "--quiet", *extra])
    assert code in (1, 2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("esact-tune: error: ")
    assert message in lines[0]
    assert not out.exists()
