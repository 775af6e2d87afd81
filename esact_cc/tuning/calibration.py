"""Calibration inputs and activation ranges for INT8 post-training quantization.

`load_calibration_samples` reads `--calibration-data` (`FILE.npz` with arrays named after the
model inputs, or NAME=FILE.npz:ARRAY bindings; the leading axis indexes samples), and
`collect_peaks` runs the reference interpreter on the transformer-level IR over the samples and
returns max |value| of each requested SSA value and the largest probability of each attention.
Without calibration data the samples come from synthetic_calibration.py; the calibrate step
(calibrate_pass.py) records what `collect_peaks` saw on the ops.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Block, Operation, SSAValue
from xdsl.traits import IsTerminator

from esact_cc import tensor_types
from esact_cc.dialects import transformer
from esact_cc.dialects.onnx import WeightOp
from esact_cc.interpreter.interpret_position_scores import fp32_position_scores, position_terms
from esact_cc.interpreter.reference_interpreter import (
    Interpreter,
    function_arguments,
    operands_by_name,
)
from esact_cc.ir_queries import io_names, main_function, op_label
from esact_cc.runtime.bounded_read import read_bounded
from esact_cc.runtime.cli.input_bindings import (
    BoundArrays,
    bound_names,
    parse_binding,
    path_list,
    read_bindings,
    resolve_bindings,
)
from esact_cc.runtime.errors import CompileError
from esact_cc.tuning.calibration_token_subset import TokenSubset, token_subset
from esact_cc.weight_store import WeightStore

CALIBRATION_DATA_CAP = 1 << 30
"""1 GiB: calibration samples are a few hundred model inputs."""
CalibrationSpecs = str | os.PathLike[str] | Sequence[str]
"""One `--calibration-data` binding or several."""


def input_names(function: func.FuncOp) -> list[str]:
    return io_names(function, results=False)


def _arg_spec(arg: SSAValue) -> tuple[tuple[int, ...], np.dtype]:
    typ = arg.type
    if not isinstance(typ, TensorType):
        raise CompileError(f"function argument of type {typ} is not a tensor")
    return tuple(typ.get_shape()), tensor_types.numpy_dtype_of(typ)


def read_calibration_bindings(data: CalibrationSpecs) -> tuple[BoundArrays, str]:
    """The arrays `--calibration-data` binds (runtime/cli/input_bindings.py: `FILE.npz`,
    `NAME=FILE.npy`, `NAME=FILE.npz[:ARRAY]`; one spec or several) and the SHA-256 of the
    files' bytes in order. Read header first by npy_files (numeric dtypes only, no pickles,
    sizes checked before allocating), each file and array at most CALIBRATION_DATA_CAP bytes."""
    specs = path_list(data)
    for spec in specs:
        path = parse_binding("--calibration-data", spec).path
        if not Path(path).exists():
            raise CompileError(f"calibration data '{path}' not found")
    bound = read_bindings("--calibration-data", specs, CALIBRATION_DATA_CAP, "calibration data")
    digest = hashlib.sha256()
    for spec in specs:  # the files are small (at most CALIBRATION_DATA_CAP): read again
        digest.update(read_bounded(parse_binding("--calibration-data", spec).path,
                                   CALIBRATION_DATA_CAP, "calibration data"))
    return bound, digest.hexdigest()


def read_calibration_arrays(data: CalibrationSpecs) -> tuple[dict[str, np.ndarray], str]:
    """`read_calibration_bindings` as one dict: archives' arrays under their own names, then
    the arrays bound to a name; and the digest."""
    bound, digest = read_calibration_bindings(data)
    return bound_names(bound), digest


def load_calibration_samples(module: ModuleOp, data: CalibrationSpecs) -> list[dict[str, np.ndarray]]:
    """Samples from the `--calibration-data` bindings, matched to the model inputs by
    input_bindings.resolve_bindings (other arrays of an archive, e.g. labels, are left alone);
    axis 0 indexes samples. A sample's shape must equal the input's shape, or the input's shape
    without its leading batch dim of 1."""
    function = main_function(module)
    bound, _digest = read_calibration_bindings(data)
    names = input_names(function)
    arrays = resolve_bindings(bound, names, "--calibration-data", extra_arrays_allowed=True)
    where = f"--calibration-data '{' '.join(path_list(data))}'"
    count = None
    per_input: dict[str, np.ndarray] = {}
    for name, arg in zip(names, function.args):
        shape, dtype = _arg_spec(arg)
        samples = arrays[name]
        if samples.shape[1:] != shape:
            if not (len(shape) >= 1 and shape[0] == 1 and samples.shape[1:] == shape[1:]):
                raise CompileError(f"{where}: input '{name}' has shape {list(samples.shape)}, "
                                   f"expected [samples, {', '.join(map(str, shape))}]")
            samples = samples[:, None]  # samples without the batch dim of 1
        if count is not None and samples.shape[0] != count:
            raise CompileError(f"{where}: inputs have different sample counts")
        count = samples.shape[0]
        per_input[name] = samples.astype(dtype, copy=False)
    if not count:
        raise CompileError(f"{where} holds no samples")
    return [{n: per_input[n][i] for n in names} for i in range(count)]


def attention_probability_peak(op: transformer.AttentionOp, args: Sequence[np.ndarray]) -> float:
    """Largest softmax probability of a transformer.attention on its operand values.

    Scores in float64, one (batch, head) at a time (a [Lq, Lk] matrix stays in cache; all
    heads at once took 400 MB at 2048 tokens). A row's largest probability is exactly
    1 / sum(exp(s - max)) (its max term is exp(0) = 1, and correctly rounded division is
    monotonic), so the peak is 1 / the smallest row sum; a row with no visible key has 0."""
    q, k = np.asarray(args[0], np.float64), np.asarray(args[1], np.float64)
    heads = op.num_heads.value.data
    batch, lq, width = q.shape
    lk = k.shape[1]
    d = width // heads
    # Contiguous copies: batched matmul on strided views does not use BLAS (~300x slower).
    qh = np.ascontiguousarray(q.reshape(batch, lq, heads, d).transpose(0, 2, 1, 3))
    kh = np.ascontiguousarray(np.repeat(k.reshape(batch, lk, op.key_heads, d), heads // op.key_heads,
                                        axis=2).transpose(0, 2, 3, 1))
    mask = None
    if op.mask is not None and np.any(args[3]):  # adding zeros changes no probability
        mask = np.broadcast_to(np.asarray(args[3], np.float64), (batch, heads, lq, lk))
    visible = None
    if op.causal is not None:
        visible = np.arange(lk)[None, :] <= np.arange(lq)[:, None] + (lk - lq)
    scale = op.scale.value.data
    terms = position_terms(op, operands_by_name(op, list(args)))
    position = fp32_position_scores(q, k, heads, terms)
    peak = 0.0
    for b in range(batch):
        for h in range(heads):
            scores = qh[b, h] @ kh[b, h]
            if position is not None:  # DeBERTa's c2p / p2c, before the scale
                scores += position[b, h]
            scores *= scale
            if mask is not None:
                scores += mask[b, h]
            if visible is not None:
                scores = np.where(visible, scores, -np.inf)
            peak = max(peak, _largest_probability(scores))
    return peak


def _largest_probability(scores: np.ndarray) -> float:
    """max(softmax(scores, axis=-1)), rows of only -inf counting 0 (`scores` is consumed)."""
    row_max = np.max(scores, axis=-1, keepdims=True)
    if np.isnan(row_max).any() or (row_max == np.inf).any():  # the literal formula's NaNs
        e = np.exp(scores - np.where(np.isfinite(row_max), row_max, 0.0))
        total = np.sum(e, axis=-1, keepdims=True)
        return float(np.max(e / np.where(total > 0, total, 1.0)))
    visible_rows = np.isfinite(row_max[:, 0])
    if not visible_rows.any():
        return 0.0
    scores -= np.where(visible_rows[:, None], row_max, 0.0)
    np.exp(scores, out=scores)
    totals = np.sum(scores, axis=-1)
    return float(1.0 / np.min(totals[visible_rows]))


CALIBRATION_BATCH_ROWS = 1024
"""Activation rows per FP32 linear in calibration: samples run in lock-step groups whose
linear inputs stack to about this many rows, one BLAS call per linear and group (OpenBLAS, one
thread: 112 GFLOP/s at 128 rows, 150 at 1024; BERT-base at 128 tokens runs its 8 samples as
one group). The rows are the same dot products in the same order, so the ranges are those of
one sample at a time; a group holds only a few samples' live activations."""


class _PeakRecorder(Interpreter):
    """Runs the IR and keeps max |value| of the watched SSA values and the largest attention
    probability of every transformer.attention."""

    def __init__(self, store: WeightStore, watched: Sequence[SSAValue], probability_peaks: bool = True,
                 subset: TokenSubset | None = None):
        super().__init__(store)
        self.record_probabilities = probability_peaks
        self.subset = subset
        """Compute only these token rows (calibration_token_subset.py), or all."""
        self.peaks = {v: 0.0 for v in watched}
        self.channel_peaks: dict[SSAValue, np.ndarray] = {}
        self.channel_sums: dict[SSAValue, tuple[np.ndarray, int]] = {}
        self.probability_peaks: dict[Operation, float] = {}
        self.aligned: dict[str, np.ndarray] = {}
        self.recorded_per_use = set(watched)
        """Watched values recorded by `run_op` at each use; `run_lockstep` records values of
        the function's top block once, where they are defined (`recorded_at_definition`: how
        many uses each stands for)."""
        self.recorded_at_definition: dict[SSAValue, int] = {}

    def run_op(self, op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
        for value, arg in zip(op.operands, args):
            if value in self.recorded_per_use:
                self._record(value, arg)
        if isinstance(op, WeightOp):
            return [self._aligned(op.weight_name.data)]
        if isinstance(op, transformer.AttentionOp) and self.record_probabilities:
            peak = attention_probability_peak(op, args)
            self.probability_peaks[op] = max(self.probability_peaks.get(op, 0.0), peak)
        return super().run_op(op, args)

    def run_lockstep(self, function: func.FuncOp, samples: Sequence[dict[str, np.ndarray]]) -> None:
        """Run `function` on every sample, op by op across the samples (Interpreter.run_lanes),
        FP32 linears batched (CALIBRATION_BATCH_ROWS), up to the last op calibration reads
        (`_last_read_op`). A watched value of the top block is recorded when defined, once per
        use (the per-channel sums in the order run_op's per-use records add them)."""
        block = function.body.block
        self.recorded_at_definition = {v: _recorded_uses(v) for v in self.peaks if _defined_in(v, block)}
        self.recorded_per_use = set(self.peaks) - set(self.recorded_at_definition)
        arg_sets = [function_arguments(function, sample) for sample in samples]
        try:
            self.run_lanes(block, arg_sets, [{} for _ in samples], _last_read_op(block, self.peaks))
        finally:
            self.recorded_at_definition, self.recorded_per_use = {}, set(self.peaks)

    def run_op_lanes(self, op: Operation, lane_args: list[list[np.ndarray]],
                     envs: Sequence[dict[SSAValue, np.ndarray]]) -> list[list[np.ndarray]]:
        if self.subset is not None and op in self.subset.ops:
            lane_args = [self.subset.operands(op, args) for args in lane_args]
        if _batchable_linear(op) and self.recorded_per_use.isdisjoint(op.operands):
            # run_op would record none of its operands: skip it, all lanes in one BLAS call
            shape = tuple(op.results[0].type.get_shape())  # type: ignore[attr-defined]
            if self.subset is not None:
                shape = self.subset.result_shape(op, shape)
            return [[y] for y in _batched_linear(op, lane_args, self._check_result, shape)]
        return super().run_op_lanes(op, lane_args, envs)

    def _check_result(self, op: Operation, index: int, value: np.ndarray) -> np.ndarray:
        result_type = op.results[index].type if index < len(op.results) else None
        if self.subset is None or op not in self.subset.ops or not isinstance(result_type, TensorType):
            return super()._check_result(op, index, value)
        expected = self.subset.result_shape(op, tuple(result_type.get_shape()))
        if np.shape(value) != expected:
            raise CompileError(f"{op_label(op)}: result {index} has shape {np.shape(value)} on the "
                               f"calibration token rows, expected {expected}")
        return np.asarray(value, tensor_types.numpy_dtype_of(result_type))

    def defined(self, value: SSAValue, lane_values: list[np.ndarray]) -> None:
        uses = self.recorded_at_definition.get(value)
        if uses is not None:
            if self.subset is not None and value.owner not in self.subset.ops:
                # a full value (a host region's) is recorded as its readers see it: cut
                lane_values = [self.subset.rows(arr) for arr in lane_values]
            for arr in lane_values:
                self._record(value, arr, uses)

    def _aligned(self, name: str) -> np.ndarray:
        """Weights as aligned arrays, copied once: the frontend's views into the ONNX buffer
        may be unaligned, which keeps BLAS away from every calibration matmul."""
        if name not in self.aligned:
            array = self.store[name]
            self.aligned[name] = array if array.flags.aligned else np.require(array, requirements="AC")
        return self.aligned[name]

    def _record(self, value: SSAValue, arr: np.ndarray, uses: int = 1) -> None:
        """Record one sample's value as `uses` reads of it would, one after the other."""
        arr = np.asarray(arr, np.float32)
        if arr.size:
            rows = arr.reshape(-1, arr.shape[-1]) if arr.ndim else arr.reshape(1, 1)
            finite = bool(np.isfinite(rows).all())
            channels = _channel_peaks(rows, finite)
            previous = self.channel_peaks.get(value)
            self.channel_peaks[value] = channels if previous is None else np.maximum(previous, channels)
            self.peaks[value] = max(self.peaks[value], float(channels.max()))
            rows = rows if finite else np.where(np.isfinite(rows), rows, 0)
            total, count = self.channel_sums.get(value, (0.0, 0))
            sums = rows.sum(axis=0, dtype=np.float64)
            for _ in range(uses):  # each read added the sums: the same float64 additions
                total = total + sums
            self.channel_sums[value] = (total, count + uses * rows.shape[0])


def _recorded_uses(value: SSAValue) -> int:
    """How often `run_op` reads `value` in one run: its uses by ops other than terminators
    (run_block returns a terminator's operands without running it)."""
    return sum(1 for use in value.uses if not use.operation.has_trait(IsTerminator))


def _last_read_op(block: Block, watched: Iterable[SSAValue]) -> int:
    """Index in `block` of the last op calibration needs: one defining a watched value, or
    holding (itself or in its regions) a watched value's reader or an attention (whose
    probabilities are recorded). The ops after it (BERT: the last layer's output linear, residual
    and layer norm) feed no recorded range."""
    ops = list(block.ops)
    index_of = {op: index for index, op in enumerate(ops)}

    def top_level(op: Operation) -> int:
        while op.parent_block() is not block:
            op = op.parent_op()  # type: ignore[assignment]
        return index_of[op]

    last = -1
    for value in watched:
        if _defined_in(value, block):
            last = max(last, index_of[value.owner] if isinstance(value.owner, Operation) else -1)
        else:
            last = max([last] + [top_level(use.operation) for use in value.uses])
    for index, op in enumerate(ops):
        if any(isinstance(nested, transformer.AttentionOp) for nested in op.walk()):
            last = max(last, index)
    return last


def _defined_in(value: SSAValue, block: Block) -> bool:
    owner = value.owner
    return owner is block if isinstance(owner, Block) else owner.parent_block() is block


def _batchable_linear(op: Operation) -> bool:
    """An FP32 linear of x, weight and bias alone (no row or key masks)."""
    return (isinstance(op, transformer.LinearOp) and not op.is_quantized
            and set(operands_by_name(op, op.operands)) <= {"x", "weight", "bias"})


def _batched_linear(op: transformer.LinearOp, arg_sets: Sequence[list[np.ndarray]],
                    check: Callable[[Operation, int, np.ndarray], np.ndarray],
                    shape: tuple[int, ...]) -> list[np.ndarray]:
    """run_linear on every sample's x at once: their rows stacked into one matrix (each row's
    dot products unchanged), the result split back to `shape` (the IR type's, or its token
    subset's) and checked."""
    # Imported here: the op kernels pull in onnx (onnxruntime_kernel), which loading the
    # `calibrate` pass must not (test_onnx_package_tables); the interpreter loads them lazily too.
    from esact_cc.interpreter.interpret_transformer_ops import run_linear

    named = [operands_by_name(op, args) for args in arg_sets]
    rows = np.concatenate([v["x"].reshape(-1, v["x"].shape[-1]) for v in named])
    y = run_linear(rows, named[0]["weight"], named[0].get("bias"))
    return [check(op, 0, part.reshape(shape)) for part in np.split(y, len(named))]


def _channel_peaks(rows: np.ndarray, finite: bool) -> np.ndarray:
    """max |x| per column of 2-D `rows`, non-finite values counting 0 (`finite`: all are)."""
    if finite:  # max(max x, -min x) is max |x| exactly; +0.0 turns -0.0 to 0
        return np.maximum(rows.max(axis=0), -rows.min(axis=0)) + np.float32(0)
    finite = np.abs(rows)
    return np.where(np.isfinite(finite), finite, np.float32(0)).max(axis=0)


@dataclass
class Ranges:
    """What calibration observed over all samples."""

    peaks: dict[SSAValue, float]
    """max |v| of each requested SSA value."""
    channel_peaks: dict[SSAValue, np.ndarray]
    """max |v| per last-axis channel of each requested SSA value."""
    channel_means: dict[SSAValue, np.ndarray]
    """Mean of v per last-axis channel over all rows of all samples (non-finite values 0)."""
    probability_peaks: dict[Operation, float]
    """Largest softmax probability of each transformer.attention (empty when not asked)."""


def sample_rows(module: ModuleOp) -> int:
    """Rows of the tallest FP32 linear input of one sample (1 without linears)."""
    rows = [math.prod(op.x.type.get_shape()[:-1]) for op in module.walk()
            if _batchable_linear(op) and isinstance(op.x.type, TensorType)]
    return max(rows, default=1)


def token_subset_plan(module: ModuleOp, values: Sequence[SSAValue], rows_budget: int) -> TokenSubset | str | None:
    """The token subset (calibration_token_subset.py) that brings one sample of `module` to
    `rows_budget` activation rows, for the ops that record `values`; None when a sample is no
    more rows; or why all rows must be computed."""
    block = main_function(module).body.block
    return token_subset(block, _last_read_op(block, values), rows_budget, sample_rows(module))


def collect_peaks(
    module: ModuleOp,
    store: WeightStore,
    samples: Sequence[dict[str, np.ndarray]],
    values: Sequence[SSAValue],
    probability_peaks: bool = True,
    subset: TokenSubset | None = None,
) -> Ranges:
    """Run the reference interpreter over the samples on the module as it is, recording the
    ranges of `values` (each must be an operand of some op of @main) and, with
    `probability_peaks`, of every attention's probabilities (float64 scores per head: at 512
    tokens a fifth of calibrating BERT-base); with `subset`, on its token rows only."""
    recorder = _PeakRecorder(store, list(dict.fromkeys(values)), probability_peaks, subset)
    function = main_function(module)
    rows = sample_rows(module) if subset is None else sample_rows(module) * subset.keep // subset.length
    group = max(1, CALIBRATION_BATCH_ROWS // max(1, rows))
    for start in range(0, len(samples), group):
        recorder.run_lockstep(function, samples[start:start + group])
    means = {v: (total / count).astype(np.float32) for v, (total, count) in recorder.channel_sums.items()}
    return Ranges(recorder.peaks, recorder.channel_peaks, means, recorder.probability_peaks)
