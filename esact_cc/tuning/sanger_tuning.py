"""`esact-tune --sparsity sanger`: calibrate Sanger's threshold under an accuracy budget.

The same measurement as SPLS (esact_cc/tuning/spls_measurement.py, whose evaluator this one
extends): the model compiled once to INT8 IR, each setting a clone with `insert-sanger`, run
by the reference interpreter on every calibration input; accuracy in points (task accuracy
with labels, else cosine to the dense output), loss = dense - Sanger, and a setting is within
the budget when its mean loss (+ `margin_se` standard errors) is at most the budget.
Computation saved: `sparsity`, the fraction of visible attention scores the masks remove (the
QK and PV work of the sparse array), counted on the interpreter's masks.

Search: every threshold of `THRESHOLD_GRID` uniformly; the sparsest one within the budget is
the uniform setting. Per layer, from it: each layer in turn takes the next larger threshold
while the whole model stays within the budget (a coordinate ascent, one pass); the evaluator,
loss and search are shared with SpAtten (esact_cc/tuning/scheme_tuning.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from esact_cc.dialects.sanger import PredictMaskOp
from esact_cc.quantized_kernels import causal_visible
from esact_cc.sparsity.sanger_options import SangerConfig
from esact_cc.tuning.scheme_tuning import (CountingInterpreter, LossMixin, SchemeEvaluator,
                                           SchemeTuning, search)

THRESHOLD_GRID = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
"""Thresholds tried (0 keeps every key of non-zero predicted probability); Sanger's configs use
0.002 and 0.02 (runtime/sanger_kernels.PAPER_THRESHOLDS)."""


MASKED_ADDITIVE = -1.0e4
"""An additive mask value at or below this hides the key from the count of visible positions
(HF exports mask with -10000 or the float32 minimum)."""


class _MaskCounter(CountingInterpreter):
    """Counts per layer the kept and visible mask positions."""

    MARKER = PredictMaskOp

    def count(self, op, args, outputs) -> tuple[int, int]:
        kept = np.asarray(outputs[0])
        visible = np.ones(kept.shape, bool)
        if op.causal is not None:
            visible &= causal_visible(kept.shape[2], kept.shape[3])
        if op.mask is not None:
            visible &= np.broadcast_to(np.asarray(args[2]) > MASKED_ADDITIVE, kept.shape)
        return int((kept & visible).sum()), int(visible.sum())


@dataclass
class SangerMeasurement(LossMixin):
    config: SangerConfig
    accuracy: float
    dense_accuracy: float
    sparsity: float
    """Fraction of visible attention scores removed, over every layer and input."""
    sample_losses: np.ndarray
    label_metric: bool = False


class SangerEvaluator(SchemeEvaluator):
    """Compiles the model once and measures Sanger settings on the calibration inputs."""

    CONFIG = SangerConfig
    COUNTER = _MaskCounter
    INSERT_PASS = "esact_cc.passes.insert_sanger:InsertSangerPass"

    def _measurement(self, config, scores, counts) -> SangerMeasurement:
        kept, visible = sum(k for k, _ in counts), sum(v for _, v in counts)
        return SangerMeasurement(config, float(np.mean(scores)), self.dense_accuracy,
                                 1.0 - kept / visible if visible else 0.0,
                                 self.dense_scores - scores, self.labels is not None)

    def measure_sanger(self, configs: Sequence[SangerConfig]) -> list[SangerMeasurement]:
        return self.measure(configs)

    def sanger_layers(self) -> list[int]:
        """The layer indices (the `LAYER:` of options) that get a Sanger prediction."""
        return self.marked_layers()


def uniform(threshold: float, bits: int | None = None) -> SangerConfig:
    config = SangerConfig()
    config.options["threshold"] = threshold
    if bits is not None:
        config.options["bits"] = bits
    return config


SangerTuning = SchemeTuning


def tune_sanger(evaluator: SangerEvaluator, budget: float, per_layer: bool = True,
                margin_se: float = 0.0, log: Callable[[str], None] = lambda m: None
                ) -> SchemeTuning:
    def describe(m: SangerMeasurement, within: bool) -> str:
        layers = "".join(f" {i}:{o['threshold']:g}" for i, o in sorted(m.config.layers.items()))
        return (f"  threshold {m.config.options['threshold']:g}{layers}: sparsity "
                f"{m.sparsity:.2%}, loss {m.loss:.3f} points"
                f"{'' if within else ' (over budget)'}")

    def axes(best: SangerMeasurement):
        start = THRESHOLD_GRID.index(best.config.options["threshold"])
        return ((layer, "threshold", THRESHOLD_GRID[start + 1:])
                for layer in evaluator.sanger_layers())

    return search(evaluator.measure_sanger, [uniform(t) for t in THRESHOLD_GRID],
                  lambda best: uniform(best.config.options["threshold"]), axes,
                  budget, per_layer, margin_se, describe, log)
