"""esact-tune's search options: the confidence bound on the loss, the `efficient` strategy,
per-layer windows, first-reference (uniform crossing and the per-layer floor).

Same tiny 2-layer post-LN classifier and small search tables as test_spls_tuning.py (loaded
from there); fp32 IR and few samples to stay fast.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from esact_cc.tuning import spls_measurement
from esact_cc.tuning import spls_calibration_inputs
from esact_cc.tuning import spls_tuning
from esact_cc.cli import esact_tune_main
from esact_cc.tuning.spls_measurement import Measurement
from esact_cc.tuning.spls_tuning import SearchOptions
from small_search_tables import use_small_search_tables

HERE = Path(__file__).resolve().parent


def _sibling():
    spec = importlib.util.spec_from_file_location("spls_tuning_fixtures",
                                                  HERE / "test_spls_tuning.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


FIXTURES = _sibling()


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory) -> spls_measurement.SplsEvaluator:
    model, calib = FIXTURES.write_tiny_classifier(tmp_path_factory.mktemp("tune_search"), 16, 1)
    inputs = spls_calibration_inputs.model_inputs(model)
    data = spls_calibration_inputs.load_calibration_data(calib, inputs, "labels")
    return spls_measurement.SplsEvaluator(model, data, ir="transformer")


def _patch(monkeypatch) -> None:
    """The small search tables of the tuning tests, plus per-layer windows."""
    use_small_search_tables(monkeypatch)
    monkeypatch.setattr(spls_tuning, "LAYER_WINDOWS", (1, 2, 4, 8, 16))


def test_sample_losses_give_the_loss_and_its_standard_error(evaluator):
    m = evaluator.measure([spls_measurement.uniform_config(threshold=0.3)])[0]
    assert m.sample_losses is not None and len(m.sample_losses) == evaluator.sample_count
    # Independent: per-sample correctness from the outputs themselves.
    prepared = evaluator._prepare(m.config)
    correct = np.array([int(np.argmax(evaluator._run(prepared, i, {}, None)[0])) == label
                        for i, label in enumerate(evaluator.labels)], dtype=float)
    dense = np.array([int(np.argmax(o)) == label
                      for o, label in zip(evaluator.dense_outputs, evaluator.labels)], float)
    losses = 100.0 * (dense - correct)
    assert np.allclose(m.sample_losses, losses)
    assert m.loss == pytest.approx(losses.mean())
    assert m.loss > 0, "threshold 0.3 should cost accuracy: test is vacuous"
    # Labels: the paired comparison's standard error, half a count added to each cell
    # (Agresti-Min), so a sample without flips still has one.
    harmful, helpful = int(np.sum(losses > 0)) + 0.5, int(np.sum(losses < 0)) + 0.5
    n = len(losses) + 2
    se = 100 * math.sqrt(((harmful + helpful) - (harmful - helpful) ** 2 / n) / n ** 2)
    assert m.loss_se == pytest.approx(se)
    assert m.loss_bound(2.0) == pytest.approx(m.loss + 2 * se)
    assert m.as_dict()["loss_se_points"] == pytest.approx(se)


def _fits(m: Measurement, budget: float, margin: float) -> bool:
    return m.loss + margin * m.loss_se <= budget + 1e-9


@pytest.mark.parametrize("layer_search", ["largest", "efficient"])
def test_confidence_holds_every_setting_to_its_bound(evaluator, monkeypatch, layer_search):
    _patch(monkeypatch)
    budget = 20.0
    options = SearchOptions(confidence=0.8, layer_search=layer_search, layer_first_reference=0,
                            loss_estimate="flips")
    margin = options.margin_se
    assert margin == pytest.approx(0.8416, abs=1e-4)
    result = spls_tuning.tune(evaluator, budget, search=options)
    # The bound binds: some setting is within budget on its mean loss only.
    assert any(m.loss <= budget < m.loss + margin * m.loss_se for m in result.history)
    assert _fits(result.uniform, budget, margin)
    if result.per_layer is not None:
        assert _fits(result.per_layer, budget, margin)
        assert result.per_layer.config.layers
    # On the mean alone the same search may go further, never less far.
    plain = spls_tuning.tune(evaluator, budget, search=SearchOptions(
        confidence=0.5, layer_search=layer_search, layer_first_reference=0,
        loss_estimate="flips"))
    assert plain.best.reduction >= result.best.reduction
    assert plain.best.loss <= budget + 1e-9


@pytest.mark.parametrize("steps", [1, 0])
def test_efficient_search_takes_the_best_priced_move(evaluator, monkeypatch, steps):
    """Against an independent re-enactment: from the start, each step must be the in-budget
    move (one layer, its `steps` nearest lower thresholds, 0 = all) with the highest gain per
    point of loss."""
    _patch(monkeypatch)
    budget = 30.0
    result = spls_tuning.tune(evaluator, budget, search=SearchOptions(
        confidence=0.5, layer_search="efficient", layer_first_reference=0, layer_steps=steps,
        layer_options=("threshold",), layer_screen="off",  # the re-enactment has no floors
        loss_estimate="flips"))
    steps = steps or None
    chosen = result.per_layer or result.uniform
    assert chosen.loss <= budget + 1e-9
    seen = {spls_tuning._key(m.config): m for m in result.history}
    thresholds = spls_tuning.LAYER_THRESHOLDS[result.uniform.config.options["similarity"]]
    current = result.uniform
    while True:
        now = spls_tuning._thresholds_of(current, [0, 1])
        moves = []
        for layer in range(2):
            for thr in [t for t in thresholds if t < now[layer]["threshold"]][::-1][:steps]:
                trial = {i: dict(v) for i, v in now.items()}
                trial[layer]["threshold"] = thr
                moves.append(seen[spls_tuning._key(spls_tuning._per_layer_config(
                    current.config.options, trial))])
        ok = [m for m in moves if m.reduction > current.reduction + 1e-12
              and m.loss <= budget + 1e-9]
        if not ok:
            break
        free = [m for m in ok if m.loss <= current.loss]
        current = (max(free, key=lambda m: m.reduction) if free else
                   max(ok, key=lambda m: (m.reduction - current.reduction)
                       / (m.loss - current.loss)))
    assert spls_tuning._key(current.config) == spls_tuning._key(chosen.config)


def test_per_layer_windows_and_first_reference_floor(evaluator, monkeypatch):
    _patch(monkeypatch)
    result = spls_tuning.tune(evaluator, 30.0, search=SearchOptions(
        layer_search="efficient", layer_options=("threshold", "window"),
        layer_first_reference=1))
    phase = [m for m in result.history if m.config.layers]
    assert phase
    assert all(m.config.options["first-reference"] >= 1 for m in phase)
    assert any("window" in o for m in phase for o in m.config.layers.values())
    # first-reference is crossed with the finer thresholds in the uniform phase.
    uniform_phase = [m for m in result.history if not m.config.layers]
    assert {m.config.options["first-reference"] for m in uniform_phase} == {0, 1}


def test_esact_tune_writes_the_search_options(tmp_path, evaluator, monkeypatch):
    _patch(monkeypatch)
    data = {"input_ids": np.stack([s["input_ids"][0] for s in evaluator.samples]),
            "attention_mask": np.stack([s["attention_mask"][0] for s in evaluator.samples]),
            "labels": evaluator.labels}
    calib = tmp_path / "calib.npz"
    np.savez(calib, **data)
    out = tmp_path / "spls.json"
    assert esact_tune_main.main([evaluator.model, "--calibration-data", str(calib),
                                 "--labels-key", "labels", "--ir", "transformer", "--budget",
                                 "20", "--confidence", "0.8", "--loss-estimate", "flips",
                                 "--layer-search", "efficient",
                                 "--layer-options", "threshold,window",
                                 "--layer-first-reference", "1", "--layer-steps", "2",
                                 "-o", str(out),
                                 "--quiet"]) == 0
    info = json.loads(out.read_text())["info"]
    assert info["confidence"] == 0.8
    assert info["margin_se"] == pytest.approx(0.8416, abs=1e-4)
    assert info["layer_search"] == "efficient"
    assert info["layer_options"] == ["threshold", "window"]
    assert info["layer_first_reference"] == 1
    assert info["layer_steps"] == 2
    assert info["chosen"] in ("uniform", "per_layer")
    if info["per_layer"] is not None:
        p = info["per_layer"]
        assert p["loss_points"] + info["margin_se"] * p["loss_se_points"] <= 20 + 1e-9


@pytest.mark.parametrize("extra, fragment", [
    (["--confidence", "0.3"], "--confidence must be in [0.5, 1)"),
    (["--confidence", "1"], "--confidence must be in [0.5, 1)"),
    (["--confidence", "nan"], "--confidence must be in [0.5, 1)"),
    (["--margin-se", "1"], "--margin-se was replaced by --confidence"),
    (["--layer-search", "nosuch"], "invalid choice"),
    (["--layer-options", "k-ratio"], "unknown per-layer option 'k-ratio'"),
    (["--layer-options", ","], "per-layer options must be"),
    (["--layer-first-reference", "-1"], "first-reference must be >= 0"),
    (["--layer-steps", "-1"], "steps must be >= 0"),
])
def test_search_option_errors_are_one_line(tmp_path, extra, fragment, capsys):
    out = tmp_path / "spls.json"
    args = ["model.onnx", "--calibration-data", "calib.npz", "-o", str(out), *extra]
    try:
        code = esact_tune_main.main(args)
    except SystemExit as e:  # argparse's usage errors: usage, then `prog: error:`, exit 2
        code = e.code
    lines = capsys.readouterr().err.strip().splitlines()
    if lines and lines[0].startswith("usage: "):
        assert code == 2
        lines = lines[-1:]
    else:  # a command line the parser took but the tool refuses (CommandLineError) is 2 too
        assert code == (2 if extra[0] == "--margin-se" else 1)
    assert len(lines) == 1 and lines[0].startswith("esact-tune: error: "), lines
    assert fragment in lines[0], lines[0]
    assert not out.exists()
