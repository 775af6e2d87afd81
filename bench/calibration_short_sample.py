"""Are the ranges of a shorter synthetic sample as good for a long-sequence program? (issue 16)

Calibrating a 512-token program costs one FP32 forward of 512 rows (1 synthetic sample: the
rows budget SYNTHETIC_CALIBRATION_ROWS is 256, but one sample is the least). This measures the
lever "a 256-token sample for a 512 program": the model exported at --short tokens (same
weights) is calibrated on `--short-samples` synthetic samples, and its recorded ranges are put
on the --seq program op for op (the GEMM ops come in the same order: same graph, other length);
that program is quantized with them (the default's token subset computes exactly the ranges of
1 short sample: esact_cc/tuning/calibration_token_subset.py). Compared with every row of the
--seq program's own sample (`synthetic_samples=1`, the default before the subset): the calibrate
step's CPU seconds, the worst and mean cosine of the INT8
program (the reference interpreter, which the binary equals bit for bit) to onnxruntime's FP32
output on `--inputs` tokenized inputs (calibration_rows_budget.py's model-card text, over the
real tokens), and what the hardware model charges for the program on the first input (cycles,
on-chip energy, instructions).

    python bench/calibration_short_sample.py --model bert|minilm --onnx /tmp/w/m512.onnx
        --short-onnx /tmp/w/m256.onnx --seq 512 --short 256 [--short-samples 1 2] [--inputs 4]
        [--json bench/results/calibration_short_sample_bert_h3_s13.json]

Missing models are exported as calibration_rows_budget.py exports them (torch, transformers).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibration_rows_budget import cosine, export_model, fp32_references


def captured_ranges(onnx: Path, samples: int) -> tuple[list, float]:
    """The Ranges the calibrate step of `onnx`'s compile records, as lists in op order, and
    its CPU seconds."""
    from esact_cc import api
    from esact_cc.tuning import calibrate_pass

    captured: dict = {}
    original = calibrate_pass.collect_peaks

    def capture(module, store, samples_, values, probability_peaks=True, subset=None):  # type: ignore[no-untyped-def]
        start = time.process_time()
        ranges = original(module, store, samples_, values, probability_peaks, subset)
        captured["seconds"] = time.process_time() - start
        order = list(dict.fromkeys(values))
        captured["values"] = [(ranges.peaks[v], ranges.channel_peaks.get(v),
                               ranges.channel_means.get(v)) for v in order]
        return ranges

    calibrate_pass.collect_peaks = capture
    try:
        api.compile(onnx, stage="quantized", synthetic_samples=samples)
    finally:
        calibrate_pass.collect_peaks = original
    return captured["values"], captured["seconds"]


def compile_with(onnx: Path, transplanted: list | None, stage: str):  # -> CompiledModel
    """`onnx` compiled to `stage`, its calibrate step recording `transplanted` (None: its own)."""
    from esact_cc import api
    from esact_cc.tuning import calibrate_pass
    from esact_cc.tuning.calibration import Ranges

    original = calibrate_pass.collect_peaks

    def replace(module, store, samples_, values, probability_peaks=True, subset=None):  # type: ignore[no-untyped-def]
        order = list(dict.fromkeys(values))
        if len(order) != len(transplanted):
            raise SystemExit(f"{len(order)} observed values here, {len(transplanted)} in the short model")
        peaks, channels, means = {}, {}, {}
        for value, (peak, channel, mean) in zip(order, transplanted):
            peaks[value] = peak
            if channel is not None:
                width = value.type.get_shape()[-1]
                if channel.shape != (width,):
                    raise SystemExit(f"channel peaks of width {channel.shape} for a value of width {width}")
                channels[value], means[value] = channel, mean
        return Ranges(peaks, channels, means, {})

    if transplanted is not None:
        calibrate_pass.collect_peaks = replace
    try:  # 1 sample chosen: every row of it (the default computes a token subset since 13th stop)
        return api.compile(onnx, stage=stage, synthetic_samples=1)
    finally:
        calibrate_pass.collect_peaks = original


def measure(onnx: Path, transplanted: list | None, inputs: list, references: list,
            outputs: list[str], seq: int) -> dict:
    quantized = compile_with(onnx, transplanted, "quantized")
    cosines: dict[str, list[float]] = {name: [] for name in outputs}
    for x, reference in zip(inputs, references):
        got = quantized.run(x)
        real = x["attention_mask"][0].astype(bool)
        for name in outputs:
            a, b = got[name], reference[name]
            per_token = a.ndim == 3 and a.shape[1] == seq
            cosines[name].append(cosine(a[0, real] if per_token else a, b[0, real] if per_token else b))
    del quantized
    program = compile_with(onnx, transplanted, "esact")
    report = program.simulate(inputs[0]).report
    row = {"cycles": report["total"]["cycles"],
           "energy_on_chip_pj": report["energy"]["on_chip"]["energy_pj"],
           "instructions": sum(unit["instructions"] for unit in report["units"].values())}
    for name, values in cosines.items():
        row[name] = {"cosine_min": min(values), "cosine_mean": float(np.mean(values)), "cosines": values}
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("bert", "minilm"), required=True)
    parser.add_argument("--onnx", required=True, type=Path, help="the --seq model (exported if missing)")
    parser.add_argument("--short-onnx", required=True, type=Path, help="the --short model (exported if missing)")
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--short", type=int, default=256)
    parser.add_argument("--short-samples", type=int, nargs="+", default=[1])
    parser.add_argument("--inputs", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    for path, seq in ((args.onnx, args.seq), (args.short_onnx, args.short)):
        if not path.exists():
            export_model(args.model, seq, path)
    inputs, outputs, references = fp32_references(args.onnx, args.seq, args.inputs)
    _, own_seconds = captured_ranges(args.onnx, 1)
    rows = [{"ranges": f"own: 1 sample of {args.seq} tokens", "calibrate_cpu_s": round(own_seconds, 2),
             **measure(args.onnx, None, inputs, references, outputs, args.seq)}]
    for samples in args.short_samples:
        short, seconds = captured_ranges(args.short_onnx, samples)
        rows.append({"ranges": f"{samples} sample(s) of {args.short} tokens",
                     "calibrate_cpu_s": round(seconds, 2),
                     **measure(args.onnx, short, inputs, references, outputs, args.seq)})
    for row in rows:
        print(f"{row['ranges']}: calibrate {row['calibrate_cpu_s']} s CPU, {row['cycles']} cycles, "
              f"{row['energy_on_chip_pj'] / 1e6:.3f} uJ on chip, {row['instructions']} instructions; "
              + "; ".join(f"{n} cosine min {row[n]['cosine_min']:.6f} mean {row[n]['cosine_mean']:.6f}"
                          for n in outputs), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "seq": args.seq, "short": args.short,
                                         "input_lengths": [int(x["attention_mask"].sum()) for x in inputs],
                                         "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
