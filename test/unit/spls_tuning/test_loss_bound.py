"""esact-tune's acceptance rule (esact_cc/tuning/loss_bound.py): a setting keeps the budget
when the one-sided confidence bound of its loss does, so a setting that fits on the calibration
sample by luck (no prediction flipped on a few inputs) is rejected."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esact_cc.runtime.errors import CompileError
from esact_cc.tuning.loss_bound import (
    loss_se,
    loss_upper_bound,
    paired_label_se,
    sample_se,
    z_score,
)
from esact_cc.tuning.spls_accounting import WorkSummary
from esact_cc.tuning.spls_measurement import Measurement, uniform_config
from esact_cc.tuning.spls_tuning import _better


def label_losses(harmful: int, helpful: int, inputs: int) -> np.ndarray:
    """Per-input losses of a label comparison: +100 per harmful flip, -100 per helpful one."""
    losses = np.zeros(inputs)
    losses[:harmful] = 100.0
    losses[harmful:harmful + helpful] = -100.0
    return losses


def measurement(losses: np.ndarray, label_metric: bool = True) -> Measurement:
    return Measurement(uniform_config(), 100.0 - float(losses.mean()), 100.0, WorkSummary([]),
                       None, losses, label_metric)


def bound(losses: np.ndarray, confidence: float, label_metric: bool = True) -> float:
    return loss_upper_bound(float(losses.mean()), losses, label_metric, z_score(confidence))


def test_no_flip_on_few_inputs_is_not_within_a_one_point_budget():
    # The measured case: settings with no flipped prediction on 60 calibration images lost
    # 2 points on held-out ones. On the mean they fit a 1-point budget; on the bound they do not.
    lucky = measurement(label_losses(0, 0, 60))
    assert lucky.loss == 0.0 and lucky.loss_bound(0.0) == 0.0
    assert _better(lucky, None, 1.0, margin_se=0.0)
    z = z_score(0.9)
    assert lucky.loss_bound(z) == pytest.approx(100 * z / 62)  # Agresti-Min: 100 / (n + 2)
    assert not _better(lucky, None, 1.0, margin_se=z)
    # The same evidence on 300 inputs is enough.
    assert _better(measurement(label_losses(0, 0, 300)), None, 1.0, margin_se=z)


def test_paired_label_se_is_agresti_min():
    # Half a count in each cell of the paired table: h' = 3.5, g' = 1.5, n' = 52.
    losses = label_losses(3, 1, 50)
    h, g, n = 3.5, 1.5, 52.0
    expected = 100 * math.sqrt(((h + g) - (h - g) ** 2 / n) / n ** 2)
    assert paired_label_se(losses) == pytest.approx(expected)
    # Close to the sample standard error once flips are many, never 0 when there are none.
    many = label_losses(40, 20, 1000)
    assert paired_label_se(many) == pytest.approx(sample_se(many), rel=0.02)
    assert sample_se(label_losses(0, 0, 50)) == 0.0 < paired_label_se(label_losses(0, 0, 50))


def test_cosine_losses_use_the_sample_standard_error():
    losses = np.array([0.1, 0.3, 0.0, 0.5, 0.2])
    assert loss_se(losses, label_metric=False) == pytest.approx(
        np.std(losses, ddof=1) / math.sqrt(5))
    exact = np.zeros(5)  # reuse off: the output is dense's, nothing to bound
    assert bound(exact, 0.95, label_metric=False) == 0.0


@pytest.mark.parametrize("inputs", [60, 180, 300])
def test_a_setting_twice_over_budget_is_accepted_less_than_one_time_in_ten(inputs):
    """Seeded simulation: a setting whose loss on new inputs is 2 points (2% of predictions
    flip the wrong way) is calibrated on `inputs` images against a 1-point budget. The mean
    alone accepts it often; the 0.9 bound at most 1 time in 10."""
    rng = np.random.default_rng(inputs)
    trials = 2000
    accepted = {0.5: 0, 0.9: 0}
    for _ in range(trials):
        losses = np.where(rng.random(inputs) < 0.02, 100.0, 0.0)
        for confidence in accepted:
            accepted[confidence] += bound(losses, confidence) <= 1.0
    assert accepted[0.5] / trials > 0.1, "the mean rule never overfits here: vacuous"
    assert accepted[0.9] / trials <= 0.1


@settings(max_examples=200, deadline=None)
@given(harmful=st.integers(0, 30), helpful=st.integers(0, 30), extra=st.integers(0, 200),
       low=st.floats(0.5, 0.98), step=st.floats(0.0, 0.019))
def test_bound_is_at_least_the_mean_and_grows_with_confidence_and_harm(harmful, helpful, extra,
                                                                       low, step):
    inputs = harmful + helpful + extra + 1
    losses = label_losses(harmful, helpful, inputs)
    mean = float(losses.mean())
    assert bound(losses, 0.5) == pytest.approx(mean)
    assert bound(losses, low) >= mean - 1e-9
    assert bound(losses, low + step) >= bound(losses, low) - 1e-9
    if low > 0.51:  # labels: never trusted as certain, whatever the sample
        assert bound(losses, low) > mean
    # One more harmful flip in place of an unchanged prediction never lowers the bound.
    worse = label_losses(harmful + 1, helpful, inputs)
    assert bound(worse, low) >= bound(losses, low) - 1e-9


@pytest.mark.parametrize("confidence", [0.4, 1.0, float("nan"), float("inf")])
def test_confidence_outside_half_to_one_is_refused(confidence):
    with pytest.raises(CompileError, match=r"--confidence must be in \[0.5, 1\)"):
        z_score(confidence)
