"""Sanger on the bundled digits ViT: attention sparsity and accuracy vs dense at thresholds.

    python bench/sanger_digits.py [--thresholds 0.002,0.02,0.05] [--images N]
        [--out bench/results/sanger_digits.json]

The model is quantized with its bundled calibration images and run by the INT8 reference
interpreter (bit-identical to the binaries: test/e2e/test_sanger_binary.py) on the held-out
test images. Sparsity = fraction of visible attention scores (every layer, head, query, key)
the Sanger masks remove, so the QK and PV MACs saved; accuracy in points. One binary (the
first image) is also run on the hardware model for the MAC reduction and the cycles of the
report.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from esact_cc import api
from esact_cc.bundled_model import load_bundled_model
from esact_cc.runtime.hw_config import resolve_config
from esact_cc.runtime.run_program import run_program
from esact_cc.tuning.spls_calibration_inputs import CalibrationData
from esact_cc.tuning.sanger_tuning import SangerEvaluator, uniform


def hardware_numbers(model, calibration: str, threshold: float | None) -> dict:
    extra = {} if threshold is None else {"sparsity": "sanger",
                                          "sparsity_option": [f"threshold={threshold}"]}
    program = api.compile(model.onnx_path, stage="esact", calibration_data=calibration,
                          **extra).program()
    report = run_program(program, {model.input_name: model.test_images[:1]},
                         resolve_config(None)).report
    return {"cycles": report["total"]["cycles"],
            "macs_executed": report["total"]["macs_executed"],
            "macs_dense": report["total"]["macs_dense"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", default="0.002,0.02,0.05")
    parser.add_argument("--images", type=int, default=0, help="test images (0: all)")
    parser.add_argument("--out", default="bench/results/sanger_digits.json")
    args = parser.parse_args(argv)
    model = load_bundled_model()
    images = model.test_images[: args.images or None]
    labels = model.test_labels[: len(images)]
    thresholds = [float(t) for t in args.thresholds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        calibration = str(Path(tmp) / "calibration.npz")
        np.savez(calibration, **{model.input_name: model.calibration_images})
        data = CalibrationData([{model.input_name: image[None]} for image in images],
                               np.asarray(labels), "")
        evaluator = SangerEvaluator(model.onnx_path, data,
                                    quantize_samples=[{model.input_name: image[None]}
                                                      for image in model.calibration_images])
        rows = []
        dense_hw = hardware_numbers(model, calibration, None)
        for m, threshold in zip(evaluator.measure_sanger([uniform(t) for t in thresholds]),
                                thresholds):
            hw = hardware_numbers(model, calibration, threshold)
            rows.append({"threshold": threshold, "sparsity": m.sparsity,
                         "accuracy_points": m.accuracy, "loss_points": m.loss,
                         "first_image_binary": hw})
            print(f"threshold {threshold:g}: sparsity {m.sparsity:.2%}, accuracy "
                  f"{m.accuracy:.2f} (dense {m.dense_accuracy:.2f}, loss {m.loss:.2f} points); "
                  f"binary: {hw['macs_executed']:,} of {hw['macs_dense']:,} MACs, "
                  f"{hw['cycles']:,} cycles (dense {dense_hw['cycles']:,})", file=sys.stderr)
    result = {"model": "esact_cc/models/digits_vit.onnx", "images": len(images),
              "dense_accuracy_points": evaluator.dense_accuracy, "dense_binary": dense_hw,
              "rows": rows,
              "command": "python bench/sanger_digits.py " + " ".join(argv or sys.argv[1:])}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
