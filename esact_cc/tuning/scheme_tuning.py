"""What the Sanger and SpAtten tunings share (esact_cc/tuning/sanger_tuning.py,
spatten_tuning.py): the evaluator that compiles a setting with the scheme's insert pass and runs
it under a mask-counting interpreter, the measurement's loss, and the search (a uniform grid,
then one coordinate pass per layer while the whole model stays within the budget). Each scheme
keeps its own grid, counting and measurement fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from esact_cc.interpreter.reference_interpreter import Interpreter
from esact_cc.ir_queries import main_function
from esact_cc.sparsity.registry import TuningHook, load_attribute
from esact_cc.sparsity.spls_options import SplsConfig
from esact_cc.tuning.loss_bound import loss_se, loss_upper_bound, z_score
from esact_cc.tuning.spls_measurement import SplsEvaluator
from esact_cc.weight_store import WeightStore


@dataclass
class Prepared:
    config: SplsConfig
    module: ModuleOp
    store: WeightStore


class CountingInterpreter(Interpreter):
    """The reference interpreter, appending `count(op, args, outputs)` for each `MARKER` op."""

    MARKER: type

    def __init__(self, store: WeightStore):
        super().__init__(store)
        self.counts: list[tuple] = []

    def run_op(self, op, args):
        outputs = super().run_op(op, args)
        if isinstance(op, self.MARKER):
            self.counts.append(self.count(op, args, outputs))
        return outputs

    def count(self, op, args, outputs) -> tuple:
        raise NotImplementedError


class LossMixin:
    """Loss in points and its bound (loss_bound.py) for a measurement dataclass with
    `accuracy`, `dense_accuracy`, `sample_losses`, `label_metric`, `config` and `sparsity`."""

    accuracy: float
    dense_accuracy: float
    sample_losses: np.ndarray
    label_metric: bool
    config: SplsConfig
    sparsity: float

    @property
    def loss(self) -> float:
        return self.dense_accuracy - self.accuracy

    @property
    def loss_se(self) -> float:
        return loss_se(self.sample_losses, self.label_metric)

    def loss_bound(self, margin_se: float) -> float:
        return loss_upper_bound(self.loss, self.sample_losses, self.label_metric, margin_se)

    def as_dict(self) -> dict:
        return {"options": dict(self.config.options),
                "layers": {str(i): o for i, o in sorted(self.config.layers.items())},
                "accuracy": self.accuracy, "loss_points": self.loss,
                "loss_se_points": self.loss_se, "sparsity": self.sparsity}


class SchemeEvaluator(SplsEvaluator):
    """Compiles the model once and measures a scheme's settings on the calibration inputs.
    A subclass names its config type, counting interpreter and insert pass ("module:Class",
    imported on use like the config's options), and turns one setting's counts into its
    measurement."""

    CONFIG: type[SplsConfig]
    COUNTER: type[CountingInterpreter]
    INSERT_PASS: str

    def _measurement(self, config: SplsConfig, scores: np.ndarray, counts: list[tuple]) -> Any:
        raise NotImplementedError

    def measure(self, configs: Sequence[SplsConfig]) -> list:
        return [self._measurement(config, *self._scores_and_counts(config))
                for config in configs]

    def _prepare(self, config: SplsConfig | None) -> Prepared:  # type: ignore[override]
        from esact_cc.dialect_registry import make_context

        module = self.base.clone()
        store = WeightStore({name: self.base_store[name] for name in self.base_store})
        if config is not None:
            insert = load_attribute(self.INSERT_PASS)
            insert(**config.pass_options()).apply(make_context(), module)
        return Prepared(config or self.CONFIG(), module, store)

    def _run(self, prepared, index, memo=None, control=None):  # type: ignore[override]
        counter = self.COUNTER(prepared.store)
        outputs = counter.run_function(main_function(prepared.module), self.samples[index])
        return np.asarray(outputs[self.output]), counter.counts

    def _scores_and_counts(self, config: SplsConfig) -> tuple[np.ndarray, list[tuple]]:
        """The per-input scores of `config` and every layer's counts over all inputs."""
        prepared = self._prepare(config)
        outputs, counts = [], []
        for index in range(len(self.samples)):
            out, layer_counts = self._run(prepared, index)
            outputs.append(out)
            counts.extend(layer_counts)
        return self._scores(outputs), counts

    def marked_layers(self) -> list[int]:
        """The layer indices (the `LAYER:` of options) of the counter's marker ops."""
        prepared = self._prepare(self.CONFIG())
        return [op.attributes["layer"].value.data for op in prepared.module.walk()
                if isinstance(op, self.COUNTER.MARKER)]


@dataclass
class SchemeTuning:
    uniform: Any
    per_layer: Any | None
    grid: list

    @property
    def best(self):
        if self.per_layer is not None and self.per_layer.sparsity > self.uniform.sparsity:
            return self.per_layer
        return self.uniform


Axis = tuple[int, str, Sequence[float]]
"""One coordinate of the per-layer pass: the layer, the option and the values tried in order."""


def search(measure: Callable[[Sequence[SplsConfig]], list], grid: Sequence[SplsConfig],
           uniform_of: Callable[[Any], SplsConfig], axes: Callable[[Any], Iterable[Axis]],
           budget: float, per_layer: bool, margin_se: float,
           describe: Callable[[Any, bool], str], log: Callable[[str], None]) -> SchemeTuning:
    """The sparsest grid setting within the budget, then, from it, each axis takes its next
    value while the whole model stays within the budget and gets sparser (one pass).
    `uniform_of(best)` is the uniform part every per-layer trial starts from."""
    def within(m) -> bool:
        return m.loss_bound(margin_se) <= budget

    measured = measure(grid)
    for m in measured:
        log(describe(m, within(m)))
    fits = [m for m in measured if within(m)] or measured[:1]
    best = max(fits, key=lambda m: (m.sparsity, m.accuracy))
    if not per_layer:
        return SchemeTuning(best, None, measured)
    current = best
    for layer, name, values in axes(best):
        for value in values:
            trial = uniform_of(best)
            trial.layers = {i: dict(o) for i, o in current.config.layers.items()}
            trial.layers.setdefault(layer, {})[name] = value
            m = measure([trial])[0]
            log(describe(m, within(m)))
            if not within(m) or m.sparsity <= current.sparsity:
                break
            current = m
    return SchemeTuning(best, current if current is not best else None, measured)


def tune_registered_scheme(hook: TuningHook, args, data, log: Callable[[str], None]) -> None:
    """`esact-tune --sparsity NAME` for a scheme registered with a tuning hook: measure with its
    evaluator, search, and write the chosen setting's config file (`args.output_file`) with the
    run's provenance and the measured grid in its `info`."""
    from pathlib import Path

    from esact_cc.runtime.cli.conventions import write_text_output

    evaluator = load_attribute(hook.evaluator)(args.model, data, args.output, args.ir)
    result = load_attribute(hook.search)(evaluator, args.budget, not args.uniform_only,
                                         z_score(args.confidence), log)
    best = result.best
    best.config.info = {
        "model": Path(args.model).name, "calibration_data": Path(args.calibration_data).name,
        "calibration_sha256": data.sha256, "samples": len(data.samples),
        "metric": "accuracy" if data.labels is not None else "cosine_to_dense",
        "output": evaluator.output, "ir": args.ir, "budget_points": args.budget,
        "confidence": args.confidence, "dense_accuracy": evaluator.dense_accuracy,
        "chosen": best.as_dict(),
        "grid": [m.as_dict() for m in result.grid]}
    write_text_output(args.output_file, best.config.to_json())
    log(f"esact-tune: {args.sparsity} {'per-layer' if best is result.per_layer else 'uniform'} "
        f"setting: sparsity {best.sparsity:.2%} at {best.loss:.3f} points lost on the "
        f"calibration set -> {args.output_file}")
