"""Calibrated activation ranges, recorded in the IR as op attributes.

The `calibrate` step (esact_cc/tuning/calibrate_pass.py) runs the reference interpreter on
calibration samples and writes what it saw on each FP32 `transformer.linear` and
`transformer.attention` as the attribute `esact.calibration`; the `quantize` pass reads only
that attribute (and the weight store) to choose INT8 scales, and drops it from the INT8 op it
makes (the scales then say it). The ranges are printed with the IR,
so a dump shows them and a calibrated IR file can be quantized later without the samples:

    transformer.linear %x, %w, %b {esact.calibration = {input_peak = 3.25 : f64}} ...
    transformer.attention ... {esact.calibration = {q_peak = ..., k_peak = ..., v_peak = ...,
                                                    probability_peak = ...}} ...

A linear's per-input-channel peaks (which set group scales for outlier channels) and means (which
correct the bias for the weights' rounding) are tensors, so they go to the weight store and the
attribute names them (`channel_peaks = "<name>"`, `channel_means = "<name>"`); a linear
calibrated on synthetic samples (no calibration data) says so (`synthetic`), which
`quantize{bias-correction=auto}` takes as no real means. Peaks are f64 attributes:
they print exactly, so a round trip through a file gives the same scales.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.dialects.builtin import DictionaryAttr, FloatAttr, StringAttr, UnitAttr, f64
from xdsl.ir import Attribute, Operation

from esact_cc.ir_queries import op_label
from esact_cc.runtime.errors import CompileError

CALIBRATION_ATTR = "esact.calibration"
"""Op attribute holding the calibrated ranges of a GEMM op's activations."""


@dataclass(frozen=True)
class LinearRange:
    input_peak: float
    """max |x| over the samples."""
    channel_peaks: str | None = None
    """Store name of max |x| per input channel (FP32 [in]), or None."""
    channel_means: str | None = None
    """Store name of the mean of x per input channel over all rows (FP32 [in]), or None."""
    synthetic: bool = False
    """The ranges come from synthetic samples (no calibration data was given): `quantize`'s
    bias-correction=auto then leaves the bias alone (synthetic means are not real inputs')."""


@dataclass(frozen=True)
class AttentionRange:
    q_peak: float
    k_peak: float
    v_peak: float
    probability_peak: float | None = None
    """Largest softmax probability over the samples; None when calibrate did not record it
    (`probability-peaks=false`: only quantize's probability-scales=tensor reads it)."""


Range = LinearRange | AttentionRange
_PEAK_FIELDS = {LinearRange: ("input_peak",), AttentionRange: ("q_peak", "k_peak", "v_peak")}
_OPTIONAL_PEAK_FIELDS = {LinearRange: (), AttentionRange: ("probability_peak",)}
_TENSOR_FIELDS = {LinearRange: ("channel_peaks", "channel_means"), AttentionRange: ()}


def record_range(op: Operation, observed: Range) -> None:
    """Write `observed` on `op` as its `esact.calibration` attribute."""
    entries: dict[str, Attribute] = {
        name: FloatAttr(float(getattr(observed, name)), f64)
        for name in (*_PEAK_FIELDS[type(observed)], *_OPTIONAL_PEAK_FIELDS[type(observed)])
        if getattr(observed, name) is not None}
    for name in _TENSOR_FIELDS[type(observed)]:
        if getattr(observed, name) is not None:
            entries[name] = StringAttr(getattr(observed, name))
    if isinstance(observed, LinearRange) and observed.synthetic:
        entries["synthetic"] = UnitAttr()
    op.attributes[CALIBRATION_ATTR] = DictionaryAttr(entries)


def read_range(op: Operation, kind: type[Range]) -> Range | None:
    """The range recorded on `op` (None if it was not calibrated); a malformed attribute (an IR
    file is input) is a one-line error naming the op and the entry."""
    attr = op.attributes.get(CALIBRATION_ATTR)
    if attr is None:
        return None
    where = f"{op_label(op)}: attribute {CALIBRATION_ATTR}"
    if not isinstance(attr, DictionaryAttr):
        raise CompileError(f"{where} must be a dictionary")
    entries = dict(attr.data)
    values: dict[str, float | str | bool | None] = {}
    for name in (*_PEAK_FIELDS[kind], *_OPTIONAL_PEAK_FIELDS[kind]):
        if name in _OPTIONAL_PEAK_FIELDS[kind] and name not in entries:
            continue
        value = entries.pop(name, None)
        if not isinstance(value, FloatAttr) or not value.value.data >= 0:
            raise CompileError(f"{where}: '{name}' must be a float >= 0")
        values[name] = float(value.value.data)
    for name in _TENSOR_FIELDS[kind]:
        if name in entries:
            handle = entries.pop(name)
            if not isinstance(handle, StringAttr):
                raise CompileError(f"{where}: '{name}' must be a weight-store name (string)")
            values[name] = handle.data
    if kind is LinearRange and "synthetic" in entries:
        if not isinstance(entries.pop("synthetic"), UnitAttr):
            raise CompileError(f"{where}: 'synthetic' must be a unit attribute (no value)")
        values["synthetic"] = True
    if entries:
        raise CompileError(f"{where}: unknown entry '{sorted(entries)[0]}'")
    return kind(**values)  # type: ignore[arg-type]
