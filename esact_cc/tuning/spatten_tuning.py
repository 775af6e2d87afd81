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
`HEAD_KEEP_GRID`, while the whole model stays within the budget (one coordinate pass).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from esact_cc.dialects.spatten import SelectOp
from esact_cc.interpreter.reference_interpreter import Interpreter
from esact_cc.ir_queries import main_function
from esact_cc.sparsity.spatten_options import SpattenConfig
from esact_cc.tuning.spls_measurement import SplsEvaluator
from esact_cc.weight_store import WeightStore

TOKEN_KEEP_GRID = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4)
"""Per-layer fractions of the surviving tokens tried (cascade: they compound over layers)."""
HEAD_KEEP_GRID = (1.0, 0.75, 0.5)
"""Per-layer fractions of the surviving heads tried in the per-layer pass."""
TOKEN_KEEP, HEAD_KEEP = "token-keep", "head-keep"
"""The option names as configs hold them ('-' spelling, esact_cc/sparsity/spls_options.py)."""


@dataclass
class _Prepared:
    config: SpattenConfig
    module: ModuleOp
    store: WeightStore


class _KeepCounter(Interpreter):
    """The reference interpreter, counting per layer kept positions, tokens and heads."""

    def __init__(self, store: WeightStore):
        super().__init__(store)
        self.counts: list[tuple[int, int, float, float]] = []

    def run_op(self, op, args):
        outputs = super().run_op(op, args)
        if isinstance(op, SelectOp):
            tokens, heads = np.asarray(outputs[0]) != 0, np.asarray(outputs[1]) != 0
            kept = heads[:, :, None, None] & tokens[:, None, :, None] & tokens[:, None, None, :]
            self.counts.append((int(kept.sum()), kept.size, float(tokens.mean()),
                                float(heads.mean())))
        return outputs


@dataclass
class SpattenMeasurement:
    config: SpattenConfig
    accuracy: float
    dense_accuracy: float
    sparsity: float
    """Fraction of attention (head, query, key) positions removed, over layers and inputs."""
    token_fraction: float
    """Mean fraction of tokens kept, over layers and inputs."""
    head_fraction: float
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
                "accuracy": self.accuracy, "loss_points": self.loss, "sparsity": self.sparsity,
                "token_fraction": self.token_fraction, "head_fraction": self.head_fraction}


class SpattenEvaluator(SplsEvaluator):
    """Compiles the model once and measures SpAtten settings on the calibration inputs."""

    def _prepare(self, config: SpattenConfig | None) -> _Prepared:  # type: ignore[override]
        from esact_cc.dialect_registry import make_context
        from esact_cc.passes.insert_spatten import InsertSpattenPass

        module = self.base.clone()
        store = WeightStore({name: self.base_store[name] for name in self.base_store})
        if config is not None:
            InsertSpattenPass(**config.pass_options()).apply(make_context(), module)
        return _Prepared(config or SpattenConfig(), module, store)

    def _run(self, prepared, index, memo=None, control=None):  # type: ignore[override]
        counter = _KeepCounter(prepared.store)
        outputs = counter.run_function(main_function(prepared.module), self.samples[index])
        return np.asarray(outputs[self.output]), counter.counts

    def measure_spatten(self, configs: Sequence[SpattenConfig]) -> list[SpattenMeasurement]:
        results = []
        for config in configs:
            prepared = self._prepare(config)
            outputs, counts = [], []
            for index in range(len(self.samples)):
                out, layer_counts = self._run(prepared, index)
                outputs.append(out)
                counts.extend(layer_counts)
            scores = self._scores(outputs)
            kept, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
            results.append(SpattenMeasurement(
                config, float(np.mean(scores)), self.dense_accuracy,
                1.0 - kept / total if total else 0.0,
                float(np.mean([c[2] for c in counts])) if counts else 1.0,
                float(np.mean([c[3] for c in counts])) if counts else 1.0,
                self.dense_scores - scores))
        return results

    def spatten_layers(self) -> list[int]:
        """The layer indices (the `LAYER:` of options) SpAtten prunes."""
        prepared = self._prepare(SpattenConfig())
        return [op.attributes["layer"].value.data for op in prepared.module.walk()
                if isinstance(op, SelectOp)]


def uniform(token_keep: float, head_keep: float = 1.0) -> SpattenConfig:
    config = SpattenConfig()
    config.options.update({TOKEN_KEEP: token_keep, HEAD_KEEP: head_keep})
    return config


@dataclass
class SpattenTuning:
    uniform: SpattenMeasurement
    per_layer: SpattenMeasurement | None
    grid: list[SpattenMeasurement]

    @property
    def best(self) -> SpattenMeasurement:
        if self.per_layer is not None and self.per_layer.sparsity > self.uniform.sparsity:
            return self.per_layer
        return self.uniform


def tune_spatten(evaluator: SpattenEvaluator, budget: float, per_layer: bool = True,
                 margin_se: float = 0.0, log: Callable[[str], None] = lambda m: None
                 ) -> SpattenTuning:
    def within(m: SpattenMeasurement) -> bool:
        return m.loss_bound(margin_se) <= budget

    def describe(m: SpattenMeasurement) -> str:
        layers = "".join(f" {i}:{','.join(f'{k}={v:g}' for k, v in o.items())}"
                         for i, o in sorted(m.config.layers.items()))
        return (f"  token_keep {m.config.options[TOKEN_KEEP]:g}{layers}: sparsity "
                f"{m.sparsity:.2%} (tokens {m.token_fraction:.2f}, heads {m.head_fraction:.2f}),"
                f" loss {m.loss:.3f} points{'' if within(m) else ' (over budget)'}")

    grid = evaluator.measure_spatten([uniform(t) for t in TOKEN_KEEP_GRID])
    for m in grid:
        log(describe(m))
    fits = [m for m in grid if within(m)] or grid[:1]
    best = max(fits, key=lambda m: (m.sparsity, m.accuracy))
    if not per_layer:
        return SpattenTuning(best, None, grid)
    current = best
    base = best.config.options[TOKEN_KEEP]
    for layer in evaluator.spatten_layers()[1:]:
        for name, values in ((TOKEN_KEEP, TOKEN_KEEP_GRID), (HEAD_KEEP, HEAD_KEEP_GRID)):
            start = values.index(base) if name == TOKEN_KEEP else 0
            for value in values[start + 1:]:
                trial = uniform(base)
                trial.layers = {i: dict(o) for i, o in current.config.layers.items()}
                trial.layers.setdefault(layer, {})[name] = value
                m = evaluator.measure_spatten([trial])[0]
                log(describe(m))
                if not within(m) or m.sparsity <= current.sparsity:
                    break
                current = m
    return SpattenTuning(best, current if current is not best else None, grid)
