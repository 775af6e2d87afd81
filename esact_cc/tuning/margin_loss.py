"""A classifier's loss priced before any prediction flips: the dense top class's margin eroded.

esact-tune's search compares 120-150 settings on one calibration set. Priced by flipped
predictions alone (a per-input loss of 0 or +-100), every setting that flips none of the
calibration inputs costs the same, so the search ends on the most aggressive of them, which
flips held-apart inputs (docs/design.md section 6.2). The margin erosion is a continuous
measure that grows before a prediction flips:

- the dense margin of input i is the logit of the dense top class c_i minus the largest other
  logit (>= 0); a setting's margin is the same difference on its logits, for the same c_i; the
  erosion e_i is dense margin minus the setting's. The prediction flips iff e_i exceeds the
  dense margin;
- a new input draws its margin from the dense model's and the setting's erosion independently
  of it: input i's loss is 100 x the share of calibration inputs the dense model classifies
  right whose margin is below e_i (the flips e_i would cause among them). Its mean over the
  inputs is the expected harmful flip rate in points, from every (erosion, margin) pair of the
  calibration set instead of the few inputs whose own margin is small. Flips towards the label
  (dense wrong, the setting right) are not credited: the estimate errs high.

Measured on the digits ViT (docs/design.md section 6.2): across the settings the search
measures, the price follows the harmful flips (0.88-0.89 of them), but the flips that decide a
1-point budget fall on inputs whose erosion is large for their own margin, which independence
prices low (3 calibration flips, 1.67 points, priced at 0.24): tuned on 180 images the search
lost more held apart than on `flips`, which stays the default.

The estimate is a two-sample statistic over (erosion, margin) pairs; its standard error has a
term from each sample (`MarginPrice.se`), so the bound (loss_bound.py) reads both: the
erosions the setting happened to cause and the margins the calibration inputs happened to
have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def class_margins(logits: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per input (axis 0): the logit of `classes[i]` minus the largest other logit."""
    flat = logits.reshape(len(logits), -1).astype(np.float64)
    rows = np.arange(len(flat))
    chosen = flat[rows, classes]
    others = flat.copy()
    others[rows, classes] = -np.inf
    return chosen - others.max(axis=1)


@dataclass(frozen=True)
class MarginReference:
    """The dense model's top classes and margins on the calibration inputs."""

    dense_classes: np.ndarray
    dense_margins: np.ndarray
    dense_right: np.ndarray
    """Per input: the dense model's top class is the label."""
    correct_margins: np.ndarray
    """Sorted margins of the inputs the dense model classifies right."""

    @classmethod
    def of(cls, dense_logits: np.ndarray, labels: np.ndarray) -> MarginReference:
        flat = dense_logits.reshape(len(dense_logits), -1)
        classes = np.argmax(flat, axis=1)
        margins = class_margins(flat, classes)
        right = classes == np.asarray(labels)
        return cls(classes, margins, right, np.sort(margins[right]))

    @property
    def inputs(self) -> int:
        return len(self.dense_margins)

    def erosions(self, logits: np.ndarray) -> np.ndarray:
        """Per input: dense margin minus the setting's margin of the dense top class."""
        return self.dense_margins - class_margins(logits, self.dense_classes)

    def price(self, erosions: np.ndarray) -> MarginPrice:
        """The flips `erosions` would cause among the dense-right calibration inputs."""
        # per input: 100 x the share of all calibration inputs that are right dense and
        # whose margin is below its erosion
        per_input = 100.0 * np.searchsorted(self.correct_margins, erosions, side="left") \
            / self.inputs
        # per calibration input: 100 x the share of erosions above its margin, 0 when the
        # dense model has it wrong (the same pairs counted the other way: the same mean)
        above = len(erosions) - np.searchsorted(np.sort(erosions), self.dense_margins,
                                                side="right")
        per_margin = np.where(self.dense_right, 100.0 * above / len(erosions), 0.0)
        return MarginPrice(per_input, per_margin)


@dataclass(frozen=True)
class MarginPrice:
    """A setting's loss priced from its erosions: the mean of `per_input` (= the mean of
    `per_margin`, the same pairs summed the other way)."""

    per_input: np.ndarray
    """Per calibration input: the flips its erosion would cause, points."""
    per_margin: np.ndarray
    """Per calibration input: the flips the erosions would cause at its margin if the dense
    model has it right (else 0), points."""

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_input))

    @property
    def se(self) -> float:
        """Standard error of `mean`: the first-order (Hoeffding) terms of both samples."""
        def term(values: np.ndarray) -> float:
            return float(np.var(values, ddof=1)) / len(values) if len(values) > 1 else 0.0
        return math.sqrt(term(self.per_input) + term(self.per_margin))

    @classmethod
    def pooled(cls, parts: Sequence[MarginPrice]) -> MarginPrice:
        """Parts priced against their own margins, as one set (a stratified estimate)."""
        return cls(np.concatenate([p.per_input for p in parts]),
                   np.concatenate([p.per_margin for p in parts]))
