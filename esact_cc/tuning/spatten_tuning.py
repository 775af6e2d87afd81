"""`esact-tune --sparsity spatten`: calibrate SpAtten's keep ratios under an accuracy budget.

The same measurement as SPLS and Sanger (esact_cc/tuning/spls_measurement.py, whose evaluator
this one extends): the model compiled once to INT8 IR, each setting a clone with
`insert-spatten`, run by the reference interpreter on every calibration input; accuracy in
points, loss = dense - SpAtten, a setting within the budget when its mean loss (+ `margin_se`
standard errors) is at most the budget. Computation saved: `sparsity`, the fraction of
attention (head, query, key) positions the token and head masks remove (the QK and PV work),
counted on the interpreter's masks; also the mean kept token and head fractions.

Search: every token_keep of `TOKEN_KEEP_GRID` uniformly (head_keep 1); the sparsest within the
budget is the uniform setting. Per layer, from it (first layer excluded: it keeps everything):
each layer in turn takes the next smaller token_keep, then the next smaller head_keep of
`HEAD_KEEP_GRID`, while the whole model stays within the budget (one coordinate pass); the
evaluator, loss and search are shared with Sanger (esact_cc/tuning/scheme_tuning.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from esact_cc.dialects.spatten import SelectOp
from esact_cc.sparsity.spatten_options import SpattenConfig
from esact_cc.tuning.scheme_tuning import (CountingInterpreter, LossMixin, SchemeEvaluator,
                                           SchemeTuning, search)

TOKEN_KEEP_GRID = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4)
"""Per-layer fractions of the surviving tokens tried (cascade: they compound over layers)."""
HEAD_KEEP_GRID = (1.0, 0.75, 0.5)
"""Per-layer fractions of the surviving heads tried in the per-layer pass."""
TOKEN_KEEP, HEAD_KEEP = "token-keep", "head-keep"
"""The option names as configs hold them ('-' spelling, esact_cc/sparsity/spls_options.py)."""


class _KeepCounter(CountingInterpreter):
    """Counts per layer kept positions, tokens and heads."""

    MARKER = SelectOp

    def count(self, op, args, outputs) -> tuple[int, int, float, float]:
        tokens, heads = np.asarray(outputs[0]) != 0, np.asarray(outputs[1]) != 0
        kept = heads[:, :, None, None] & tokens[:, None, :, None] & tokens[:, None, None, :]
        return int(kept.sum()), kept.size, float(tokens.mean()), float(heads.mean())


@dataclass
class SpattenMeasurement(LossMixin):
    config: SpattenConfig
    accuracy: float
    dense_accuracy: float
    sparsity: float
    """Fraction of attention (head, query, key) positions removed, over layers and inputs."""
    token_fraction: float
    """Mean fraction of tokens kept, over layers and inputs."""
    head_fraction: float
    sample_losses: np.ndarray
    label_metric: bool = False

    def as_dict(self) -> dict:
        return {**super().as_dict(), "token_fraction": self.token_fraction,
                "head_fraction": self.head_fraction}


class SpattenEvaluator(SchemeEvaluator):
    """Compiles the model once and measures SpAtten settings on the calibration inputs."""

    CONFIG = SpattenConfig
    COUNTER = _KeepCounter
    INSERT_PASS = "esact_cc.passes.insert_spatten:InsertSpattenPass"

    def _measurement(self, config, scores, counts) -> SpattenMeasurement:
        kept, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
        return SpattenMeasurement(
            config, float(np.mean(scores)), self.dense_accuracy,
            1.0 - kept / total if total else 0.0,
            float(np.mean([c[2] for c in counts])) if counts else 1.0,
            float(np.mean([c[3] for c in counts])) if counts else 1.0,
            self.dense_scores - scores, self.labels is not None)

    def measure_spatten(self, configs: Sequence[SpattenConfig]) -> list[SpattenMeasurement]:
        return self.measure(configs)

    def spatten_layers(self) -> list[int]:
        """The layer indices (the `LAYER:` of options) SpAtten prunes."""
        return self.marked_layers()


def uniform(token_keep: float, head_keep: float = 1.0) -> SpattenConfig:
    config = SpattenConfig()
    config.options.update({TOKEN_KEEP: token_keep, HEAD_KEEP: head_keep})
    return config


SpattenTuning = SchemeTuning


def tune_spatten(evaluator: SpattenEvaluator, budget: float, per_layer: bool = True,
                 margin_se: float = 0.0, log: Callable[[str], None] = lambda m: None
                 ) -> SchemeTuning:
    def describe(m: SpattenMeasurement, within: bool) -> str:
        layers = "".join(f" {i}:{','.join(f'{k}={v:g}' for k, v in o.items())}"
                         for i, o in sorted(m.config.layers.items()))
        return (f"  token_keep {m.config.options[TOKEN_KEEP]:g}{layers}: sparsity "
                f"{m.sparsity:.2%} (tokens {m.token_fraction:.2f}, heads {m.head_fraction:.2f}),"
                f" loss {m.loss:.3f} points{'' if within else ' (over budget)'}")

    def axes(best: SpattenMeasurement):
        # the first layer keeps everything; head_keep starts from 1 in every layer
        start = TOKEN_KEEP_GRID.index(best.config.options[TOKEN_KEEP])
        for layer in evaluator.spatten_layers()[1:]:
            yield layer, TOKEN_KEEP, TOKEN_KEEP_GRID[start + 1:]
            yield layer, HEAD_KEEP, HEAD_KEEP_GRID[1:]

    return search(evaluator.measure_spatten, [uniform(t) for t in TOKEN_KEEP_GRID],
                  lambda best: uniform(best.config.options[TOKEN_KEEP]), axes,
                  budget, per_layer, margin_se, describe, log)
