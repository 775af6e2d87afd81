"""`quantize`: INT8 post-training quantization of the GEMM-bearing `transformer` ops.

Gives every FP32 `transformer.linear` an INT8 weight and its scales, and every FP32
`transformer.attention` its Q, K, V and probability scales (the same ops, their INT8 form; masks
they carry are kept); layer norm, GELU, softmax and residual add stay FP32 (the SFU runs them
in FP32).

- Weights: symmetric per output channel, scale[c] = max|W[:, c]| / 127, stored in the weight
  store as `<name>.int8` (INT8 [in, out]) and `<name>.scale` (FP32 [out]); the IR gets handles.
- Bias correction (`bias-correction`, default `auto`: where the ranges came from calibration
  data): the weights' rounding shifts a linear's output by mean(x) @ (W_int8 * scale - W) on
  average; the calibrated input channel means give that shift, and the bias (a new one where
  the linear had none) absorbs it, stored as `<bias>.corrected`. It costs nothing on the
  hardware (the DEQUANT adds a bias either way; one bias vector load where there was none).
- Activations: symmetric per tensor, scale = max|x| / 127 over the calibration samples, for the
  input of every linear and the Q, K, V of every attention. A linear input whose peak is more
  than `outlier-ratio` times its median channel-group peak gets one scale per group of
  `group-size` channels instead (`input_group_scales`); from the input's channel peaks
  calibration recorded. With `activation-scales=token` (the default, with or without
  calibration data) a linear's input gets no calibrated scale: the SFU computes one per row
  (token) at run time from the row's max |x| (QUANT_ROWS; per row of each group run when the
  input also has group scales), for inputs whose rows differ in range (padding rows, a few
  large-norm tokens) more than one tensor scale covers; `tensor` keeps the calibrated scale.
  Softmax probabilities (`probability-scales`): `row` (the default) quantizes each query row
  with the scale its largest probability sets (QUANT_ROWS after SOFTMAX; the output DEQUANT
  multiplies it back per row), `tensor` uses one calibrated scale per attention: the
  calibrated largest probability (x2 headroom, at most 1) over 127 (`probability_scale`).
  One scale cannot serve both a head's peaked rows (p near 1 on [CLS] / [SEP]) and its
  diffuse rows over hundreds of keys (p near 1 / L, below half a step of 1/127: rounded to
  0): a trained MiniLM at 512 tokens loses its attention to that (docs/design.md section 3).
- The ranges are the `esact.calibration` attributes the `calibrate` step recorded on each op
  (esact_cc/calibrated_ranges.py; the step runs the interpreter, outside passes/): an FP32 GEMM
  op without them is an error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from esact_cc.dialects import transformer
from esact_cc.dialects.gemm_ops import DEFAULT_P_SCALE, INT8_MAX, POSITION_TERMS, LinearOp
from esact_cc.dialects.onnx import WeightOp
from esact_cc.runtime.errors import CompileError
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType, f32, i8
from xdsl.ir import Operation, SSAValue
from xdsl.rewriter import Rewriter

from esact_cc import typed_options
from esact_cc.calibrated_ranges import CALIBRATION_ATTR, AttentionRange, LinearRange, read_range
from esact_cc.ir_queries import op_label
from esact_cc.passes.weight_store_pass import WeightStorePass
from esact_cc.typed_options import option
from esact_cc.weight_store import WeightStore

COALESCE_RATIO = 2.0
"""Neighbouring input groups whose ranges differ less than this share one scale (one run)."""
PROBABILITY_MARGIN = 2.0
"""Headroom over the calibrated largest attention probability (inputs differ from the samples)."""
ACTIVATION_SCALES = ("tensor", "token")
"""Values of quantize's activation-scales option (linear inputs: calibrated or per row)."""
PROBABILITY_SCALES = ("row", "tensor")
"""Values of quantize's probability-scales option (per query row at run time, or calibrated)."""
BIAS_CORRECTION = ("auto", "on", "off")
"""Values of quantize's bias-correction option (auto: where real calibration data set the
input means)."""


def symmetric_scale(peak: float) -> float:
    """Per-tensor scale mapping `peak` to 127 (1.0 for an all-zero tensor, and for a peak so
    small that peak / 127 underflows float32: its values all round to 0 either way)."""
    scale = np.float32(peak / INT8_MAX) if np.isfinite(peak) else np.float32(0)
    return float(scale) if scale > 0 else 1.0


WEIGHT_CHUNK_ELEMENTS = 1 << 16
"""Elements per row chunk `per_channel_weight` rounds at a time (256 KB of float32: the
divide, round and clip passes stay in cache; whole-matrix temporaries made BERT-base's 85M
weights 0.33 s CPU, 0.22 in chunks)."""


def per_channel_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """INT8 weight [in, out] and FP32 scale [out], symmetric per output channel."""
    w = np.asarray(weight, np.float32)
    if w.ndim != 2 or not w.size:
        peak = np.max(np.abs(w), axis=0)
    else:  # max |w| exactly, without an |w| copy
        peak = np.maximum(w.max(axis=0), -w.min(axis=0))
    scale = np.where(peak > 0, peak / np.float32(INT8_MAX), np.float32(1)).astype(np.float32)
    if w.ndim != 2:
        return np.clip(np.rint(w / scale), -INT8_MAX, INT8_MAX).astype(np.int8), scale
    q = np.empty(w.shape, np.int8)
    step = max(1, WEIGHT_CHUNK_ELEMENTS // max(1, w.shape[1]))
    chunk = np.empty((min(step, w.shape[0]), w.shape[1]), np.float32)
    for start in range(0, w.shape[0], step):  # the same element-wise steps, a chunk at a time
        part = chunk[:min(step, w.shape[0] - start)]
        np.divide(w[start:start + step], scale, out=part)
        np.rint(part, out=part)
        np.clip(part, -INT8_MAX, INT8_MAX, out=part)
        q[start:start + step] = part
    return q, scale


def _location_text(op: Operation) -> str:
    loc = getattr(op, "location", None)
    return f" at {loc}" if loc is not None else ""


class _WeightQuantizer:
    """Adds the INT8 forms of weights to the store, once per source weight."""

    def __init__(self, store: WeightStore):
        self.store = store
        self.done: dict[str, tuple[str, str]] = {}

    def quantize(self, name: str) -> tuple[str, str]:
        if name not in self.done:
            q, scale = per_channel_weight(self.store[name])
            self.done[name] = (
                self.store.add(self.store.unique_name(name + ".int8"), q),
                self.store.add(self.store.unique_name(name + ".scale"), scale),
            )
        return self.done[name]


def _weight_name(op: Operation, value: SSAValue) -> str:
    owner = value.owner
    if not isinstance(owner, WeightOp):
        raise CompileError(f"{op.name}{_location_text(op)}: weight must be a weight-store handle")
    return owner.weight_name.data


def _handle(rewriter_anchor: Operation, name: str, shape: tuple[int, ...], element) -> SSAValue:
    op = WeightOp(name, TensorType(element, shape))
    Rewriter.insert_op(op, _before(rewriter_anchor))
    return op.result


def _before(op: Operation):
    from xdsl.rewriter import InsertPoint

    return InsertPoint.before(op)


@dataclass(frozen=True)
class QuantizePass(WeightStorePass):
    """FP32 transformer.linear / transformer.attention -> their INT8 forms (same ops)."""

    name = "quantize"

    group_size: int = 32
    """Input channels per scale group for linears whose input has outlier channels (0: never)."""

    outlier_ratio: float = 3.0
    """A linear input gets group scales when its peak exceeds the median group peak this much."""

    group_margin: float = 1.5
    """Headroom of group scales over the calibrated group peaks (capped at the tensor's peak):
    calibration samples do not show every group's extremes."""

    activation_scales: str = option("token", choices=ACTIVATION_SCALES)
    """Linear inputs: `tensor` (one calibrated scale, or one per channel group) or `token` (one
    per row, computed by the SFU at run time), the default: the more accurate with and without
    calibration data (docs/design.md section 3, README "INT8 calibration": measurements)."""

    bias_correction: str = option("auto", choices=BIAS_CORRECTION)
    """Fold the weights' mean rounding error into each linear's bias from the calibrated input
    means: `on`, `off`, or `auto` (the default): where the means come from calibration data,
    not from the synthetic samples (whose means are not real inputs')."""

    probability_scales: str = option("row", choices=PROBABILITY_SCALES)
    """Softmax probabilities: `row` (one scale per query row from its largest probability,
    QUANT_ROWS at run time; the default) or `tensor` (one calibrated scale per attention)."""

    def __post_init__(self) -> None:
        typed_options.validate(self, "quantize")

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        store = self.weights()
        gemm_ops = (transformer.LinearOp, transformer.AttentionOp)
        targets = [o for o in op.walk() if isinstance(o, gemm_ops) and not o.is_quantized]
        ranges = [_calibrated(t) for t in targets]  # all checked before any rewrite
        weights = _WeightQuantizer(store)
        for t, observed in zip(targets, ranges):
            if isinstance(observed, LinearRange):
                channels = None if observed.channel_peaks is None else store[observed.channel_peaks]
                groups = input_group_scales(channels, self.group_size, self.outlier_ratio,
                                            self.group_margin)
                scale = (None if self.activation_scales == "token"
                         else symmetric_scale(observed.input_peak))
                means = self._input_means(t, observed, store)
                _rewrite_linear(t, weights, scale, groups, store, means)
            else:
                p_scale = None if self.probability_scales == "row" else probability_scale(
                    _probability_peak(t, observed))
                _rewrite_attention(t, *(symmetric_scale(p) for p in
                                        (observed.q_peak, observed.k_peak, observed.v_peak)),
                                   p_scale, store)


    def _input_means(self, op: transformer.LinearOp, observed: LinearRange,
                     store: WeightStore) -> np.ndarray | None:
        """The calibrated input channel means the bias correction uses, or None for none."""
        if self.bias_correction == "off" or (self.bias_correction == "auto" and observed.synthetic):
            return None
        if observed.channel_means is None:
            if self.bias_correction == "on":
                raise CompileError(f"quantize: bias-correction=on but {op_label(op)} has no "
                                   "calibrated input means (channel_means in esact.calibration): "
                                   "calibrate it again")
            return None  # auto on ranges recorded before means were: nothing to correct with
        where = f"quantize: {op_label(op)}: calibrated channel_means '{observed.channel_means}'"
        if observed.channel_means not in store:
            raise CompileError(f"{where} is not in the weight store")
        means = store[observed.channel_means]
        k = op.weight.type.get_shape()[0]  # type: ignore[attr-defined]
        if means.shape != (k,) or not np.isfinite(means).all():
            raise CompileError(f"{where} must be {k} finite values (the input channels), got "
                               f"shape {list(means.shape)}")
        return means


def _calibrated(op: transformer.LinearOp | transformer.AttentionOp) -> LinearRange | AttentionRange:
    """The ranges `calibrate` recorded on `op`."""
    kind = LinearRange if isinstance(op, transformer.LinearOp) else AttentionRange
    observed = read_range(op, kind)
    if observed is None:
        raise CompileError(f"quantize: {op_label(op)} has no calibrated ranges (attribute "
                           "esact.calibration): run the calibrate step first (esact-opt -p "
                           "calibrate,quantize)")
    return observed


def _probability_peak(op: transformer.AttentionOp, observed: AttentionRange) -> float:
    """The calibrated largest probability probability-scales=tensor needs."""
    if observed.probability_peak is None:
        raise CompileError(f"quantize: probability-scales=tensor but {op_label(op)} was calibrated "
                           "without its probability peak (calibrate{probability-peaks=false}): "
                           "calibrate it again with probability-peaks=true")
    return observed.probability_peak


def input_group_scales(
    channel_peaks: np.ndarray | None, group_size: int, outlier_ratio: float, margin: float = 1.0
) -> np.ndarray | None:
    """Per-group input scales when a few channels carry far larger values than the rest (the
    outlier channels of trained BERT-family FFNs): one per-tensor scale would leave the other
    channels with a handful of INT8 levels. None when per-tensor quantization is fine."""
    if channel_peaks is None or group_size <= 0 or channel_peaks.size <= group_size:
        return None
    count = -(-channel_peaks.size // group_size)
    padded = np.zeros(count * group_size, np.float32)
    padded[: channel_peaks.size] = channel_peaks
    group_peaks = padded.reshape(count, group_size).max(axis=1)
    median = float(np.median(group_peaks))
    if median <= 0 or float(group_peaks.max()) <= outlier_ratio * median:
        return None
    peak = float(group_peaks.max())
    bounds = np.minimum(peak, margin * group_peaks)
    # Coalesce neighbours whose bounds are within COALESCE_RATIO of each other into one run with
    # the run's largest bound: each run costs the SFU a DEQUANT and an ADD per output tile, and
    # a factor of 2 in scale costs at most one bit of the run's quieter groups.
    start = 0
    for g in range(1, count + 1):
        if g == count or max(bounds[start:g + 1]) > COALESCE_RATIO * min(bounds[start:g + 1]):
            bounds[start:g] = bounds[start:g].max()
            start = g
    return np.array([symmetric_scale(float(b)) for b in bounds], np.float32)


def corrected_bias(weight: np.ndarray, weight_int8: np.ndarray, weight_scale: np.ndarray,
                   bias: np.ndarray | None, input_means: np.ndarray) -> np.ndarray:
    """The bias minus the mean output shift the weights' rounding causes: mean(x) @ (W_int8 *
    scale - W), in float64, rounded once to FP32."""
    error = (np.asarray(weight_int8, np.float64) * np.asarray(weight_scale, np.float64)
             - np.asarray(weight, np.float64))
    shift = np.asarray(input_means, np.float64) @ error
    base = 0.0 if bias is None else np.asarray(bias, np.float64)
    return (base - shift).astype(np.float32)


def _bias_corrected(op: transformer.LinearOp, store: WeightStore, q_name: str, s_name: str,
                    means: np.ndarray) -> SSAValue:
    """A handle to `op`'s bias corrected for its weight's rounding (a new store entry)."""
    weight_name = _weight_name(op, op.weight)
    bias_name = None if op.bias is None else _weight_name(op, op.bias)
    bias = corrected_bias(store[weight_name], store[q_name], store[s_name],
                          None if bias_name is None else store[bias_name], means)
    name = store.add(store.unique_name((bias_name or weight_name + ".bias") + ".corrected"), bias)
    return _handle(op, name, bias.shape, f32)


def _rewrite_linear(
    op: transformer.LinearOp,
    weights: _WeightQuantizer,
    input_scale: float | None,
    groups: np.ndarray | None = None,
    store: WeightStore | None = None,
    input_means: np.ndarray | None = None,
) -> None:
    w_type = op.weight.type
    assert isinstance(w_type, TensorType)
    k, n = w_type.get_shape()
    q_name, s_name = weights.quantize(_weight_name(op, op.weight))
    w_q = _handle(op, q_name, (k, n), i8)
    w_s = _handle(op, s_name, (n,), f32)
    old_weight, old_bias, bias = op.weight, op.bias, op.bias
    if input_means is not None and store is not None:
        bias = _bias_corrected(op, store, q_name, s_name, input_means)
    group_name = None
    if groups is not None and store is not None:
        group_name = store.add(store.unique_name(q_name.removesuffix(".int8") + ".input_group_scales"), groups)
    group_size = None if groups is None else -(-k // len(groups))
    new = LinearOp(op.x, w_q, bias, op.result.type, weight_scale=w_s, input_scale=input_scale,
                   group_scales=group_name, group_size=group_size,
                   token_scales=input_scale is None, rows=op.rows, keys=op.keys,
                   heads=None if op.heads is None else op.heads.value.data)
    new.location = op.location
    new.attributes.update(op.attributes)
    new.attributes.pop(CALIBRATION_ATTR)  # consumed: the scales now say it
    Rewriter.replace_op(op, new)
    _erase_if_dead(old_weight)
    if old_bias is not None and old_bias is not bias:
        _erase_if_dead(old_bias)


def probability_scale(peak: float) -> float:
    """INT8 scale of softmax probabilities: the calibrated peak times a margin, at most 1, over
    127. Attention over many keys is diffuse (peaks of 0.02 over 197 ViT tokens), where 1/127
    would round most probabilities to 0; a probability above the scale's range saturates."""
    return float(np.float32(min(1.0, PROBABILITY_MARGIN * peak) / INT8_MAX)) if peak > 0 else DEFAULT_P_SCALE


def _rewrite_attention(
    op: transformer.AttentionOp, q_scale: float, k_scale: float, v_scale: float,
    p_scale: float | None, store: WeightStore,
) -> None:
    # Disentangled position tables (constants): INT8 per tensor, scaled by their own peak.
    positions = op.positions()
    for term in POSITION_TERMS:
        table = positions[f"{term}_table"]
        if isinstance(table, SSAValue) and isinstance(table.owner, WeightOp):
            peak = float(np.abs(store[table.owner.weight_name.data]).max(initial=0.0))
            positions[f"{term}_scale"] = symmetric_scale(peak)
    new = op.with_operands_of(scales=(q_scale, k_scale, v_scale, p_scale), positions=positions)
    new.location = op.location
    new.attributes.update(op.attributes)
    new.attributes.pop(CALIBRATION_ATTR)  # consumed: the scales now say it
    Rewriter.replace_op(op, new)


def _erase_if_dead(value: SSAValue) -> None:
    owner = value.owner
    if isinstance(owner, WeightOp) and not owner.result.uses:
        Rewriter.erase_op(owner)
