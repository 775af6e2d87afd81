"""bench/tune_confidence.py: a subset of the per-input cache measures (and prices margins)
exactly as an evaluator built on that subset alone does, the cache file is read back by a second
run instead of measuring again and refused when measured on other dense outputs, and the splits
hold calibration and held-out apart."""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from esact_cc.tuning.spls_calibration_inputs import (
    CalibrationData,
    load_calibration_data,
    model_inputs,
)
from esact_cc.tuning.spls_measurement import SplsEvaluator, uniform_config

ROOT = Path(__file__).resolve().parents[3]


def _load(name: str, path: Path):  # -> a module loaded by path
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(ROOT / "test" / "unit" / "spls_tuning"))  # the fixtures' own imports
BENCH = _load("tune_confidence", ROOT / "bench" / "tune_confidence.py")
FIXTURES = _load("spls_tuning_fixtures", ROOT / "test" / "unit" / "spls_tuning" /
                 "test_spls_tuning.py")
CONFIGS = [uniform_config(threshold=t) for t in (0.3, 0.9)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    model, calib = FIXTURES.write_tiny_classifier(tmp_path_factory.mktemp("tune_confidence"),
                                                  12, 3)
    return model, load_calibration_data(calib, model_inputs(model), "labels")


def subset_and_alone(data, indices: np.ndarray):  # -> (cache, got, alone)
    """A per-input cache of the whole set, what its subset `indices` measures for CONFIGS, and
    what an evaluator built on that subset alone measures."""
    model, full = data
    cache = BENCH.PerInputCache(SplsEvaluator(model, full, ir="transformer"))
    got = cache.subset(indices).measure(CONFIGS)
    alone = SplsEvaluator(model, CalibrationData([full.samples[i] for i in indices],
                                                 full.labels[indices], "subset"),
                          ir="transformer").measure(CONFIGS)
    return cache, got, alone


def test_a_cache_subset_measures_what_an_evaluator_on_the_subset_does(data):
    cache, got, alone = subset_and_alone(data, np.array([1, 4, 5, 9, 10]))
    assert any(m.loss > 0 for m in alone), "no setting costs accuracy: test is vacuous"
    for a, b in zip(got, alone):
        assert a.accuracy == pytest.approx(b.accuracy)
        assert a.dense_accuracy == pytest.approx(b.dense_accuracy)
        assert np.array_equal(a.sample_losses, b.sample_losses)
        assert a.label_metric and b.label_metric
        assert a.reduction == pytest.approx(b.reduction)
        assert a.work.as_dict() == b.work.as_dict()
    # Measured once: a second subset reads the cache.
    cached = len(cache.results)
    cache.subset(np.array([0, 2])).measure(CONFIGS)
    assert len(cache.results) == cached == 2


def test_a_subset_of_a_subset_is_the_cache_subset_of_those_inputs(data):
    # esact-tune's --screen-margin auto splits the evaluator it is given (its .subset).
    cache, _, _ = subset_and_alone(data, np.array([1, 4, 5, 9, 10]))
    nested = cache.subset(np.array([1, 4, 5, 9, 10])).subset([1, 3]).measure(CONFIGS)
    direct = cache.subset(np.array([4, 9])).measure(CONFIGS)
    for a, b in zip(nested, direct):
        assert np.array_equal(a.sample_losses, b.sample_losses)
        assert a.dense_accuracy == b.dense_accuracy


def test_splits_keep_calibration_and_held_out_apart():
    chosen = BENCH.splits(360, 180, 3, seed=0)
    assert len(chosen) == 5
    for _, calib, held in chosen:
        assert len(np.intersect1d(calib, held)) == 0
        assert sorted(np.concatenate([calib, held]).tolist()) == list(range(360))
    assert [len(c) for _, c, _ in chosen[2:]] == [180, 180, 180]
    assert not np.array_equal(chosen[2][1], chosen[3][1])


def test_a_subset_prices_margins_as_an_evaluator_on_it(data):
    _, got, alone = subset_and_alone(data, np.array([0, 3, 4, 8, 11]))
    assert any(m.margin_loss > 0 for m in alone), "no erosion priced: test is vacuous"
    for a, b in zip(got, alone):
        assert np.allclose(a.margin_price.per_input, b.margin_price.per_input)
        assert np.allclose(a.margin_price.per_margin, b.margin_price.per_margin)


def test_the_cache_file_is_read_back_and_checked(data, tmp_path):
    model, full = data
    evaluator = SplsEvaluator(model, full, ir="transformer")
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


def test_copy_indices_pick_each_calibration_input_s_copies():
    assert BENCH.copy_indices(np.array([0, 2]), 3).tolist() == [0, 1, 2, 6, 7, 8]


def test_augment_with_margins_is_refused_before_any_measurement(capsys):
    with pytest.raises(SystemExit) as exit_info:
        BENCH.main(["--augment", "2", "--loss-estimates", "margins"])
    assert exit_info.value.code == 2
    assert "--loss-estimate margins" in capsys.readouterr().err


def test_a_partly_measured_setting_is_completed_on_the_inputs_asked_for(data):
    model, full = data
    cache = BENCH.PerInputCache(SplsEvaluator(model, full, ir="transformer"))
    cache.ensure(CONFIGS[:1], [0, 3])
    _, works = cache.results[next(iter(cache.results))]
    assert [i for i, w in enumerate(works) if w is not None] == [0, 3]
    got = cache.subset(np.array([3, 5])).measure(CONFIGS[:1])[0]
    alone = SplsEvaluator(model, CalibrationData([full.samples[i] for i in (3, 5)],
                                                 full.labels[[3, 5]], "subset"),
                          ir="transformer").measure(CONFIGS[:1])[0]
    assert np.array_equal(got.sample_losses, alone.sample_losses)
    assert got.work.as_dict() == alone.work.as_dict()
    assert [i for i, w in enumerate(works) if w is not None] == [0, 3, 5]
