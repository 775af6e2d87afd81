"""Where a fine-tuned digits ViT's SPLS loss comes from, layer by layer (issue 14, done-when 1).

On all 360 test images (INT8 reference interpreter, ranges from digits_calib.npz): the uniform
setting of the fine-tuning protocol (`hlog-bits=6 window=8 first-reference=1`) at `--threshold`,
then the same with ONE layer's SPLS off (`prediction=off`: that layer exactly dense, no
prediction cost), for every SPLS layer: the accuracy that layer's reuse costs and the share of
the dense program (dead-row eliminated, prediction at 0.1 MAC per HLog product) it removes.
Losses in points against the BUNDLED model's dense INT8 accuracy. A diagnosis on the reported
images, not a choice: nothing here is tuned on them.

    python bench/spls_finetune_layer_limits.py --model FT.onnx [--threshold 0.8] -o OUT.json

Needs the `models` extra (onnx, scikit-learn for the splits).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spls_finetune import MODELS, digits_splits, log, program_macs, totals  # noqa: E402

SETTING = {"hlog-bits": 6, "window": 8, "first-reference": 1}


def evaluator(model: Path, test: tuple, int8: list[dict]) -> Any:
    from esact_cc.tuning.spls_calibration_inputs import CalibrationData
    from esact_cc.tuning.spls_measurement import SplsEvaluator

    data = CalibrationData([{"pixel_values": img[None]} for img in test[0]], test[1], "test")
    return SplsEvaluator(str(model), data, "logits", quantize_samples=int8)


def main(argv: list[str] | None = None) -> int:
    from esact_cc.sparsity.spls_options import SplsConfig
    from esact_cc.tuning.spls_measurement import uniform_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    start = time.process_time()
    splits = digits_splits()
    test = splits["test"]
    int8 = [{"pixel_values": img[None]} for img in splits["calib"][0]]
    bundled = MODELS / "digits_vit.onnx"
    macs = {"program_dense": program_macs(bundled, test[0][0]),
            "full_dense": program_macs(bundled, test[0][0], dead_rows=False)}
    reference = evaluator(bundled, test, int8).dense_accuracy
    studied = evaluator(args.model, test, int8)
    base = uniform_config(**SETTING, threshold=args.threshold)
    layers = studied.layer_indices(base)
    configs = [base] + [SplsConfig(options=dict(base.options),
                                   layers={i: {"prediction": "off"}}) for i in layers]
    rows = []
    for label, m in zip(["all layers"] + [f"layer {i} dense" for i in layers],
                        studied.measure(configs)):
        work = m.work.as_dict()
        rows.append({"setting": label, "accuracy": m.accuracy,
                     "loss_points": reference - m.accuracy,
                     "reused_fraction_per_layer": work["reused_fraction_per_layer"],
                     **totals(work | {"inputs": len(test[1])}, **macs)})
        log(f"{label}: accuracy {m.accuracy:.2f} (loss {reference - m.accuracy:.2f}), removed "
            f"{rows[-1]['vs_dense_program']:.1%}, reused per layer "
            f"{[round(r, 3) for r in work['reused_fraction_per_layer']]}")
    report = {"model": str(args.model), "threshold": args.threshold, "setting": SETTING,
              "bundled_dense_int8_accuracy": reference,
              "dense_int8_accuracy": studied.dense_accuracy, "spls_layers": layers,
              "rows": rows, "program_macs": macs,
              "cpu_seconds": time.process_time() - start,
              "command": "python bench/spls_finetune_layer_limits.py " + " ".join(
                  argv if argv is not None else sys.argv[1:])}
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    log(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
