"""esact-tune and `prediction=off`: a layer without prediction counts as its dense work (in the
denominator and the executed work alike, no prediction), and the per-layer search turns the
prediction off where reuse does not pay for it."""

from __future__ import annotations

import pytest
from small_search_tables import use_small_search_tables
from test_spls_tuning import write_tiny_classifier

from esact_cc.sparsity.spls_options import SplsConfig
from esact_cc.tuning import spls_calibration_inputs, spls_measurement, spls_tuning
from esact_cc.tuning.spls_tuning import SearchOptions


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory) -> spls_measurement.SplsEvaluator:
    model, calib = write_tiny_classifier(tmp_path_factory.mktemp("off"), 8, seed=3)
    data = spls_calibration_inputs.load_calibration_data(
        calib, spls_calibration_inputs.model_inputs(model), "labels")
    return spls_measurement.SplsEvaluator(model, data, ir="transformer")


def _with_layers(config: SplsConfig, layers: dict) -> SplsConfig:
    return SplsConfig(options=dict(config.options), layers=layers)


def test_a_layer_without_prediction_counts_as_dense(evaluator) -> None:
    on = spls_measurement.uniform_config(threshold=0.3)
    off0, off_all = _with_layers(on, {0: {"prediction": "off"}}), \
        _with_layers(on, {0: {"prediction": "off"}, 1: {"prediction": "off"}})
    m_on, m_off0, m_all = evaluator.measure([on, off0, off_all])
    on0, on1 = m_on.work.layers
    dense0, predicted1 = m_off0.work.layers
    assert not dense0.predicted and predicted1.predicted
    assert dense0.dense == on0.dense  # same rows and pairs as the predicted layer 0 saw
    assert dense0.executed == dense0.dense and dense0.prediction_products == 0
    assert dense0.reused_rows == 0
    assert predicted1.prediction_products == on1.prediction_products
    assert m_off0.work.dense == m_on.work.dense  # the denominator does not move
    assert [w.predicted for w in m_all.work.layers] == [False, False]
    assert m_all.reduction == 0.0 and m_all.loss == 0.0  # the dense program


def test_nothing_within_budget_leaves_the_prediction_off_everywhere(evaluator, monkeypatch):
    use_small_search_tables(monkeypatch)
    # A 0 budget on labels: no setting's bound fits (not even no flip in 8 inputs), so the
    # uniform result is reuse off (negative: its prediction) and the per-layer search starts,
    # and stays, with the prediction off in every layer: the dense program.
    result = spls_tuning.tune(evaluator, 0.0, search=SearchOptions(confidence=0.9))
    assert result.uniform.config.options["threshold"] == spls_measurement.REUSE_OFF
    assert result.uniform.reduction < 0.0
    assert result.best.config.layers == {0: {"prediction": "off"}, 1: {"prediction": "off"}}
    assert result.best.config.options["first-reference"] >= 1  # the per-layer floor holds
    assert result.best.reduction == 0.0


@pytest.mark.parametrize("search", ["efficient", "largest"])
def test_no_predicted_layer_is_worth_turning_off(evaluator, monkeypatch, search):
    """Where the search stops, turning any predicted layer's prediction off (a move it
    measured) reduces less, or leaves the budget."""
    use_small_search_tables(monkeypatch)
    budget = 30.0
    result = spls_tuning.tune(evaluator, budget, search=SearchOptions(
        confidence=0.5, layer_search=search, layer_first_reference=0))
    chosen = result.per_layer or result.uniform  # the start, when no move paid
    seen = {spls_tuning._key(m.config): m for m in result.history}
    values = spls_tuning._thresholds_of(chosen, [0, 1])
    tried = 0
    for layer in (0, 1):
        if values[layer]["prediction"] == "off":
            continue
        off = seen[spls_tuning._key(spls_tuning._per_layer_config(
            chosen.config.options, spls_tuning._with_value(values, layer, "prediction", "off")))]
        tried += 1
        assert off.reduction <= chosen.reduction + 1e-12 or off.loss > budget + 1e-9
    assert any(m.config.layers.get(i) == {"prediction": "off"}
               for m in result.history for i in (0, 1))
    assert tried or all(v["prediction"] == "off" for v in values.values())


def test_threshold_only_search_never_turns_the_prediction_off(evaluator, monkeypatch):
    use_small_search_tables(monkeypatch)
    result = spls_tuning.tune(evaluator, 30.0, search=SearchOptions(
        confidence=0.5, layer_options=("threshold",)))
    assert all("prediction" not in o for m in result.history for o in m.config.layers.values())
