"""bench/tune_confidence.py's persisted per-input cache: a subset prices margins exactly as an
evaluator on that subset alone does, the cache file is read back by a second run instead of
measuring again, and a file measured on other dense outputs is not used."""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from esact_cc.tuning.spls_calibration_inputs import (
    CalibrationData,
    load_calibration_data,
    model_inputs,
)
from esact_cc.tuning.spls_measurement import SplsEvaluator, uniform_config

ROOT = Path(__file__).resolve().parents[3]


def _load(name: str, path: Path):  # noqa: ANN202 - a module loaded by path
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(ROOT / "test" / "unit" / "spls_tuning"))  # the fixtures' own imports
BENCH = _load("tune_confidence_for_cache", ROOT / "bench" / "tune_confidence.py")
FIXTURES = _load("spls_tuning_fixtures_for_cache", ROOT / "test" / "unit" / "spls_tuning" /
                 "test_spls_tuning.py")
CONFIGS = [uniform_config(threshold=t) for t in (0.3, 0.9)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune_confidence_cache")
    model = root / "tiny.onnx"
    onnx.save(FIXTURES.tiny_classifier(), model)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    calib = root / "calib.npz"
    np.savez(calib, **FIXTURES.make_split(session, 10, seed=4))
    data = load_calibration_data(calib, model_inputs(model), "labels")
    return model, data, SplsEvaluator(model, data, ir="transformer")


def test_a_subset_prices_margins_as_an_evaluator_on_it(setup):
    model, full, evaluator = setup
    cache = BENCH.PerInputCache(evaluator)
    indices = np.array([0, 3, 4, 8])
    got = cache.subset(indices).measure(CONFIGS)
    alone = SplsEvaluator(model, CalibrationData([full.samples[i] for i in indices],
                                                 full.labels[indices], "subset"),
                          ir="transformer").measure(CONFIGS)
    assert any(m.margin_loss > 0 for m in alone), "no erosion priced: test is vacuous"
    for a, b in zip(got, alone):
        assert np.allclose(a.margin_price.per_input, b.margin_price.per_input)
        assert np.allclose(a.margin_price.per_margin, b.margin_price.per_margin)


def test_the_cache_file_is_read_back_and_checked(setup, tmp_path):
    _, _, evaluator = setup
    path = tmp_path / "cache.pkl"
    first = BENCH.PerInputCache(evaluator, path)
    first.ensure(CONFIGS)
    assert path.exists()
    second = BENCH.PerInputCache(evaluator, path)
    assert set(second.results) == set(first.results)
    for key, (outputs, _) in first.results.items():
        assert np.array_equal(second.results[key][0], outputs)
    # Measured on other dense outputs (another model or inputs): not used.
    saved = pickle.loads(path.read_bytes())
    saved["dense"] = saved["dense"] + 1.0
    path.write_bytes(pickle.dumps(saved))
    assert BENCH.PerInputCache(evaluator, path).results == {}
