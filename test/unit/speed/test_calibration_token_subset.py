"""A synthetic sample longer than the rows budget is calibrated on its first token rows
(esact_cc/tuning/calibration_token_subset.py): the ranges are bit for bit those of the same
rows in a full run where the later tokens are no keys (padding, or later positions of a causal model), and
the warning says which rows were computed, or why all were."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from esact_cc import api
from esact_cc.pipeline import compile_model
from esact_cc.tuning import calibrate_pass, calibration
from esact_cc.tuning.calibrate_pass import gemm_ops_to_calibrate, observed_values
from esact_cc.tuning.calibration_token_subset import TokenSubset
from esact_cc.tuning.synthetic_calibration import synthetic_calibration_samples

MODELS = Path(__file__).resolve().parents[2] / "fixtures" / "models"
LENGTH, KEEP = 16, 8


class _FirstRows(calibration._PeakRecorder):
    """Records only the first KEEP token rows of every watched value."""

    def _record(self, value, arr, uses=1):  # type: ignore[no-untyped-def]
        arr = np.asarray(arr)
        if arr.ndim >= 2 and arr.shape[-2] == LENGTH:
            arr = arr[..., :KEEP, :]
        super()._record(value, arr, uses)


@pytest.mark.parametrize("model", ["minilm_tiny_dynamo20", "gpt2_tiny_dynamo18"])
def test_the_subset_records_the_ranges_of_the_first_token_rows(model: str) -> None:
    module, store = compile_model(MODELS / f"{model}.onnx", "transformer")
    samples = synthetic_calibration_samples(module, 2)
    values = [v for op in gemm_ops_to_calibrate(module) for v in observed_values(op)]
    plan = calibration.token_subset_plan(module, values, KEEP)
    assert isinstance(plan, TokenSubset) and (plan.keep, plan.length) == (KEEP, LENGTH)
    # a value a host region computes in full (the embeddings) is recorded cut, as read
    first_host = next(op for op in calibration.main_function(module).body.block.ops
                      if op.name == "transformer.host")
    embeddings = [r for r in first_host.results if r.type.get_shape()[-2:] == (LENGTH, 32)]
    assert embeddings and all(use.operation in plan.ops for r in embeddings for use in r.uses)
    values += embeddings
    got = calibration.collect_peaks(module, store, samples, values, False, plan)
    padded = [dict(sample) for sample in samples]
    for sample in padded:  # later tokens padding: the first rows see only the first keys
        sample["attention_mask"] = sample["attention_mask"].copy()
        sample["attention_mask"][..., KEEP:] = 0
    reference = _FirstRows(store, list(dict.fromkeys(values)), False)
    reference.run_lockstep(calibration.main_function(module), padded)
    assert got.peaks.keys() == reference.peaks.keys()
    for value, peak in reference.peaks.items():
        assert got.peaks[value] == peak  # bit for bit: the keys cut had probability 0 there
        assert got.channel_peaks[value].tobytes() == reference.channel_peaks[value].tobytes()
    full = calibration.collect_peaks(module, store, samples, values, False)
    assert any(full.peaks[v] != got.peaks[v] for v in full.peaks)  # the rows cut do matter


def test_the_default_calibration_cuts_a_long_sample_and_says_so(capsys, monkeypatch) -> None:
    monkeypatch.setattr(calibrate_pass, "SYNTHETIC_CALIBRATION_ROWS", KEEP)
    monkeypatch.setattr(calibrate_pass, "default_sample_count", lambda rows: 1)
    used: list = []
    original = calibrate_pass.collect_peaks
    monkeypatch.setattr(calibrate_pass, "collect_peaks", lambda *args: used.append(args[-1])
                        or original(*args))
    api.compile(MODELS / "minilm_tiny_dynamo20.onnx", stage="quantized")
    assert f"1 sample(s) of {LENGTH} rows, the first {KEEP} of {LENGTH} token rows computed" \
        in capsys.readouterr().err
    assert isinstance(used[-1], TokenSubset) and used[-1].keep == KEEP
    api.compile(MODELS / "minilm_tiny_dynamo20.onnx", stage="quantized", synthetic_samples=1)
    assert "token rows computed" not in capsys.readouterr().err and used[-1] is None
    # BERT's pooler reads token 0 through a host region: not cut, and the line says why
    api.compile(MODELS / "bert_tiny_dynamo18.onnx", stage="quantized")
    assert (f'1 sample(s) of {LENGTH} rows, all computed (transformer.host at "node_select" '
            "reads token rows)") in capsys.readouterr().err
    assert used[-1] is None


def test_a_sample_within_the_budget_is_not_cut() -> None:
    module, _ = compile_model(MODELS / "bert_tiny_dynamo18.onnx", "transformer")
    values = [v for op in gemm_ops_to_calibrate(module) for v in observed_values(op)]
    assert calibration.token_subset_plan(module, values, LENGTH) is None
