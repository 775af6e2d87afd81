"""esact-tune --sparsity sanger: the threshold search under a budget, measured like SPLS, and
its config read back by esact-cc's scheme selection."""

from __future__ import annotations

import numpy as np
import pytest

from esact_cc.bundled_model import load_bundled_model
from esact_cc.cli import esact_tune_main
from esact_cc.sparsity.sanger_options import SangerConfig
from esact_cc.sparsity.selection import select_scheme
from esact_cc.tuning.sanger_tuning import THRESHOLD_GRID, SangerEvaluator, tune_sanger, uniform
from esact_cc.tuning.spls_calibration_inputs import CalibrationData

MODEL = load_bundled_model()


@pytest.fixture(scope="module")
def evaluator() -> SangerEvaluator:
    images, labels = MODEL.test_images[:12], MODEL.test_labels[:12]
    data = CalibrationData([{MODEL.input_name: image[None]} for image in images],
                           np.asarray(labels), "test")
    return SangerEvaluator(MODEL.onnx_path, data, quantize_samples=[
        {MODEL.input_name: image[None]} for image in MODEL.calibration_images[:16]])


def test_threshold_zero_is_dense_and_larger_thresholds_remove_more(evaluator):
    zero, small, large = evaluator.measure_sanger([uniform(t) for t in (0.0, 0.02, 0.2)])
    assert zero.sparsity == 0.0 and zero.loss == 0.0
    assert 0.0 < small.sparsity < large.sparsity < 1.0


def test_the_uniform_choice_is_the_sparsest_grid_point_within_budget(evaluator):
    result = tune_sanger(evaluator, budget=0.0, per_layer=False)
    within = [m for m in result.grid if m.loss <= 0.0]
    assert [m.config.options["threshold"] for m in result.grid] == list(THRESHOLD_GRID)
    assert result.best.loss <= 0.0
    assert result.best.sparsity == max(m.sparsity for m in within)


def test_the_per_layer_search_keeps_the_budget_and_never_removes_less(evaluator):
    result = tune_sanger(evaluator, budget=10.0, per_layer=True)
    assert result.best.loss <= 10.0 and result.best.sparsity >= result.uniform.sparsity
    if result.per_layer is not None:
        assert set(result.per_layer.config.layers) <= set(evaluator.sanger_layers())


def test_esact_tune_writes_a_config_esact_cc_reads(tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, images=MODEL.test_images[:8], labels=MODEL.test_labels[:8])
    out = tmp_path / "sanger.json"
    code = esact_tune_main.main([str(MODEL.onnx_path), "--sparsity", "sanger",
                                 "--calibration-data", str(calib), "--labels-key", "labels",
                                 "--budget", "1", "--uniform-only", "-o", str(out), "--quiet"])
    assert code == 0
    config = SangerConfig.load(out)
    assert config.info["metric"] == "accuracy" and config.info["samples"] == 8
    scheme, settings = select_scheme({"sparsity": "sanger", "spls_config": str(out)})
    assert scheme.name == "sanger"
    assert settings.pass_options()["threshold"] == config.options["threshold"]
