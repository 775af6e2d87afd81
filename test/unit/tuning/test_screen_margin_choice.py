"""esact-tune's `--screen-margin auto` (screen_margin_choice.py): the layer screen's margin chosen
by the search on the fit part of the calibration inputs and a check on every 4th input.

A synthetic evaluator (no model): layer 0's reuse at 0.5 flips only inputs the check part holds
(3, 7, ..., 19), so the fit part alone passes 0.5 and margin 0 floors layer 0 there; the check
rejects that, margin 1 (floor 0.8) keeps the check's budget and is chosen. One test with the
real evaluator: a subset measures exactly the sliced per-input losses of the whole set."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from esact_cc.sparsity.spls_options import SplsConfig
from esact_cc.tuning import spls_tuning
from esact_cc.tuning.screen_margin_choice import CHECK_EVERY, split_inputs
from esact_cc.tuning.spls_accounting import PREDICTION_MAC_PER_PRODUCT, LayerWork, WorkSummary
from esact_cc.tuning.spls_measurement import REUSE_OFF, Measurement
from esact_cc.tuning.spls_tuning import SearchOptions, tune

LADDER = (0.2, 0.5, 0.8, 0.9, 0.999, REUSE_OFF)
LAYERS = (0, 1)
CHECK_ONLY = (3, 7, 11, 15, 19)
"""Inputs layer 0 flips at or below 0.5: all in the check part (every 4th, from 3)."""
FIT_TOO = (0, 1, 2, 4, 5, 6, 8, 9, 10, 12)
"""Inputs layer 0 also flips at 0.2."""
GAIN = {0.999: 1.0, 0.9: 6.0, 0.8: 10.0, 0.5: 12.0, 0.2: 14.0}
"""MACs of a layer's 100 its reuse removes at each threshold."""


class Synthetic:
    """Inputs `rows` of 200; layer 0 flips as above, layer 1 never."""

    dense_accuracy = 100.0

    def __init__(self, rows=tuple(range(200))):
        self.rows = np.asarray(rows)
        self.labels = np.zeros(len(self.rows), dtype=np.int64)

    @property
    def sample_count(self) -> int:
        return len(self.rows)

    def subset(self, indices):
        return Synthetic(self.rows[list(indices)])

    def reuse_off_gap(self, count: int = 4) -> float:
        return 0.0

    def layer_indices(self, config: SplsConfig) -> list[int]:
        return list(LAYERS)

    def measure(self, configs, control=False, seed=0) -> list[Measurement]:
        return [self._one(c) for c in configs]

    def _one(self, config: SplsConfig) -> Measurement:
        flipped: set[int] = set()
        works = []
        for i in LAYERS:
            own = {**config.options, **config.layers.get(i, {})}
            work = LayerWork()
            work.dense["q"] = work.executed["q"] = 100.0
            if own.get("prediction", "on") != "off":
                t = float(own["threshold"])
                work.executed["q"] -= GAIN.get(t, 0.0)
                work.prediction_products = 0.5 / PREDICTION_MAC_PER_PRODUCT
                if i == 0 and t <= 0.5:
                    flipped.update(CHECK_ONLY)
                if i == 0 and t <= 0.2:
                    flipped.update(FIT_TOO)
            works.append(work)
        losses = 100.0 * np.isin(self.rows, sorted(flipped)).astype(float)
        return Measurement(config, 100.0 - float(losses.mean()), 100.0, WorkSummary(works),
                           None, losses, True)


@pytest.fixture
def tables(monkeypatch):
    monkeypatch.setattr(spls_tuning, "UNIFORM_GRID", (("cosprob", "dense", 4, (0.999,)),))
    monkeypatch.setattr(spls_tuning, "REFINE_VALUES", {})
    monkeypatch.setattr(spls_tuning, "FINER_THRESHOLDS", {"cosprob": (0.999,)})
    monkeypatch.setattr(spls_tuning, "LAYER_THRESHOLDS", {"cosprob": LADDER})


def _threshold(result, layer: int) -> float | None:
    own = {**result.best.config.options, **result.best.config.layers.get(layer, {})}
    return None if own.get("prediction", "on") == "off" else float(own["threshold"])


def test_split_holds_every_fourth_input_apart():
    fit, check = split_inputs(10)
    assert check == [3, 7] and fit == [0, 1, 2, 4, 5, 6, 8, 9]
    assert split_inputs(CHECK_EVERY - 1) == ([0, 1, 2], [])


def test_auto_rejects_the_margin_whose_setting_breaks_the_check_part(tables):
    logs: list[str] = []
    result = tune(Synthetic(), 1.0, log=logs.append, search=SearchOptions(confidence=0.5))
    choice = result.margin_choice
    by_margin = {c["margin"]: c for c in choice.candidates}
    # Fit part: layer 0 passes 0.5 alone (its flips are all held apart) and breaks at 0.2.
    assert by_margin[0]["floors"]["0"] == 0.5 and by_margin[0]["layers"]["0"] == {
        "threshold": 0.5}
    assert by_margin[0]["fit"]["loss_points"] == 0.0
    assert by_margin[0]["check"]["loss_points"] == pytest.approx(100.0 * 5 / 50)
    assert not by_margin[0]["accepted"] and by_margin[1]["accepted"]
    assert choice.margin == 1 and choice.check_inputs[:2] == (3, 7)
    assert choice.fit_inputs == 150 and len(choice.check_inputs) == 50
    # The written search is on all 200 inputs at margin 1: there 0.5 flips 5 (2.5 points),
    # so layer 0's scan breaks at 0.5 and its floor is one step above 0.8.
    assert result.search.screen_margin == 1
    assert result.floors[0].broke_at == 0.5 and _threshold(result, 0) == 0.9
    assert result.best.loss == 0.0
    info = result.config({}).info
    assert info["screen_margin"] == 1 and info["screen_margin_choice"]["margin"] == 1
    assert any("screen margin auto: 1" in line for line in logs)


def test_a_given_margin_skips_the_check(tables):
    result = tune(Synthetic(), 1.0, search=SearchOptions(confidence=0.5, screen_margin=0))
    assert result.margin_choice is None and _threshold(result, 0) == 0.8
    assert result.config({}).info["screen_margin_choice"] is None


def test_too_few_inputs_for_a_check_part_take_the_fallback_margin_and_say_so(tables):
    logs: list[str] = []
    result = tune(Synthetic(range(3)), 1.0, log=logs.append,
                  search=SearchOptions(confidence=0.5))
    assert result.margin_choice.margin == 3 and "no check part" in result.margin_choice.reason
    assert result.search.screen_margin == 3
    assert any("leave no check part" in line for line in logs)


def _fixtures(monkeypatch):
    here = Path(__file__).resolve().parents[1] / "spls_tuning" / "test_spls_tuning.py"
    monkeypatch.syspath_prepend(str(here.parent))  # its small_search_tables import
    spec = importlib.util.spec_from_file_location("spls_tuning_fixtures_h", here)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_a_real_evaluators_subset_measures_the_sliced_inputs(tmp_path, monkeypatch):
    from esact_cc.tuning import spls_calibration_inputs, spls_measurement

    model, calib = _fixtures(monkeypatch).write_tiny_classifier(tmp_path, 8, 1)
    data = spls_calibration_inputs.load_calibration_data(
        calib, spls_calibration_inputs.model_inputs(model), "labels")
    whole = spls_measurement.SplsEvaluator(model, data, ir="transformer")
    config = spls_measurement.uniform_config(threshold=0.3)
    rows = [1, 3, 6]
    part = whole.subset(rows)
    m_whole, m_part = whole.measure([config])[0], part.measure([config])[0]
    assert m_whole.loss > 0, "threshold 0.3 should cost accuracy: test is vacuous"
    assert np.array_equal(m_part.sample_losses, m_whole.sample_losses[rows])
    assert part.dense_accuracy == pytest.approx(np.mean(whole.dense_scores[rows]))
    assert part.sample_count == 3 and whole.sample_count == 8
