"""`calibrate`: the analysis before `quantize`, outside passes/ because it runs the interpreter.

Runs the reference interpreter on calibration samples over the FP32 transformer-level IR and
records, on every FP32 `transformer.linear` and `transformer.attention`, the ranges that set its
INT8 scales (esact_cc/calibrated_ranges.py). `quantize` then reads only those attributes, so
`esact-opt -p calibrate{calibration-data=calib.npz} -o cal.mlir` followed later by
`esact-opt cal.mlir -p quantize` needs the samples once.

- `calibration-data`: an `.npz` whose keys are the model's input names and whose leading axis
  indexes samples. Its per-channel input peaks are recorded too (group scales for outlier
  channels).
- Without it: one synthetic input (`synthetic_calibration_input`), with a warning; per-tensor
  ranges only, since group peaks seen on made-up inputs would clip real inputs' outlier
  channels.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue

from esact_cc.calibrated_ranges import AttentionRange, LinearRange, record_range
from esact_cc.dialects import transformer
from esact_cc.dialects.onnx import WeightOp
from esact_cc.passes.weight_store_pass import WeightStorePass
from esact_cc.tuning.calibration import (
    Ranges,
    collect_peaks,
    load_calibration_samples,
    synthetic_calibration_input,
)
from esact_cc.weight_store import WeightStore

SYNTHETIC_WARNING = (
    "warning: no --calibration-data given: activation scales come from one synthetic input "
    "(integer inputs = 1, float inputs ~ N(0, 1), seed 0) and stay per tensor; pass real "
    "samples for accuracy"
)


def gemm_ops_to_calibrate(module: ModuleOp) -> list[Operation]:
    """The FP32 GEMM ops: those `quantize` rewrites."""
    gemm_ops = (transformer.LinearOp, transformer.AttentionOp)
    return [o for o in module.walk() if isinstance(o, gemm_ops) and not o.is_quantized]


def observed_values(op: Operation) -> tuple[SSAValue, ...]:
    """The activations whose ranges set an op's INT8 scales."""
    return (op.x,) if isinstance(op, transformer.LinearOp) else (op.q, op.k, op.v)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CalibratePass(WeightStorePass):
    """Record calibrated activation ranges on the FP32 transformer GEMM ops."""

    name = "calibrate"

    calibration_data: str | None = None
    """Path of an `.npz` of calibration inputs (keys = input names, axis 0 = samples)."""


    def apply(self, ctx: Context, op: ModuleOp) -> None:
        store = self.weights()
        targets = gemm_ops_to_calibrate(op)
        if not targets:
            return
        if self.calibration_data is not None:
            samples = load_calibration_samples(op, self.calibration_data)
        else:
            print(SYNTHETIC_WARNING, file=sys.stderr)
            samples = [synthetic_calibration_input(op)]
        observed = [v for t in targets for v in observed_values(t)]
        ranges = collect_peaks(op, store, samples, observed)
        for target in targets:
            record_range(target, self._range_of(target, ranges, store))

    def _range_of(self, op: Operation, ranges: Ranges, store: WeightStore):
        if isinstance(op, transformer.LinearOp):
            channels = ranges.channel_peaks.get(op.x) if self.calibration_data is not None else None
            name = None
            if channels is not None:
                name = store.add(store.unique_name(_weight_name(op) + ".input_channel_peaks"),
                                 np.asarray(channels, np.float32))
            return LinearRange(ranges.peaks[op.x], name)
        q, k, v = (ranges.peaks[value] for value in observed_values(op))
        return AttentionRange(q, k, v, ranges.probability_peaks.get(op, 1.0))


def _weight_name(op: transformer.LinearOp) -> str:
    owner = op.weight.owner
    return owner.weight_name.data if isinstance(owner, WeightOp) else "linear"
