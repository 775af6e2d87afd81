"""Measuring SPLS settings on calibration inputs: accuracy, loss and computation per setting.

`SplsEvaluator` imports and compiles the model ONCE to the chosen IR level (`quantized`, the
INT8 program the hardware runs, by default; or fp32 `transformer`); each setting is a clone of
that module with `insert-spls` applied, run by the reference interpreter on every calibration
sample (one by one: exported models fix the batch dim) through the shared memo of
spls_memo_interpreter.py. `PooledEvaluator` measures several evaluators as one input set.

Accuracy: task accuracy (argmax of the output vs `labels`) when labels exist, else mean cosine
of the output to the dense output; both in points (x100), loss = dense - SPLS. Computation:
`spls_accounting` (executed MACs + prediction at `mac_per_product` MACs per HLog product over
dense MACs, real tokens only): 0.1 (docs/design.md section 6) unless set from the hardware
model (prediction_price.py).
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from esact_cc.ir_queries import io_names, main_function
from esact_cc.passes.insert_spls import DESIGN_REFERENCE
from esact_cc.runtime.errors import CompileError
from esact_cc.sparsity.spls_options import SplsConfig
from esact_cc.tuning.loss_bound import estimated_upper_bound, loss_se
from esact_cc.tuning.margin_loss import MarginPrice, MarginReference
from esact_cc.tuning.spls_accounting import (
    PREDICTION_MAC_PER_PRODUCT,
    DenseLayer,
    LayerWork,
    SplsLayer,
    WorkSummary,
    attention_layer_indices,
    count_dense_layer,
    count_layer,
    find_dense_layers,
    find_spls_layers,
    summarize,
)
from esact_cc.tuning.spls_calibration_inputs import CalibrationData
from esact_cc.tuning.spls_memo_interpreter import RandomReuse, TuningInterpreter
from esact_cc.weight_store import WeightStore

IR_LEVELS = ("quantized", "transformer")
SEARCH_ORIGIN: dict[str, Any] = {name.replace("_", "-"): value
                                 for name, value in asdict(DESIGN_REFERENCE).items()}
"""The options the search starts from and a grid point leaves unset: docs/design.md section 6's
reference setting (insert-spls's own defaults are this search's result on the digits ViT)."""
REUSE_OFF = 2.0
"""A threshold above every similarity score: no row is reused."""


def prediction_off_layers(config: SplsConfig, layers: Sequence[int]) -> list[int]:
    """Those of `layers` whose prediction `config` turns off (uniformly or by override)."""
    uniform = config.options.get("prediction", "on")
    return [i for i in layers if config.layers.get(i, {}).get("prediction", uniform) == "off"]


def uniform_config(**options: Any) -> SplsConfig:
    """A uniform setting: `options` (snake_case or dashed names) over `SEARCH_ORIGIN`."""
    merged = dict(SEARCH_ORIGIN)
    merged.update({k.replace("_", "-"): v for k, v in options.items()})
    return SplsConfig(options=merged)


@dataclass
class Measurement:
    """One setting measured on a set of inputs."""

    config: SplsConfig
    accuracy: float
    """Points: task accuracy x100, or mean cosine to dense x100."""
    dense_accuracy: float
    work: WorkSummary
    control_accuracy: float | None = None
    sample_losses: np.ndarray | None = None
    """Per input: dense points - SPLS points (their mean is `loss`)."""
    label_metric: bool = False
    """Points are task accuracy against labels (per-input losses 0 / +-100), not cosine."""
    margin_price: MarginPrice | None = None
    """Labels: the margin erosion priced as flips (margin_loss.py)."""

    @property
    def loss(self) -> float:
        return self.dense_accuracy - self.accuracy

    @property
    def loss_se(self) -> float:
        """Standard error of `loss` as an estimate of the loss on new inputs of the same kind
        (loss_bound.py: Agresti-Min adjusted for labels, else the sample one)."""
        return loss_se(self.sample_losses, self.label_metric)

    def loss_bound(self, margin_se: float, estimate: str = "flips") -> float:
        """The loss the search holds to the budget: mean + `margin_se` standard errors of the
        per-input losses `estimate` names (loss_bound.py)."""
        return estimated_upper_bound(self.loss, self.sample_losses, self.margin_price,
                                     self.label_metric, margin_se, estimate)

    @property
    def margin_loss(self) -> float | None:
        """The margin-priced loss, points (labels only)."""
        return None if self.margin_price is None else self.margin_price.mean

    @property
    def reduction(self) -> float:
        return self.work.reduction

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "options": dict(sorted(self.config.options.items())),
            "layers": {str(i): o for i, o in sorted(self.config.layers.items())},
            "accuracy": self.accuracy, "dense_accuracy": self.dense_accuracy,
            "loss_points": self.loss, "loss_se_points": self.loss_se,
            **self.work.as_dict()}
        if self.margin_price is not None:
            out["margin_loss_points"] = self.margin_price.mean
            out["margin_loss_se_points"] = self.margin_price.se
        if self.control_accuracy is not None:
            out["control_accuracy"] = self.control_accuracy
            out["control_loss_points"] = self.dense_accuracy - self.control_accuracy
        return out


@dataclass
class _Prepared:
    config: SplsConfig
    module: ModuleOp
    store: WeightStore
    layers: list[SplsLayer]
    layer_of: dict[int, int]
    dense_layers: list[DenseLayer] = field(default_factory=list)
    """Layers the setting leaves without prediction (`prediction=off`)."""
    signatures: dict[Operation, str] = field(default_factory=dict)


class SplsEvaluator:
    """Compiles a model once to `ir` and measures SPLS settings on a fixed set of inputs."""

    def __init__(self, model: str | os.PathLike[str], data: CalibrationData,
                 output: str | None = None, ir: str = "quantized",
                 quantize_samples: Sequence[Mapping[str, np.ndarray]] | None = None,
                 log: Callable[[str], None] | None = None):
        from esact_cc.pipeline import CompileOptions, compile_model

        if ir not in IR_LEVELS:
            raise CompileError(f"unknown IR level '{ir}' (levels: {', '.join(IR_LEVELS)})")
        self.model = str(model)
        self.ir = ir
        self.mac_per_product = PREDICTION_MAC_PER_PRODUCT
        """The prediction's price per HLog product, in MACs (prediction_price.py)."""
        self.log = log or (lambda message: None)
        self.labels = data.labels
        self.samples = data.samples
        shapes = {name: tuple(value.shape) for name, value in data.samples[0].items()}
        extra: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="esact-tune-") as tmp:
            if ir == "quantized":
                quant = list(quantize_samples if quantize_samples is not None else data.samples)
                quant_path = Path(tmp) / "quantize_calibration.npz"
                np.savez(quant_path, **{name: np.stack([s[name] for s in quant])
                                        for name in shapes})
                extra["calibration_data"] = str(quant_path)
            self.base, self.base_store = compile_model(
                self.model, ir, CompileOptions(input_shapes=shapes, extra=extra))
        names = io_names(main_function(self.base), results=True)
        if output is None:
            output = names[-1]
        elif output not in names:
            raise CompileError(f"model has no output '{output}' (outputs: {', '.join(names)})")
        self.output = output
        dense = self._prepare(None)
        self.dense_outputs = [self._run(dense, i, {}, None)[0] for i in range(len(self.samples))]
        self.dense_scores = self._scores(self.dense_outputs)
        self.dense_accuracy = float(np.mean(self.dense_scores))
        self.margins = (None if self.labels is None else
                        MarginReference.of(np.stack(self.dense_outputs), self.labels))

    # --- preparing settings --------------------------------------------------------------
    def _prepare(self, config: SplsConfig | None) -> _Prepared:
        from esact_cc.dialect_registry import make_context
        from esact_cc.pipeline import make_pass

        module = self.base.clone()
        store = WeightStore({name: self.base_store[name] for name in self.base_store})
        indices = attention_layer_indices(module)
        off = prediction_off_layers(config, indices) if config is not None else []
        if config is not None and len(off) < len(indices):  # else the module is the dense one
            make_pass("insert-spls", store, **config.pass_options()).apply(make_context(), module)
        layers = find_spls_layers(module)
        return _Prepared(config or SplsConfig(), module, store, layers,
                         {id(layer.similarity): layer.index for layer in layers},
                         find_dense_layers(module, off) if off else [])

    def _run(self, prepared: _Prepared, index: int, memo: dict[int, list[np.ndarray]],
             control: RandomReuse | None) -> tuple[np.ndarray, list[LayerWork]]:
        interpreter = TuningInterpreter(prepared.store, memo, prepared.signatures,
                                        prepared.layer_of, control)
        outputs = interpreter.run_function(main_function(prepared.module), self.samples[index])
        work = []
        for layer in prepared.layers:
            pam = interpreter.records[id(layer.predict)][0]
            spa = interpreter.records[id(layer.topk)][0]
            reuse, keys = interpreter.records[id(layer.similarity)]
            q, k = interpreter.records[id(layer.attention)]
            work.append((layer.index, count_layer(layer, pam, spa, reuse, keys, q, k)))
        # A layer without prediction sees the padding the predicted ones see (with none
        # predicted, nothing is reduced: its work is left at 0, the reduction 0 either way).
        rows, pairs = (work[0][1].rows, work[0][1].pairs_per_head) if work else (0, 0.0)
        work += [(d.index, count_dense_layer(d, rows, pairs)) for d in prepared.dense_layers]
        return np.asarray(outputs[self.output]), [w for _, w in sorted(work, key=lambda t: t[0])]

    def _scores(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        """Points per input: 100 x (argmax == label), or 100 x cosine to the dense output."""
        if self.labels is not None:
            predicted = np.array([int(np.argmax(o.reshape(-1))) for o in outputs])
            return 100.0 * (predicted == self.labels).astype(np.float64)
        cosines = []
        for out, ref in zip(outputs, self.dense_outputs):
            a, b = out.reshape(-1).astype(np.float64), ref.reshape(-1).astype(np.float64)
            norm = float(np.linalg.norm(a) * np.linalg.norm(b))
            cosines.append(float(a @ b) / norm if norm > 0 else float(np.array_equal(a, b)))
        return 100.0 * np.asarray(cosines)

    def _accuracy(self, outputs: Sequence[np.ndarray]) -> float:
        return float(np.mean(self._scores(outputs)))

    @property
    def sample_count(self) -> int:
        return len(self.samples)

    def subset(self, indices: Sequence[int]) -> SplsEvaluator:
        """The same program and dense reference measured on the samples at `indices` only
        (esact-tune's held-apart margin check, screen_margin_choice.py)."""
        part = copy.copy(self)
        rows = list(indices)
        part.samples = [self.samples[i] for i in rows]
        part.labels = None if self.labels is None else np.asarray(self.labels)[rows]
        part.dense_outputs = [self.dense_outputs[i] for i in rows]
        part.dense_scores = np.asarray(self.dense_scores)[rows]
        part.dense_accuracy = float(np.mean(part.dense_scores))
        part.margins = (None if part.labels is None else
                        MarginReference.of(np.stack(part.dense_outputs), part.labels))
        return part

    def reuse_off_gap(self, count: int = 4) -> float:
        """Max |SPLS - dense| of the output with reuse off and dense attention on the first
        `count` samples: 0 when the SPLS program is exact (docs/design.md section 6); anything
        else means the SPLS lowering of this IR changes values by itself."""
        prepared = self._prepare(uniform_config(threshold=REUSE_OFF, attention="dense"))
        gap = 0.0
        for index in range(min(count, len(self.samples))):
            out, _ = self._run(prepared, index, {}, None)
            gap = max(gap, float(np.max(np.abs(out.astype(np.float64)
                                                - self.dense_outputs[index]))))
        return gap

    def layer_indices(self, config: SplsConfig) -> list[int]:
        """The SPLS layers' indices (stamped by lift-transformer; `LAYER:` option prefixes)."""
        return [layer.index for layer in self._prepare(config).layers]

    def measure(self, configs: Sequence[SplsConfig], control: bool = False,
                seed: int = 0) -> list[Measurement]:
        """Measure every setting on every sample (samples outer, so the memo is shared)."""
        prepared = [self._prepare(c) for c in configs]
        outputs: list[list[np.ndarray]] = [[] for _ in prepared]
        control_outputs: list[list[np.ndarray]] = [[] for _ in prepared]
        works: list[list[list[LayerWork]]] = [[] for _ in prepared]
        for index in range(len(self.samples)):
            memo: dict[int, list[np.ndarray]] = {}
            for j, p in enumerate(prepared):
                out, work = self._run(p, index, memo, None)
                outputs[j].append(out)
                works[j].append(work)
                if control:
                    counts = {id(layer.similarity): w.reused_rows
                              for layer, w in zip(p.layers, work)}
                    out_c, _ = self._run(p, index, memo, RandomReuse(counts, (seed, index)))
                    control_outputs[j].append(out_c)
        measurements = []
        for j, p in enumerate(prepared):
            scores = self._scores(outputs[j])
            measurements.append(Measurement(
                p.config, float(np.mean(scores)), self.dense_accuracy,
                summarize(works[j], self.mac_per_product),
                self._accuracy(control_outputs[j]) if control else None,
                self.dense_scores - scores, self.labels is not None,
                self.margin_price(outputs[j])))
        return measurements

    def margin_price(self, outputs: Sequence[np.ndarray]) -> MarginPrice | None:
        """The dense top class's margins eroded, priced as flips (labels only)."""
        if self.margins is None:
            return None
        return self.margins.price(self.margins.erosions(np.stack(outputs)))


class PooledEvaluator:
    """Several evaluators (e.g. one per padded sequence length) measured as one input set:
    accuracies weighted by sample count, work summed. Same interface as `SplsEvaluator`."""

    def __init__(self, parts: Sequence[SplsEvaluator]):
        if not parts:
            raise CompileError("no inputs to measure")
        self.parts = list(parts)
        self.labels = parts[0].labels
        self.dense_accuracy = self._weighted([p.dense_accuracy for p in parts])

    @property
    def sample_count(self) -> int:
        return sum(p.sample_count for p in self.parts)

    def reuse_off_gap(self, count: int = 4) -> float:
        return max(p.reuse_off_gap(count) for p in self.parts)

    def _weighted(self, values: Sequence[float]) -> float:
        total = sum(p.sample_count for p in self.parts)
        return sum(v * p.sample_count for v, p in zip(values, self.parts)) / total

    def layer_indices(self, config: SplsConfig) -> list[int]:
        return self.parts[0].layer_indices(config)

    def subset(self, indices: Sequence[int]) -> PooledEvaluator:
        """The inputs at `indices` of the pooled order (the parts' inputs one after another)."""
        parts, start = [], 0
        for p in self.parts:
            own = [i - start for i in indices if start <= i < start + p.sample_count]
            if own:
                parts.append(p.subset(own))
            start += p.sample_count
        return PooledEvaluator(parts)

    def measure(self, configs: Sequence[SplsConfig], control: bool = False,
                seed: int = 0) -> list[Measurement]:
        per_part = [p.measure(configs, control, seed) for p in self.parts]
        pooled = []
        for j, config in enumerate(configs):
            ms = [part[j] for part in per_part]
            control_accuracy = (self._weighted([m.control_accuracy or 0.0 for m in ms])
                                if control else None)
            pooled.append(Measurement(config, self._weighted([m.accuracy for m in ms]),
                                      self.dense_accuracy,
                                      summarize((m.work.layers for m in ms),
                                                self.parts[0].mac_per_product),
                                      control_accuracy,
                                      np.concatenate([m.sample_losses for m in ms
                                                      if m.sample_losses is not None]),
                                      self.labels is not None, _pooled_margin_price(ms)))
        return pooled


def _pooled_margin_price(parts: Sequence[Measurement]) -> MarginPrice | None:
    """Each part's inputs priced against that part's own dense margins (a new input of one
    sequence length draws its margin from those of its length)."""
    if any(m.margin_price is None for m in parts):
        return None
    return MarginPrice.pooled([m.margin_price for m in parts])


Evaluator = SplsEvaluator | PooledEvaluator
