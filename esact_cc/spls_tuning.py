"""SPLS calibration: choose `insert-spls` options per model and per layer under an accuracy budget.

The logic behind `esact-tune`. Everything here sees the CALIBRATION inputs only; held-out
reporting is the caller's (bench/spls_tradeoff.py).

Measuring a setting (`SplsEvaluator.measure`): the model is imported and compiled ONCE to the
chosen IR level (`quantized`, the INT8 program the hardware runs, by default; or fp32
`transformer`); each setting is a clone of that module with `insert-spls` applied, run by the
reference interpreter on every calibration sample. Samples run one by one (exported models fix
the batch dim), but all settings of a search step run on the same sample back to back through
one memo: an op whose operands hold the same values as in an earlier run (same op, same
attributes, same input fingerprints) is not recomputed. Reuse maps and SPA masks are
fingerprinted by content, so two settings that take the same decisions in layer l share all
the work up to layer l + 1, and a per-layer search step that changes layer l recomputes only
layers l and later.

Accuracy: task accuracy (argmax of the output vs `labels`) when labels exist, else mean cosine
of the output to the dense output; both in points (x100), loss = dense - SPLS. Computation:
`spls_accounting` (executed MACs + prediction at 0.1 MAC per HLog product over dense MACs, real
tokens only).

Search (`tune`):
1. uniform: the grid `UNIFORM_GRID` of (similarity, attention, hlog-bits, thresholds) at the
   default k-ratio and window; then one coordinate round around the best
   setting within budget over `REFINE_VALUES` (hlog-bits, window, k-ratio where it matters),
   then the finer thresholds crossed with first-reference 0 and 1, keeping a change only if
   it is within budget (mean calibration loss) and reduces more;
2. per layer (deeper layers reuse more), as `SearchOptions` says (defaults below):
   - start: the best uniform setting with first-reference raised to at least
     `layer_first_reference` (default 1: [CLS] / row 0 is never a representative; on MiniLM
     the calibration sentences never show a content row reusing [CLS], but one held-out
     sentence in 96 lost 67 points to it); if that start is over the margin below, the best
     uniform setting of the history within it; else reuse off in every layer;
   - margin: a per-layer setting must keep mean loss + `margin_se` standard errors of it
     (sample std of the per-input losses / sqrt(inputs)) within the budget (default 1: an
     upper one-sided 84% bound). Many per-layer candidates are compared on one calibration
     set, so the one that just fits is, more often than not, one whose calibration loss is
     low by luck: without a margin the per-layer MiniLM setting lost 0.9 points on the
     calibration sentences and 1.1-1.9 on held-out ones;
   - strategy `layer_search`: `efficient` (default) takes, each round, over all layers, the
     move (one layer's lower thresholds / larger windows, `layer_steps` nearest, 0 = all) with the
     most reduction gained per point of budget spent; `largest` visits layers L-1..0 and
     takes the value that reduces most within budget, `LAYER_SWEEPS` sweeps (the search of
     before, which spends the budget on the first layer it visits);
   - options varied per layer (`layer_options`): `threshold` (default; `REUSE_OFF` turns a
     layer's reuse off) and/or `window` (`LAYER_WINDOWS`).
   The per-layer setting is written when it reduces more than the uniform one on the
   calibration set (`TuningResult.best`); with margin 0, first-reference floor 0 and
   `largest` the per-layer phase is the search of before.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue

from esact_cc.calibration import read_calibration_arrays
from esact_cc.dialects import spls
from esact_cc.passes.insert_spls import DESIGN_REFERENCE
from esact_cc.reference_interpreter import Interpreter, io_names, main_function
from esact_cc.runtime.errors import CompileError
from esact_cc.spls_accounting import (
    LayerWork,
    SplsLayer,
    WorkSummary,
    count_layer,
    find_spls_layers,
    is_masked_attention,
    summarize,
)
from esact_cc.spls_options import SplsConfig
from esact_cc.typed_options import unknown_name
from esact_cc.weight_store import WeightStore, attach

IR_LEVELS = ("quantized", "transformer")
SEARCH_ORIGIN: dict[str, Any] = {name.replace("_", "-"): value
                                 for name, value in asdict(DESIGN_REFERENCE).items()}
"""The options the search starts from and a grid point leaves unset: DESIGN.md section 6's
reference setting (insert-spls's own defaults are this search's result on the digits ViT)."""
REUSE_OFF = 2.0
"""A threshold above every similarity score: no row is reused."""

UNIFORM_GRID: tuple[tuple[str, str, int, tuple[float, ...]], ...] = (
    # (similarity, attention, hlog-bits, thresholds); text needs 6 bits (DESIGN.md section 6)
    ("cosprob", "dense", 4, (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998)),
    ("cosprob", "topk", 4, (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998)),
    ("cosprob", "dense", 6, (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998)),
    ("cosprob", "topk", 6, (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998)),
    ("overlap", "dense", 4, (0.5, 0.75, 1.0)),
    ("overlap", "topk", 4, (0.5, 0.75, 1.0)),
)
REFINE_VALUES: dict[str, tuple[Any, ...]] = {
    "hlog-bits": (3, 4, 6),
    "window": (2, 4, 8),
    "k-ratio": (0.1, 0.2, 0.3, 0.5),
}
FINER_THRESHOLDS: dict[str, tuple[float, ...]] = {
    "cosprob": (0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.993, 0.995,
                0.997, 0.998, 0.999),
    "overlap": (0.4, 0.5, 0.6, 0.75, 0.85, 1.0),
}
LAYER_THRESHOLDS: dict[str, tuple[float, ...]] = {
    "cosprob": (0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999,
                REUSE_OFF),
    "overlap": (0.3, 0.4, 0.5, 0.6, 0.75, 0.85, 1.0, REUSE_OFF),
}
LAYER_WINDOWS: tuple[int, ...] = (2, 4, 8, 16)
PER_LAYER_OPTIONS = ("threshold", "window")
"""Options the per-layer search can vary (`--layer-options`)."""
DEFAULT_LAYER_OPTIONS: tuple[str, ...] = ("threshold",)
FIRST_REFERENCE_VALUES: tuple[int, ...] = (0, 1)
"""`first-reference` values crossed with the finer thresholds in the uniform search."""
LAYER_SWEEPS = 2
DEFAULT_LAYER_STEPS = 0
"""`efficient` per-layer search: values tried per layer and option in each round (0: all)."""
DEFAULT_LAYER_SEARCH = "efficient"
DEFAULT_MARGIN_SE = 1.0
DEFAULT_LAYER_FIRST_REFERENCE = 1
BUDGET_SLACK = 1e-9


# ----------------------------------------------------------------------------- inputs


@dataclass
class CalibrationData:
    """Samples (model input name -> array with the batch dim), optional integer labels."""

    samples: list[dict[str, np.ndarray]]
    labels: np.ndarray | None
    source: str
    sha256: str = ""


def model_inputs(model: str | os.PathLike[str]) -> dict[str, int]:
    """Graph inputs (not initializers) of an ONNX file -> rank."""
    from esact_cc.onnx_frontend import load_model

    proto = load_model(model)[0]
    initializers = {t.name for t in proto.graph.initializer}
    return {i.name: len(i.type.tensor_type.shape.dim) for i in proto.graph.input
            if i.name not in initializers}


def load_calibration_data(path: str | os.PathLike[str], inputs: Mapping[str, int],
                          labels_key: str | None, input_keys: Mapping[str, str] | None = None,
                          limit: int = 0) -> CalibrationData:
    """Read `path` (.npz, samples along axis 0): one array per model input, found by input name,
    by `input_keys` (input -> array name), or, for a one-input model, the only array that is not
    the labels; arrays may omit the model's leading batch dim of 1."""
    path = Path(path)
    arrays, digest = read_calibration_arrays(path)
    where = f"calibration data '{path}'"
    keys = dict(input_keys or {})
    unknown = sorted(set(keys) - set(inputs))
    if unknown:
        raise CompileError(f"--input names {', '.join(unknown)}, which the model does not have "
                           f"(inputs: {', '.join(inputs)})")
    if labels_key is not None and labels_key not in arrays:
        raise CompileError(f"{where} has no labels array '{labels_key}' "
                           f"(arrays: {', '.join(sorted(arrays))})")
    absent = sorted(f"{name}={array}" for name, array in keys.items() if array not in arrays)
    if absent:  # a mapping the user gave is never replaced by a guess
        raise CompileError(f"--input {', '.join(absent)}: {where} has no such array "
                           f"(arrays: {', '.join(sorted(arrays))})")
    for name in inputs:
        keys.setdefault(name, name)
    missing = [n for n in inputs if keys[n] not in arrays]
    if missing:
        candidates = sorted(set(arrays) - {labels_key} - set(keys.values()))
        if len(inputs) == 1 and len(candidates) == 1:
            keys[missing[0]] = candidates[0]
        else:
            raise CompileError(f"{where} lacks model input(s) {', '.join(missing)} (arrays: "
                               f"{', '.join(sorted(arrays))}); map one with --input NAME=ARRAY")
    count = None
    per_input: dict[str, np.ndarray] = {}
    for name, rank in inputs.items():
        data = arrays[keys[name]]
        if data.ndim == rank:  # samples without the model's batch dim (of 1)
            data = data[:, None]
        elif data.ndim != rank + 1:
            raise CompileError(f"{where}: array '{keys[name]}' for input '{name}' has rank "
                               f"{data.ndim}, expected {rank + 1} ([samples, ...input shape])")
        if count is not None and data.shape[0] != count:
            raise CompileError(f"{where}: arrays have different sample counts")
        count = data.shape[0]
        per_input[name] = data
    if not count:
        raise CompileError(f"{where} holds no samples")
    labels = None
    if labels_key is not None:
        labels = arrays[labels_key]
        if labels.ndim != 1 or labels.shape[0] != count or not np.issubdtype(labels.dtype,
                                                                             np.integer):
            raise CompileError(f"{where}: labels '{labels_key}' must be [{count}] integers, got "
                               f"{labels.dtype} {list(labels.shape)}")
    n = count if limit <= 0 else min(limit, count)
    samples = [{name: np.ascontiguousarray(per_input[name][i]) for name in inputs}
               for i in range(n)]
    for sample in samples:
        for name, value in sample.items():
            if value.ndim != inputs[name]:
                raise CompileError(f"{where}: input '{name}' sample has rank {value.ndim}, "
                                   f"the model expects {inputs[name]}")
    return CalibrationData(samples, None if labels is None else labels[:n].astype(np.int64),
                           str(path), digest)


# ----------------------------------------------------------------------------- interpreter


def content_fingerprint(array: np.ndarray) -> int:
    data = np.ascontiguousarray(array)
    digest = hashlib.blake2b(data.view(np.uint8).reshape(-1), digest_size=16).digest()
    return hash((data.shape, data.dtype.str, digest))


CONTENT_FINGERPRINTED = (spls.LocalSimilarityOp, spls.TopKOp)
"""Ops whose results are fingerprinted by value (small masks that often coincide)."""
RECORDED = (spls.PredictAttentionOp, spls.TopKOp, spls.LocalSimilarityOp)
"""Ops whose values the accounting reads (and masked attentions: their Q and K operands)."""


@dataclass
class RandomReuse:
    """The control: a random reuse map with the same number of reused real rows per layer and
    input as `counts`, each reused row taking a random one of the last `window` computed rows."""

    counts: dict[int, int]
    """similarity op id -> reused real rows of the SPLS run being controlled."""
    seed: tuple[int, ...]

    def tag(self, op: Operation) -> tuple[Any, ...]:
        return ("random", self.counts.get(id(op), 0), self.seed)

    def replace(self, op: spls.LocalSimilarityOp, args: list[np.ndarray],
                outputs: list[np.ndarray], layer: int) -> list[np.ndarray]:
        spa, pam = args[0], (args[1] if op.pam is not None else None)
        window = op.window.value.data
        rng = np.random.default_rng([*self.seed, layer])
        reuse = np.full(outputs[0].shape, -1, dtype=np.int32)
        keys = np.zeros(outputs[1].shape, dtype=bool)
        for b in range(spa.shape[0]):
            real = (np.isfinite(pam[b]).any(axis=(0, 1)) if pam is not None
                    else spa[b].any(axis=(0, 1)))
            rows = np.flatnonzero(real)
            n = min(self.counts.get(id(op), 0), max(len(rows) - 1, 0))
            chosen = set(rng.choice(rows[1:], size=n, replace=False).tolist()) if n else set()
            computed: list[int] = []
            for i in range(reuse.shape[1]):
                if i in chosen and computed and window > 0:
                    refs = computed[-window:]
                    reuse[b, i] = refs[int(rng.integers(len(refs)))]
                else:
                    computed.append(i)
            keys[b] = spa[b][:, reuse[b] < 0, :].any(axis=1)
        return [reuse, keys]


class TuningInterpreter(Interpreter):
    """The reference interpreter with a shared memo, recording the prediction ops' values."""

    def __init__(self, store: WeightStore, memo: dict[int, list[np.ndarray]],
                 signatures: dict[Operation, str], layer_of: Mapping[int, int],
                 control: RandomReuse | None = None):
        super().__init__(store)
        self.memo = memo
        self.signatures = signatures
        self.layer_of = layer_of
        self.control = control
        self.fingerprints: dict[SSAValue, int] = {}
        self.records: dict[int, list[np.ndarray]] = {}

    def signature(self, op: Operation) -> str:
        sig = self.signatures.get(op)
        if sig is None:
            # An op with a body (host region) is identified by its full text.
            sig = str(op) if op.regions else f"{op.name}|{op.properties}|{op.attributes}"
            self.signatures[op] = sig
        return sig

    def run_op(self, op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
        operand_fps = []
        for value, arg in zip(op.operands, args):
            fp = self.fingerprints.get(value)
            if fp is None:  # a block argument: a model input or a region input
                fp = content_fingerprint(arg)
                self.fingerprints[value] = fp
            operand_fps.append(fp)
        randomize = self.control is not None and isinstance(op, spls.LocalSimilarityOp)
        tag = self.control.tag(op) if randomize else None  # type: ignore[union-attr]
        key = hash((self.signature(op), tag, *operand_fps))
        outputs = self.memo.get(key)
        if outputs is None:
            outputs = super().run_op(op, args)
            if randomize:
                assert isinstance(op, spls.LocalSimilarityOp) and self.control is not None
                outputs = self.control.replace(op, args, outputs, self.layer_of[id(op)])
            self.memo[key] = outputs
        by_value = isinstance(op, CONTENT_FINGERPRINTED)
        for index, result in enumerate(op.results):
            self.fingerprints[result] = (content_fingerprint(outputs[index]) if by_value
                                         else hash((key, index)))
        if is_masked_attention(op):
            self.records[id(op)] = args[:2]
        elif isinstance(op, RECORDED):
            self.records[id(op)] = outputs
        return outputs


# ----------------------------------------------------------------------------- measuring


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

    @property
    def loss(self) -> float:
        return self.dense_accuracy - self.accuracy

    @property
    def loss_se(self) -> float:
        """Standard error of `loss` as an estimate of the loss on new inputs of the same kind:
        sample std of the per-input losses / sqrt(inputs); 0 without per-input losses."""
        losses = self.sample_losses
        if losses is None or len(losses) < 2:
            return 0.0
        return float(np.std(losses, ddof=1) / math.sqrt(len(losses)))

    def loss_bound(self, margin_se: float) -> float:
        """The loss the search holds to the budget: mean + `margin_se` standard errors."""
        return self.loss + margin_se * self.loss_se if margin_se else self.loss

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

    # --- preparing settings --------------------------------------------------------------
    def _prepare(self, config: SplsConfig | None) -> _Prepared:
        from esact_cc.dialect_registry import make_context
        from esact_cc.pipeline import make_pass

        module = self.base.clone()
        store = WeightStore({name: self.base_store[name] for name in self.base_store})
        attach(module, store)
        if config is not None:
            make_pass("insert-spls", **config.pass_options()).apply(make_context(), module)
        layers = find_spls_layers(module)
        return _Prepared(config or SplsConfig(), module, store, layers,
                         {id(layer.similarity): layer.index for layer in layers})

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
            work.append(count_layer(layer, pam, spa, reuse, keys, q, k))
        return np.asarray(outputs[self.output]), work

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

    def reuse_off_gap(self, count: int = 4) -> float:
        """Max |SPLS - dense| of the output with reuse off and dense attention on the first
        `count` samples: 0 when the SPLS program is exact (DESIGN.md section 6); anything
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
                p.config, float(np.mean(scores)), self.dense_accuracy, summarize(works[j]),
                self._accuracy(control_outputs[j]) if control else None,
                self.dense_scores - scores))
        return measurements


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
                                      summarize(m.work.layers for m in ms), control_accuracy,
                                      np.concatenate([m.sample_losses for m in ms
                                                      if m.sample_losses is not None])))
        return pooled


Evaluator = SplsEvaluator | PooledEvaluator


# ----------------------------------------------------------------------------- search


def uniform_config(**options: Any) -> SplsConfig:
    merged = dict(SEARCH_ORIGIN)
    merged.update({k.replace("_", "-"): v for k, v in options.items()})
    return SplsConfig(options=merged)


def _key(config: SplsConfig) -> str:
    return repr((sorted(config.options.items()),
                 sorted((i, sorted(o.items())) for i, o in config.layers.items())))


def _better(a: Measurement, b: Measurement | None, budget: float, margin_se: float = 0.0
            ) -> bool:
    """a is within budget (mean loss + `margin_se` standard errors) and reduces more than b
    (ties: higher accuracy)."""
    if a.loss_bound(margin_se) > budget + BUDGET_SLACK:
        return False
    if b is None:
        return True
    if abs(a.reduction - b.reduction) > 1e-12:
        return a.reduction > b.reduction
    return a.accuracy > b.accuracy


@dataclass
class TuningResult:
    uniform: Measurement
    per_layer: Measurement | None
    history: list[Measurement]
    budget: float
    search: SearchOptions | None = None

    @property
    def best(self) -> Measurement:
        """The per-layer setting when it reduces more than the uniform one on the calibration
        set (it may not: with a margin it is held to a stricter bound than the uniform)."""
        if self.per_layer is not None and self.per_layer.reduction > self.uniform.reduction:
            return self.per_layer
        return self.uniform

    def config(self, info: Mapping[str, Any]) -> SplsConfig:
        best = self.best
        return SplsConfig(dict(best.config.options), {i: dict(o) for i, o in
                                                      best.config.layers.items()},
                          {**info, "budget_points": self.budget,
                           **(self.search or SearchOptions()).as_dict(),
                           "uniform": self.uniform.as_dict(),
                           "per_layer": self.per_layer.as_dict() if self.per_layer else None,
                           "chosen": "per_layer" if best is self.per_layer else "uniform",
                           "settings_measured": len(self.history)})


class _Search:
    def __init__(self, evaluator: Evaluator, budget: float, log: Callable[[str], None]):
        self.evaluator = evaluator
        self.budget = budget
        self.margin_se = 0.0
        """Standard errors added to the mean loss before the budget test (0 = the mean)."""
        self.log = log
        self.seen: dict[str, Measurement] = {}
        self.history: list[Measurement] = []

    def measure(self, configs: Sequence[SplsConfig]) -> list[Measurement]:
        todo = list({_key(c): c for c in configs if _key(c) not in self.seen}.values())
        if todo:
            for m in self.evaluator.measure(todo):
                self.seen[_key(m.config)] = m
                self.history.append(m)
                self.log(_describe(m, self.budget, self.margin_se))
        return [self.seen[_key(c)] for c in configs]

    def fits(self, m: Measurement) -> bool:
        return m.loss_bound(self.margin_se) <= self.budget + BUDGET_SLACK

    def best_of(self, measurements: Sequence[Measurement],
                current: Measurement | None) -> Measurement | None:
        for m in measurements:
            if _better(m, current, self.budget, self.margin_se):
                current = m
        return current


def layer_text(overrides: Mapping[str, Any]) -> str:
    """`0.75` for a threshold alone, else `thr=0.75,w=4` style."""
    if set(overrides) == {"threshold"}:
        return str(overrides["threshold"])
    short = {"threshold": "thr", "window": "w"}
    return ",".join(f"{short.get(k, k)}={v}" for k, v in sorted(overrides.items()))


def _describe(m: Measurement, budget: float, margin_se: float = 0.0) -> str:
    o = m.config.options
    text = (f"bits={o['hlog-bits']} k={o['k-ratio']} w={o['window']} thr={o['threshold']} "
            f"{o['similarity']} attn={o['attention']}")
    if o.get("first-reference"):
        text += f" first-ref={o['first-reference']}"
    if m.config.layers:
        text += " layers=" + "/".join(f"{i}:{layer_text(v)}"
                                      for i, v in sorted(m.config.layers.items()))
    mark = "ok" if m.loss_bound(margin_se) <= budget + BUDGET_SLACK else "over"
    return (f"  {text}: reduction {m.reduction:6.2%}  accuracy {m.accuracy:7.3f} "
            f"(loss {m.loss:+.3f} +- {m.loss_se:.3f}, {mark})")


def search_uniform(search: _Search) -> Measurement:
    grid = [uniform_config(similarity=sim, attention=attn, threshold=thr, hlog_bits=bits)
            for sim, attn, bits, thresholds in UNIFORM_GRID for thr in thresholds]
    best = search.best_of(search.measure(grid), None)
    if best is None:  # nothing within budget: reuse off, dense attention (prediction only)
        search.log("  no uniform setting is within the budget; reuse off")
        return search.measure([uniform_config(threshold=REUSE_OFF)])[0]
    for name, values in REFINE_VALUES.items():
        options = best.config.options
        if name == "k-ratio" and options["attention"] == "dense" \
                and options["similarity"] == "cosprob":
            continue  # k only shapes SPA, which neither dense attention nor cosprob reads
        trials = [SplsConfig(options={**options, name: v}) for v in values]
        best = search.best_of(search.measure(trials), best) or best
    # Last: the thresholds, crossed with first-reference (which lowers reuse at a given
    # threshold, so alone it never wins; its value shows at a lower threshold).
    options = best.config.options
    trials = [SplsConfig(options={**options, "threshold": thr, "first-reference": first})
              for first in FIRST_REFERENCE_VALUES
              for thr in FINER_THRESHOLDS[options["similarity"]]]
    return search.best_of(search.measure(trials), best) or best


def _thresholds_of(m: Measurement, layers: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Per-layer {option: value} of the options the per-layer search varies."""
    return {i: {name: m.config.layers.get(i, {}).get(name, m.config.options[name])
                for name in ("threshold", "window")} for i in layers}


def _per_layer_config(options: Mapping[str, Any],
                      per_layer: Mapping[int, Mapping[str, Any]]) -> SplsConfig:
    """Options + the per-layer values that differ from the uniform ones."""
    layers = {}
    for i, values in sorted(per_layer.items()):
        differing = {k: v for k, v in values.items() if v != options[k]}
        if differing:
            layers[i] = differing
    return SplsConfig(options=dict(options), layers=layers)


def per_layer_start(search: _Search, uniform: Measurement, first_reference: int = 0
                    ) -> Measurement:
    """Where the per-layer search starts: the tuned uniform setting with first-reference at
    least `first_reference`, if it is within the budget under the per-layer margin; else the
    uniform setting of the search's history (same first-reference rule) that reduces most
    within it; else reuse off in every layer (the prediction's cost alone)."""
    def raised(m: Measurement) -> SplsConfig:
        options = dict(m.config.options)
        options["first-reference"] = max(int(options.get("first-reference", 0)),
                                         first_reference)
        return SplsConfig(options=options)

    start = search.measure([raised(uniform)])[0]
    if search.fits(start):
        return start
    uniforms = {_key(raised(m)): raised(m) for m in search.history if not m.config.layers}
    best = search.best_of(search.measure(list(uniforms.values())), None)
    if best is None:
        best = search.measure([SplsConfig(options={**start.config.options,
                                                   "threshold": REUSE_OFF})])[0]
    search.log(f"  per-layer start:{_describe(best, search.budget, search.margin_se)}")
    return best


def search_per_layer_largest(search: _Search, start: Measurement, layers: Sequence[int],
                             options: SearchOptions) -> Measurement:
    """From the last layer to the first, the value of each per-layer option with the largest
    reduction within budget, that layer alone changing; `LAYER_SWEEPS` sweeps."""
    uniform = start.config.options
    values = _thresholds_of(start, layers)
    best = start
    for _ in range(LAYER_SWEEPS):
        changed = False
        for layer in reversed(layers):
            trials = []
            for name in options.layer_options:
                for value in _layer_values(name, uniform):
                    if value == values[layer][name]:
                        continue
                    trial = {i: dict(v) for i, v in values.items()}
                    trial[layer][name] = value
                    trials.append(_per_layer_config(uniform, trial))
            chosen = search.best_of(search.measure(trials), best)
            if chosen is not None and chosen is not best:
                best, changed = chosen, True
                values = _thresholds_of(best, layers)
        if not changed:
            break
    return best


def _layer_values(name: str, options: Mapping[str, Any]) -> tuple[Any, ...]:
    if name == "threshold":
        return LAYER_THRESHOLDS[options["similarity"]]
    return LAYER_WINDOWS


def search_per_layer_efficient(search: _Search, start: Measurement, layers: Sequence[int],
                               options: SearchOptions) -> Measurement:
    """Greedy by price: each round tries, in every layer, the values of each per-layer option
    in the direction of more reuse (lower threshold, larger window; the next
    `options.layer_steps` of them, 0 = all: a lower threshold can cost less than a higher
    one, as reuse decisions change what later layers see), and
    takes the move with the most reduction gained per point of budget spent (loss + margin);
    moves that spend nothing come first, by gain. Stops when no move gains within budget.
    Cheap reuse is taken before expensive reuse, instead of the first layer visited spending
    the whole budget."""
    uniform = start.config.options
    steps = options.layer_steps or None  # 0: every value
    current = start
    while True:
        values = _thresholds_of(current, layers)
        trials = []
        for layer in layers:
            for name in options.layer_options:
                now = values[layer][name]
                ladder = _layer_values(name, uniform)
                more = ([v for v in ladder if v < now][::-1][:steps] if name == "threshold"
                        else [v for v in ladder if v > now][:steps])
                for value in more:
                    trial = {i: dict(v) for i, v in values.items()}
                    trial[layer][name] = value
                    trials.append(_per_layer_config(uniform, trial))
        spent_now = current.loss_bound(search.margin_se)
        best_move, best_rank = None, (0, 0.0)
        for m in search.measure(trials):
            gain = m.reduction - current.reduction
            if gain <= 1e-12 or not search.fits(m):
                continue
            spent = m.loss_bound(search.margin_se) - spent_now
            rank = (1, gain) if spent <= 0 else (0, gain / spent)
            if best_move is None or rank > best_rank:
                best_move, best_rank = m, rank
        if best_move is None:
            return current
        current = best_move


LAYER_SEARCHES: dict[str, Callable[..., Measurement]] = {
    "largest": search_per_layer_largest,
    "efficient": search_per_layer_efficient,
}
"""Per-layer search strategies (`--layer-search`)."""


@dataclass(frozen=True)
class SearchOptions:
    """How the per-layer phase searches (esact-tune's `--margin-se`, `--layer-search`,
    `--layer-options`, `--layer-first-reference`); the defaults are the module constants."""

    margin_se: float = DEFAULT_MARGIN_SE
    """Per-layer settings must keep mean loss + margin_se standard errors within budget."""
    layer_search: str = DEFAULT_LAYER_SEARCH
    """A key of `LAYER_SEARCHES`."""
    layer_options: tuple[str, ...] = DEFAULT_LAYER_OPTIONS
    """Per-layer options varied: some of `PER_LAYER_OPTIONS`."""
    layer_first_reference: int = DEFAULT_LAYER_FIRST_REFERENCE
    """first-reference of the per-layer settings is at least this."""
    layer_steps: int = DEFAULT_LAYER_STEPS
    """`efficient`: values of an option tried per layer and round, nearest first (0: all)."""

    def validate(self) -> None:
        if not (math.isfinite(self.margin_se) and self.margin_se >= 0):
            raise CompileError(f"margin must be a finite number of standard errors >= 0, got "
                               f"{self.margin_se}")
        if self.layer_search not in LAYER_SEARCHES:
            raise CompileError("--layer-search: " + unknown_name(
                "per-layer search", self.layer_search, LAYER_SEARCHES))
        if not self.layer_options:
            raise CompileError(f"--layer-options: per-layer options must be some of "
                               f"{', '.join(PER_LAYER_OPTIONS)}, got none")
        for name in self.layer_options:
            if name not in PER_LAYER_OPTIONS:
                raise CompileError("--layer-options: " + unknown_name(
                    "per-layer option", name, PER_LAYER_OPTIONS))
        if self.layer_steps < 0:
            raise CompileError(f"per-layer steps must be >= 0, got {self.layer_steps}")
        if self.layer_first_reference < 0:
            raise CompileError(f"per-layer first-reference must be >= 0, got "
                               f"{self.layer_first_reference}")

    def as_dict(self) -> dict[str, Any]:
        return {"per_layer_margin_se": self.margin_se, "layer_search": self.layer_search,
                "layer_options": list(self.layer_options),
                "layer_first_reference": self.layer_first_reference,
                "layer_steps": self.layer_steps}


def tune(evaluator: Evaluator, budget: float, per_layer: bool = True,
         log: Callable[[str], None] | None = None,
         search: SearchOptions | None = None) -> TuningResult:
    """Search uniform, then per-layer settings within `budget` accuracy points (calibration),
    the per-layer phase as `search` says."""
    options = search or SearchOptions()
    options.validate()
    if not (math.isfinite(budget) and budget >= 0):
        raise CompileError(f"budget must be a finite number of points >= 0, got {budget}")
    log = log or (lambda message: None)
    state = _Search(evaluator, budget, log)
    log(f"uniform search ({'accuracy' if evaluator.labels is not None else 'cosine'} "
        f"x100, dense {evaluator.dense_accuracy:.3f}, budget {budget} points)")
    gap = evaluator.reuse_off_gap()
    if gap > 0:
        log(f"warning: with reuse off the SPLS program differs from dense by up to {gap:.3g}: "
            "losses include that error, not only SPLS's")
    uniform = search_uniform(state)
    result = TuningResult(uniform, None, state.history, budget, options)
    layers = evaluator.layer_indices(uniform.config)
    if per_layer and len(layers) > 1:
        log(f"per-layer {', '.join(options.layer_options)} ({options.layer_search}; loss + "
            f"{options.margin_se:g} standard errors within budget, first-reference >= "
            f"{options.layer_first_reference})")
        state.margin_se = options.margin_se
        start = per_layer_start(state, uniform, options.layer_first_reference)
        chosen = LAYER_SEARCHES[options.layer_search](state, start, layers, options)
        result.per_layer = chosen if chosen.config.layers else None
    result.history = state.history
    return result
