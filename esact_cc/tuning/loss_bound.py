"""How sure esact-tune is that a setting keeps its budget on inputs it has not seen.

A setting is accepted when a one-sided upper confidence bound on its accuracy loss, not the
loss measured on the calibration inputs, is within the budget (docs/design.md section 6.2,
"Calibration"): the observed mean loss plus z standard errors, z the normal quantile of the
confidence (`--confidence`; 0.5 is the mean alone).

The standard error depends on the metric:
- task accuracy (labels): each input's loss is +100 (dense right, the setting wrong), -100
  (the other way) or 0, a paired comparison of two classifiers on the same inputs. The sample
  standard error is 0 when no prediction flipped, which says nothing about new inputs (60
  calibration images with no flip do not make a 2% flip rate unlikely), so the standard error
  is computed with Agresti & Min's adjustment for matched proportions (Statistics in Medicine
  24:729, 2005): half a count added to each cell of the paired table. With no flip among n
  inputs it is 100 / (n + 2) points, and a flipped prediction always costs more than its share
  of the mean;
- cosine to dense (embeddings): the sample standard error of the per-input losses.

With labels the per-input losses the bound reads are `--loss-estimate`'s: `flips`, the
observed 0 / +-100 above; `margins`, each input's margin erosion priced as the flips it would
cause (margin_loss.py), continuous, so the sample standard error; cosine losses are read as
they are under either.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from esact_cc.tuning.margin_loss import MarginPrice

DEFAULT_CONFIDENCE = 0.9
"""A setting that loses twice the budget on new inputs passes at most one time in ten from 60
to 300 calibration inputs (seeded simulation, test/unit/spls_tuning/test_loss_bound.py). On
the digits ViT with 180 calibration images 0.8, 0.9 and 0.95 choose the same setting (each
needs no flipped prediction at a 1-point budget), which still loses more than the budget on
held-apart images: the search's selection, which no bound on one sample covers
(docs/design.md section 6.2; bench/results/tune_confidence_digits.json). A Bonferroni bound
over the K settings compared (z at 1 - 0.1 / K) would cover it, but bounds no flip on n inputs
at 100 z / (n + 2): 1.56 points at K = 43 and n = 180, so nothing passes a 1-point budget
below 282 inputs (319 at esact-tune's K of about 150). What kept the budget on the digits ViT
is seeing more of each input's neighbourhood on a fixed grid (esact-tune --augment,
calibration_augmentation.py; bench/results/tune_confidence_rules_digits.json) and, in esact-tune's
own search, the layer screen (layer_screen.py; bench/results/
tune_confidence_digits_layer_screen.json)."""
LOSS_ESTIMATES = ("flips", "margins")
"""What a labelled input's loss is for the bound (`--loss-estimate`)."""
DEFAULT_LOSS_ESTIMATE = "flips"
"""On the digits ViT (180 images to tune, 180 held apart, 1-point budget, three splits)
`margins` lost 2.78, 1.67 and 4.44 points held apart, `flips` 2.78, 1.11 and 2.78 (docs/design.md
section 6.2; bench/results/tune_confidence_digits_margins.json): not the default."""
MEAN_ONLY = 0.5
"""The confidence whose bound is the calibration mean itself (z = 0)."""


def check_confidence(confidence: float) -> None:
    """`confidence` must be in [0.5, 1): a bound at or above the mean, and a finite one."""
    from esact_cc.runtime.errors import CompileError

    if not (MEAN_ONLY <= confidence < 1.0):
        raise CompileError(f"--confidence must be in [0.5, 1) (0.5: the calibration mean "
                           f"alone), got {confidence}")


def check_loss_estimate(estimate: str) -> None:
    from esact_cc.runtime.errors import CompileError
    from esact_cc.typed_options import unknown_name

    if estimate not in LOSS_ESTIMATES:
        raise CompileError("--loss-estimate: " + unknown_name("loss estimate", estimate,
                                                              LOSS_ESTIMATES))


def z_score(confidence: float) -> float:
    """Standard errors above the mean for a one-sided bound at `confidence`."""
    check_confidence(confidence)
    return 0.0 if confidence == MEAN_ONLY else NormalDist().inv_cdf(confidence)


def paired_label_se(sample_losses: np.ndarray) -> float:
    """Standard error (points) of the mean loss of a paired label comparison, Agresti-Min
    adjusted: per-input losses are +100 (harmful flip), -100 (helpful flip) or 0."""
    n = len(sample_losses)
    harmful = float(np.count_nonzero(sample_losses > 0)) + 0.5
    helpful = float(np.count_nonzero(sample_losses < 0)) + 0.5
    total = n + 2.0
    variance = ((harmful + helpful) - (harmful - helpful) ** 2 / total) / total ** 2
    return 100.0 * math.sqrt(max(variance, 0.0))


def sample_se(sample_losses: np.ndarray) -> float:
    """Sample standard error of the mean of the per-input losses (0 for fewer than 2)."""
    n = len(sample_losses)
    if n < 2:
        return 0.0
    return float(np.std(sample_losses, ddof=1) / math.sqrt(n))


def loss_se(sample_losses: np.ndarray | None, label_metric: bool) -> float:
    """The standard error the bound uses: paired-label (adjusted) or sample; 0 without
    per-input losses."""
    if sample_losses is None or len(sample_losses) == 0:
        return 0.0
    return paired_label_se(sample_losses) if label_metric else sample_se(sample_losses)


def loss_upper_bound(loss: float, sample_losses: np.ndarray | None, label_metric: bool,
                     z: float) -> float:
    """Mean loss + z standard errors: the loss a setting is held to against the budget."""
    return loss + z * loss_se(sample_losses, label_metric) if z else loss


def estimated_upper_bound(loss: float, sample_losses: np.ndarray | None,
                          margin_price: MarginPrice | None, label_metric: bool, z: float,
                          estimate: str) -> float:
    """The bound under `estimate`: `flips` as `loss_upper_bound`; `margins` the margin-priced
    loss + z of its standard errors, where it exists (labels)."""
    if estimate == "margins" and label_metric and margin_price is not None:
        return margin_price.mean + z * margin_price.se
    return loss_upper_bound(loss, sample_losses, label_metric, z)
