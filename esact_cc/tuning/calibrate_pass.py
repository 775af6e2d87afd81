"""`calibrate`: the analysis before `quantize`, outside passes/ because it runs the interpreter.

Runs the reference interpreter on calibration samples over the FP32 transformer-level IR and
records, on every FP32 `transformer.linear` and `transformer.attention`, the ranges that set its
INT8 scales (esact_cc/calibrated_ranges.py). `quantize` then reads only those attributes, so
`esact-opt -p calibrate{calibration-data=calib.npz} -o cal.mlir` followed later by
`esact-opt cal.mlir -p quantize` needs the samples once.

- `calibration-data`: an `.npz` whose keys are the model's input names and whose leading axis
  indexes samples.
- Without it: `synthetic-samples` samples drawn from the model's own input domain
  (esact_cc/tuning/synthetic_calibration.py), with a warning. Tokens drawn over the whole
  vocabulary show the structural outlier channels of trained models as real text does, so
  their per-channel peaks are recorded too (bench/int8_without_calibration.py: MiniLM's sentence
  embedding 0.981 -> 0.994); the former single all-ones input did not, and clipped them.
Every linear's per-input-channel peaks (quantize's group scales for outlier channels, with
headroom `group-margin`) and means (quantize's bias correction) are recorded.
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
from esact_cc.runtime.errors import CompileError
from esact_cc.tuning.calibration import (
    Ranges,
    collect_peaks,
    load_calibration_samples,
    sample_rows,
    token_subset_plan,
)
from esact_cc.tuning.calibration_token_subset import TokenSubset
from esact_cc.tuning.synthetic_calibration import (
    DEFAULT_SYNTHETIC_SAMPLES,
    SYNTHETIC_CALIBRATION_ROWS,
    default_sample_count,
    synthetic_calibration_samples,
)
from esact_cc.weight_store import WeightStore

SYNTHETIC_WARNING = (
    "warning: no --calibration-data given: activation ranges come from {count} synthetic "
    "input(s) drawn from the model's input domain (token ids uniform over the embedding "
    "vocabulary, masks 1, segment ids 0, float inputs ~ N(0, 1); seed 0); pass real samples "
    "for the best INT8 accuracy{policy}"
)
ROWS_POLICY_NOTE = ("; {count} sample(s) of {rows} rows{computed}: the default covers {budget} "
                    "activation rows (--synthetic-samples N to choose; N computes every row)")
"""Said when the rows budget (not DEFAULT_SYNTHETIC_SAMPLES) set the count."""


def _computed_rows(subset: TokenSubset | str | None) -> str:
    """What the warning says of a sample longer than the rows budget: the token rows computed
    (calibration_token_subset.py), or why all of them."""
    if isinstance(subset, TokenSubset):
        return f", the first {subset.keep} of {subset.length} token rows computed"
    return "" if subset is None else f", all computed ({subset})"


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

    synthetic_samples: int | None = None
    """Samples of the synthetic default (without calibration-data; None: enough to cover
    SYNTHETIC_CALIBRATION_ROWS activation rows, at most 8, `default_sample_count`, and one
    sample of more rows computed on its first token rows, calibration_token_subset.py; a
    number given: every row of that many samples)."""

    probability_peaks: bool = True
    """Record each attention's largest softmax probability, which only quantize's
    probability-scales=tensor reads; the compile pipeline leaves it out under the default
    per-row scales (float64 scores of every head: 0.43 s of BERT-base's 2.5 s at 512 tokens)."""


    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.synthetic_samples is not None and self.synthetic_samples < 1:
            raise CompileError(f"calibrate: synthetic-samples must be >= 1, got {self.synthetic_samples}")
        if self.calibration_data is not None and self.synthetic_samples is not None:
            raise CompileError("calibrate: synthetic-samples applies only without "
                               "calibration-data (both given)")
        store = self.weights()
        targets = gemm_ops_to_calibrate(op)
        if not targets:
            return
        observed = [v for t in targets for v in observed_values(t)]
        subset = None
        if self.calibration_data is not None:
            samples = load_calibration_samples(op, self.calibration_data)
        else:
            count, policy = self.synthetic_samples, ""
            if count is None:
                rows = sample_rows(op)
                count = default_sample_count(rows)
                if count < DEFAULT_SYNTHETIC_SAMPLES:
                    subset = token_subset_plan(op, observed, SYNTHETIC_CALIBRATION_ROWS)
                    policy = ROWS_POLICY_NOTE.format(count=count, rows=rows, computed=_computed_rows(subset),
                                                     budget=SYNTHETIC_CALIBRATION_ROWS)
            print(SYNTHETIC_WARNING.format(count=count, policy=policy), file=sys.stderr)
            samples = synthetic_calibration_samples(op, count)
        ranges = collect_peaks(op, store, samples, observed, self.probability_peaks,
                               subset if isinstance(subset, TokenSubset) else None)
        for target in targets:
            record_range(target, self._range_of(target, ranges, store))

    def _range_of(self, op: Operation, ranges: Ranges, store: WeightStore):
        if isinstance(op, transformer.LinearOp):
            names = {}
            for field, per_channel in (("channel_peaks", ranges.channel_peaks),
                                       ("channel_means", ranges.channel_means)):
                if op.x in per_channel:
                    names[field] = store.add(
                        store.unique_name(f"{_weight_name(op)}.input_{field}"),
                        np.asarray(per_channel[op.x], np.float32))
            return LinearRange(ranges.peaks[op.x], **names,
                               synthetic=self.calibration_data is None)
        q, k, v = (ranges.peaks[value] for value in observed_values(op))
        return AttentionRange(q, k, v, ranges.probability_peaks.get(op, 1.0)
                              if self.probability_peaks else None)


def _weight_name(op: transformer.LinearOp) -> str:
    owner = op.weight.owner
    return owner.weight_name.data if isinstance(owner, WeightOp) else "linear"
