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
while the whole model stays within the budget (a coordinate ascent, one pass).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from esact_cc.dialects.sanger import PredictMaskOp
from esact_cc.interpreter.interpret_spls_ops import MASKED_ADDITIVE
from esact_cc.interpreter.reference_interpreter import Interpreter
from esact_cc.ir_queries import main_function
from esact_cc.quantized_kernels import causal_visible
from esact_cc.sparsity.sanger_options import SangerConfig
from esact_cc.tuning.spls_measurement import SplsEvaluator
from esact_cc.weight_store import WeightStore

THRESHOLD_GRID = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
"""Thresholds tried (0 keeps every key of non-zero predicted probability); Sanger's configs use
0.002 and 0.02 (runtime/sanger_kernels.PAPER_THRESHOLDS)."""


@dataclass
class _Prepared:
    config: SangerConfig
    module: ModuleOp
    store: WeightStore


class _MaskCounter(Interpreter):
    """The reference interpreter, counting per layer the kept and visible mask positions."""

    def __init__(self, store: WeightStore):
        super().__init__(store)
        self.counts: list[tuple[int, int]] = []

    def run_op(self, op, args):
        outputs = super().run_op(op, args)
        if isinstance(op, PredictMaskOp):
            kept = np.asarray(outputs[0])
            visible = np.ones(kept.shape, bool)
            if op.causal is not None:
                visible &= causal_visible(kept.shape[2], kept.shape[3])
            if op.mask is not None:
                visible &= np.broadcast_to(np.asarray(args[2]) > MASKED_ADDITIVE, kept.shape)
            self.counts.append((int((kept & visible).sum()), int(visible.sum())))
        return outputs


@dataclass
class SangerMeasurement:
    config: SangerConfig
    accuracy: float
    dense_accuracy: float
    sparsity: float
    """Fraction of visible attention scores removed, over every layer and input."""
    sample_losses: np.ndarray

    @property
    def loss(self) -> float:
        return self.dense_accuracy - self.accuracy

    def loss_bound(self, margin_se: float) -> float:
        n = len(self.sample_losses)
        se = float(np.std(self.sample_losses, ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        return self.loss + margin_se * se

    def as_dict(self) -> dict:
        return {"options": dict(self.config.options),
                "layers": {str(i): o for i, o in sorted(self.config.layers.items())},
                "accuracy": self.accuracy, "loss_points": self.loss, "sparsity": self.sparsity}


class SangerEvaluator(SplsEvaluator):
    """Compiles the model once and measures Sanger settings on the calibration inputs."""

    def _prepare(self, config: SangerConfig | None) -> _Prepared:  # type: ignore[override]
        from esact_cc.dialect_registry import make_context
        from esact_cc.passes.insert_sanger import InsertSangerPass

        module = self.base.clone()
        store = WeightStore({name: self.base_store[name] for name in self.base_store})
        if config is not None:
            InsertSangerPass(**config.pass_options()).apply(make_context(), module)
        return _Prepared(config or SangerConfig(), module, store)

    def _run(self, prepared, index, memo=None, control=None):  # type: ignore[override]
        counter = _MaskCounter(prepared.store)
        outputs = counter.run_function(main_function(prepared.module), self.samples[index])
        return np.asarray(outputs[self.output]), counter.counts

    def measure_sanger(self, configs: Sequence[SangerConfig]) -> list[SangerMeasurement]:
        results = []
        for config in configs:
            prepared = self._prepare(config)
            outputs, kept, visible = [], 0, 0
            for index in range(len(self.samples)):
                out, counts = self._run(prepared, index)
                outputs.append(out)
                kept += sum(k for k, _ in counts)
                visible += sum(v for _, v in counts)
            scores = self._scores(outputs)
            results.append(SangerMeasurement(config, float(np.mean(scores)), self.dense_accuracy,
                                             1.0 - kept / visible if visible else 0.0,
                                             self.dense_scores - scores))
        return results

    def sanger_layers(self) -> list[int]:
        """The layer indices (the `LAYER:` of options) that get a Sanger prediction."""
        prepared = self._prepare(SangerConfig())
        return [op.attributes["layer"].value.data for op in prepared.module.walk()
                if isinstance(op, PredictMaskOp)]


def uniform(threshold: float, bits: int | None = None) -> SangerConfig:
    config = SangerConfig()
    config.options["threshold"] = threshold
    if bits is not None:
        config.options["bits"] = bits
    return config


@dataclass
class SangerTuning:
    uniform: SangerMeasurement
    per_layer: SangerMeasurement | None
    grid: list[SangerMeasurement]

    @property
    def best(self) -> SangerMeasurement:
        if self.per_layer is not None and self.per_layer.sparsity > self.uniform.sparsity:
            return self.per_layer
        return self.uniform


def tune_sanger(evaluator: SangerEvaluator, budget: float, per_layer: bool = True,
                margin_se: float = 0.0, log: Callable[[str], None] = lambda m: None
                ) -> SangerTuning:
    def within(m: SangerMeasurement) -> bool:
        return m.loss_bound(margin_se) <= budget

    def describe(m: SangerMeasurement) -> str:
        layers = "".join(f" {i}:{o['threshold']:g}" for i, o in sorted(m.config.layers.items()))
        return (f"  threshold {m.config.options['threshold']:g}{layers}: sparsity "
                f"{m.sparsity:.2%}, loss {m.loss:.3f} points"
                f"{'' if within(m) else ' (over budget)'}")

    grid = evaluator.measure_sanger([uniform(t) for t in THRESHOLD_GRID])
    for m in grid:
        log(describe(m))
    fits = [m for m in grid if within(m)] or grid[:1]
    best = max(fits, key=lambda m: (m.sparsity, m.accuracy))
    if not per_layer:
        return SangerTuning(best, None, grid)
    current = best
    start = THRESHOLD_GRID.index(best.config.options["threshold"])
    for layer in evaluator.sanger_layers():
        for threshold in THRESHOLD_GRID[start + 1:]:
            trial = uniform(best.config.options["threshold"])
            trial.layers = {i: dict(o) for i, o in current.config.layers.items()}
            trial.layers[layer] = {"threshold": threshold}
            m = evaluator.measure_sanger([trial])[0]
            log(describe(m))
            if not within(m) or m.sparsity <= current.sparsity:
                break
            current = m
    return SangerTuning(best, current if current is not best else None, grid)
