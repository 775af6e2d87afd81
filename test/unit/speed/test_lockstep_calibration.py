"""Calibration runs its samples in lock-step groups with each FP32 linear batched over the group
(issue 16); the ranges are bit for bit those of running the samples one at a time, whatever
the group size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from esact_cc.pipeline import compile_model
from esact_cc.tuning import calibration
from esact_cc.tuning.calibrate_pass import gemm_ops_to_calibrate, observed_values
from esact_cc.tuning.synthetic_calibration import synthetic_calibration_samples

MODELS = Path(__file__).resolve().parents[2] / "fixtures" / "models"


def _one_sample_at_a_time(module, store, samples, values) -> calibration._PeakRecorder:
    """The former loop: every sample through run_function, each watched value recorded at
    every read."""
    recorder = calibration._PeakRecorder(store, list(dict.fromkeys(values)))
    function = calibration.main_function(module)
    for sample in samples:
        recorder.env.clear()
        recorder.run_function(function, sample)
    return recorder


def _ranges(recorder: calibration._PeakRecorder) -> calibration.Ranges:
    means = {v: (total / count).astype(np.float32)
             for v, (total, count) in recorder.channel_sums.items()}
    return calibration.Ranges(recorder.peaks, recorder.channel_peaks, means,
                              recorder.probability_peaks)


def _assert_identical(got: calibration.Ranges, expected: calibration.Ranges) -> None:
    assert got.peaks == expected.peaks
    assert got.probability_peaks == expected.probability_peaks
    for field in ("channel_peaks", "channel_means"):
        got_arrays, expected_arrays = getattr(got, field), getattr(expected, field)
        assert got_arrays.keys() == expected_arrays.keys()
        for value, array in expected_arrays.items():
            assert got_arrays[value].tobytes() == array.tobytes(), field


@pytest.mark.parametrize("model", ["bert_tiny_dynamo18", "gpt2_tiny_dynamo18"])
def test_lockstep_groups_give_the_ranges_of_single_samples(model: str, monkeypatch) -> None:
    module, store = compile_model(MODELS / f"{model}.onnx", "transformer")
    samples = synthetic_calibration_samples(module, 5)  # odd: the last group is shorter
    values = [v for op in gemm_ops_to_calibrate(module) for v in observed_values(op)]
    assert len(set(values)) < len(values) or any(len(v.uses) > 1 for v in values)
    single = _one_sample_at_a_time(module, store, samples, values)
    expected = _ranges(single)
    rows = calibration.sample_rows(module)
    original = calibration._batched_linear
    for group in (1, 2, 5):
        monkeypatch.setattr(calibration, "CALIBRATION_BATCH_ROWS", group * rows)
        batches: list[int] = []
        monkeypatch.setattr(calibration, "_batched_linear",
                            lambda op, arg_sets, check, shape, batches=batches:
                            batches.append(len(arg_sets)) or original(op, arg_sets, check, shape))
        _assert_identical(calibration.collect_peaks(module, store, samples, values), expected)
        assert batches and max(batches) == group
    # The float64 sums behind the means, and their row counts, too.
    lockstep = calibration._PeakRecorder(store, list(dict.fromkeys(values)))
    lockstep.run_lockstep(calibration.main_function(module), samples)
    assert lockstep.channel_sums.keys() == single.channel_sums.keys()
    for value, (total, count) in single.channel_sums.items():
        assert lockstep.channel_sums[value][1] == count
        assert lockstep.channel_sums[value][0].tobytes() == total.tobytes()


@pytest.mark.parametrize("model", ["bert_tiny_dynamo18", "gpt2_tiny_dynamo18"])
def test_lockstep_stops_after_the_last_op_calibration_reads(model: str, monkeypatch) -> None:
    """The ops after the last watched value and the last attention (the last layer's output
    linear, residual, norm) are not run; the ranges are those of a full run."""
    module, store = compile_model(MODELS / f"{model}.onnx", "transformer")
    samples = synthetic_calibration_samples(module, 2)
    values = [v for op in gemm_ops_to_calibrate(module) for v in observed_values(op)]
    expected = _ranges(_one_sample_at_a_time(module, store, samples, values))
    ran: list = []
    original = calibration._PeakRecorder.run_op_lanes
    monkeypatch.setattr(calibration._PeakRecorder, "run_op_lanes",
                        lambda self, op, lane_args, envs: ran.append(op)
                        or original(self, op, lane_args, envs))
    _assert_identical(calibration.collect_peaks(module, store, samples, values), expected)
    top = list(calibration.main_function(module).body.block.ops)
    skipped = [op for op in top if op not in ran and not op.has_trait(calibration.IsTerminator)]
    last_linear = [op for op in top if op.name == "transformer.linear"][-1]
    assert last_linear in skipped  # its input is recorded where defined; its output unread
    assert all(top.index(op) > top.index(last_linear.x.owner) for op in skipped)
