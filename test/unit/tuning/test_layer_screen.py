"""esact-tune's layer screen (layer_screen.py): each layer's threshold floor from its reuse alone,
and the per-layer search kept to the floors. A synthetic evaluator (no model, no interpreter):
each layer flips a fixed set of inputs below a threshold and removes a fixed share of its work
at each threshold; layer 0's reuse pays for its prediction only next to layer 1's."""

from __future__ import annotations

import numpy as np
import pytest

from esact_cc.runtime.errors import CompileError
from esact_cc.sparsity.spls_options import SplsConfig
from esact_cc.tuning import spls_tuning
from esact_cc.tuning.layer_screen import floor_of, lone_config, scan_layer
from esact_cc.tuning.spls_accounting import PREDICTION_MAC_PER_PRODUCT, LayerWork, WorkSummary
from esact_cc.tuning.spls_measurement import REUSE_OFF, Measurement
from esact_cc.tuning.spls_tuning import SearchOptions, tune

LADDER = (0.2, 0.5, 0.8, 0.9, 0.999, REUSE_OFF)
INPUTS = 200
LAYERS = (0, 1, 2)
FLIPS = {0: (0.998, range(0, 5)), 1: (0.5, range(10, 15)), 2: (0.0, range(0))}
"""Per layer: at or below this threshold the layer's reuse flips these inputs."""
GAIN = {0: {0.999: 1.0, 0.9: 6.0, 0.8: 10.0, 0.5: 12.0, 0.2: 14.0},
        1: {0.999: 1.0, 0.9: 4.0, 0.8: 5.0, 0.5: 20.0, 0.2: 30.0},
        2: {0.999: 1.0, 0.9: 5.0, 0.8: 10.0, 0.5: 25.0, 0.2: 40.0}}
"""MACs of the layer's 100 its reuse removes at each threshold."""
PREDICTION = 2.0
SYNERGY = 3.0
"""Extra MACs layer 1's reuse removes when layer 0 reuses too."""


def _layer_values(config: SplsConfig) -> dict[int, float | None]:
    """Per layer: its threshold, None without prediction."""
    out = {}
    for i in LAYERS:
        own = {**config.options, **config.layers.get(i, {})}
        out[i] = None if own.get("prediction", "on") == "off" else float(own["threshold"])
    return out


class SyntheticEvaluator:
    labels = np.zeros(INPUTS, dtype=np.int64)
    dense_accuracy = 100.0
    sample_count = INPUTS

    def reuse_off_gap(self, count: int = 4) -> float:
        return 0.0

    def layer_indices(self, config: SplsConfig) -> list[int]:
        return list(LAYERS)

    def measure(self, configs, control=False, seed=0) -> list[Measurement]:
        return [self._one(c) for c in configs]

    def _one(self, config: SplsConfig) -> Measurement:
        values = _layer_values(config)
        losses = np.zeros(INPUTS)
        works = []
        for i, t in values.items():
            work = LayerWork()
            work.dense["q"] = work.executed["q"] = 100.0
            if t is not None:
                gain = GAIN[i].get(t, 0.0)
                if i == 1 and gain and values[0] not in (None, REUSE_OFF):
                    gain += SYNERGY
                work.executed["q"] -= gain
                work.prediction_products = PREDICTION / PREDICTION_MAC_PER_PRODUCT
                below, flipped = FLIPS[i]
                if t <= below:
                    losses[list(flipped)] = 100.0
            works.append(work)
        return Measurement(config, 100.0 - float(losses.mean()), 100.0, WorkSummary(works),
                           None, losses, True)


@pytest.fixture
def tables(monkeypatch):
    monkeypatch.setattr(spls_tuning, "UNIFORM_GRID", (("cosprob", "dense", 4, (0.9, 0.999)),))
    monkeypatch.setattr(spls_tuning, "REFINE_VALUES", {})
    monkeypatch.setattr(spls_tuning, "FINER_THRESHOLDS", {"cosprob": (0.999,)})
    monkeypatch.setattr(spls_tuning, "LAYER_THRESHOLDS", {"cosprob": LADDER})


def _search(screen: str, margin: int = 1) -> spls_tuning.TuningResult:
    return tune(SyntheticEvaluator(), 1.0, search=SearchOptions(
        confidence=0.5, layer_screen=screen, screen_margin=margin))


def test_floor_keeps_margin_steps_above_a_break_and_drops_layers_that_do_not_pay():
    reductions = {0.999: 0.01, 0.9: 0.02, 0.8: 0.03}
    assert floor_of(1, (0.999, 0.9, 0.8), 0.5, reductions, 1).threshold == 0.9
    assert floor_of(1, (0.999, 0.9, 0.8), 0.5, reductions, 0).threshold == 0.8
    assert floor_of(1, (0.999, 0.9, 0.8), None, reductions, 1).threshold == 0.8  # no break
    assert floor_of(1, (0.999,), 0.9, reductions, 1).threshold is None  # margin eats it
    assert floor_of(1, (), 0.999, {}, 0).threshold is None  # nothing passed
    assert floor_of(1, (0.999,), 0.9, {0.999: -0.01}, 0).threshold is None  # does not pay


def test_scan_stops_at_the_first_threshold_over_budget():
    asked: list[float] = []

    def probe(thresholds):
        asked.extend(thresholds)
        return [type("M", (), {"reduction": 0.1, "bad": t <= 0.8})() for t in thresholds]

    floor = scan_layer(0, (0.2, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999), probe,
                       lambda m: not m.bad, 1)
    assert floor.passed == (0.999, 0.99, 0.95, 0.9) and floor.broke_at == 0.8
    assert floor.threshold == 0.95
    assert asked == [0.999, 0.99, 0.95, 0.9, 0.8, 0.5]  # no chunk past the break


def test_lone_config_leaves_every_other_layer_without_prediction():
    config = lone_config({"threshold": 0.9, "similarity": "cosprob"}, 1, 0.8, LAYERS)
    assert _layer_values(config) == {0: None, 1: 0.8, 2: None}


def test_without_screen_the_search_takes_a_layer_that_pays_only_in_combination(tables):
    values = _layer_values(_search("off").best.config)
    assert values[0] == 0.999  # alone it costs more than it saves; next to layer 1 it pays
    assert values[1] == 0.8 and values[2] == 0.2


def test_screen_keeps_each_layer_at_or_above_its_floor(tables):
    result = _search("on")
    floors = {i: f.threshold for i, f in result.floors.items()}
    # layer 0: 0.999 passes alone but does not pay, 0.9 breaks -> no prediction;
    # layer 1: breaks at 0.5, one step of margin above 0.8 -> 0.9; layer 2 never breaks.
    assert floors == {0: None, 1: 0.9, 2: 0.2}
    values = _layer_values(result.best.config)
    assert values == {0: None, 1: 0.9, 2: 0.2}
    assert result.best.loss_bound(0.0) <= 1.0
    info = result.config({}).info
    assert info["layer_floors"]["0"]["floor"] is None and info["layer_screen"] == "on"


def test_screen_margin_zero_floors_at_the_last_threshold_that_passed(tables):
    result = _search("on", margin=0)
    assert {i: f.threshold for i, f in result.floors.items()} == {0: None, 1: 0.8, 2: 0.2}
    assert _layer_values(result.best.config)[1] == 0.8


def test_a_uniform_setting_below_a_floor_is_not_chosen(tables, monkeypatch):
    # Uniform 0.9 breaks layer 0's screen (it flips 5 of 200 there: over a 1-point budget on
    # its mean as well, so the uniform phase falls back to 0.999, which layer 0 does not pay).
    result = _search("on")
    assert not result.uniform_admissible or result.uniform.config.options["threshold"] == 0.999
    assert result.best is result.per_layer


@pytest.mark.parametrize("screen, margin, message", [
    ("maybe", 1, "--layer-screen"), ("on", -1, "--screen-margin must be >= 0")])
def test_bad_screen_options_are_refused(screen, margin, message):
    with pytest.raises(CompileError, match=message):
        SearchOptions(layer_screen=screen, screen_margin=margin).validate()


@pytest.mark.parametrize("extra, fragment", [
    (["--screen-margin", "-1"], "--screen-margin must be >= 0"),
    (["--layer-screen", "maybe"], "invalid choice"),
])
def test_bad_screen_options_are_one_line_cli_errors(tmp_path, capsys, extra, fragment):
    from esact_cc.cli import esact_tune_main

    try:
        code = esact_tune_main.main(["model.onnx", "--calibration-data", "calib.npz", "-o",
                                     str(tmp_path / "spls.json"), *extra])
    except SystemExit as exit_:  # argparse's own choices check: usage + one error line
        code = exit_.code
    err = capsys.readouterr().err
    assert code != 0 and fragment in err and "Traceback" not in err
    assert len([line for line in err.strip().splitlines() if "error" in line]) == 1
    assert not (tmp_path / "spls.json").exists()
