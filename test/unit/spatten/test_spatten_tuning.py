"""esact-tune --sparsity spatten: the keep-ratio search under a budget, measured like SPLS and
Sanger, and its config read back by esact-cc's scheme selection."""

from __future__ import annotations

import numpy as np
import pytest

from esact_cc.bundled_model import load_bundled_model
from esact_cc.cli import esact_tune_main
from esact_cc.sparsity.selection import select_scheme
from esact_cc.sparsity.spatten_options import SpattenConfig
from esact_cc.tuning.spatten_tuning import TOKEN_KEEP, TOKEN_KEEP_GRID, SpattenEvaluator, \
    tune_spatten, uniform
from esact_cc.tuning.spls_calibration_inputs import CalibrationData

MODEL = load_bundled_model()


@pytest.fixture(scope="module")
def evaluator() -> SpattenEvaluator:
    images, labels = MODEL.test_images[:12], MODEL.test_labels[:12]
    data = CalibrationData([{MODEL.input_name: image[None]} for image in images],
                           np.asarray(labels), "test")
    return SpattenEvaluator(MODEL.onnx_path, data, quantize_samples=[
        {MODEL.input_name: image[None]} for image in MODEL.calibration_images[:16]])


def test_keep_one_is_dense_and_smaller_ratios_remove_more(evaluator):
    full, mild, strong = evaluator.measure_spatten([uniform(1.0), uniform(0.8),
                                                    uniform(0.5, 0.5)])
    assert full.sparsity == 0.0 and full.loss == 0.0 and full.token_fraction == 1.0
    assert 0.0 < mild.sparsity < strong.sparsity < 1.0
    assert strong.head_fraction < 1.0 == mild.head_fraction


def test_the_uniform_choice_is_the_sparsest_grid_point_within_budget(evaluator):
    result = tune_spatten(evaluator, budget=0.0, per_layer=False)
    within = [m for m in result.grid if m.loss <= 0.0]
    assert [m.config.options[TOKEN_KEEP] for m in result.grid] == list(TOKEN_KEEP_GRID)
    assert result.best.loss <= 0.0
    assert result.best.sparsity == max(m.sparsity for m in within)


def test_the_per_layer_search_keeps_the_budget_and_never_removes_less(evaluator):
    result = tune_spatten(evaluator, budget=5.0, per_layer=True)
    assert result.best.loss <= 5.0 and result.best.sparsity >= result.uniform.sparsity
    if result.per_layer is not None:
        assert set(result.per_layer.config.layers) <= set(evaluator.spatten_layers()[1:])


def test_esact_tune_writes_a_config_esact_cc_reads(tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, images=MODEL.test_images[:8], labels=MODEL.test_labels[:8])
    out = tmp_path / "spatten.json"
    code = esact_tune_main.main([str(MODEL.onnx_path), "--sparsity", "spatten",
                                 "--calibration-data", str(calib), "--labels-key", "labels",
                                 "--budget", "1", "--uniform-only", "-o", str(out), "--quiet"])
    assert code == 0
    config = SpattenConfig.load(out)
    assert config.info["metric"] == "accuracy" and config.info["samples"] == 8
    scheme, settings = select_scheme({"sparsity": "spatten", "spls_config": str(out)})
    assert scheme.name == "spatten"
    assert settings.pass_options()["token_keep"] == config.options[TOKEN_KEEP]
