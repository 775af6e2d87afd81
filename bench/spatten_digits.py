"""SpAtten on the bundled digits ViT: token / head pruning and accuracy vs dense at settings.

    python bench/spatten_digits.py [--settings "0.9:1,0.7:1,0.6:0.75"] [--images N]
        [--out bench/results/spatten_digits.json]

A setting is token_keep:head_keep, uniform over layers (cascade: layer 0 keeps all, each later
layer keeps that fraction of the survivors). The model is quantized with its bundled
calibration images and run by the INT8 reference interpreter (bit-identical to the binaries:
test/unit/spatten/test_spatten_binary.py) on the held-out test images. Reported: attention
sparsity (fraction of (head, query, key) positions removed: QK and PV MACs saved), mean kept
token and head fractions over layers, accuracy in points; one binary (the first image) on the
hardware model for MACs, cycles and the DRAM bytes of the LSB re-fetches.
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
from esact_cc.tuning.spatten_tuning import SpattenEvaluator, uniform
from esact_cc.tuning.spls_calibration_inputs import CalibrationData


def hardware_numbers(model, calibration: str, setting: tuple[float, float] | None) -> dict:
    extra = {} if setting is None else {
        "sparsity": "spatten",
        "sparsity_option": [f"token_keep={setting[0]}", f"head_keep={setting[1]}"]}
    program = api.compile(model.onnx_path, stage="esact", calibration_data=calibration,
                          **extra).program()
    report = run_program(program, {model.input_name: model.test_images[:1]},
                         resolve_config(None)).report
    total = report["total"]
    return {key: total[key] for key in ("cycles", "macs_executed", "macs_dense")
            if key in total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="0.9:1,0.7:1,0.6:0.75")
    parser.add_argument("--images", type=int, default=0, help="test images (0: all)")
    parser.add_argument("--out", default="bench/results/spatten_digits.json")
    args = parser.parse_args(argv)
    model = load_bundled_model()
    images = model.test_images[: args.images or None]
    labels = model.test_labels[: len(images)]
    settings = [tuple(float(x) for x in s.split(":")) for s in args.settings.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        calibration = str(Path(tmp) / "calibration.npz")
        np.savez(calibration, **{model.input_name: model.calibration_images})
        data = CalibrationData([{model.input_name: image[None]} for image in images],
                               np.asarray(labels), "")
        evaluator = SpattenEvaluator(model.onnx_path, data,
                                     quantize_samples=[{model.input_name: image[None]}
                                                       for image in model.calibration_images])
        rows = []
        dense_hw = hardware_numbers(model, calibration, None)
        for m, setting in zip(evaluator.measure_spatten([uniform(*s) for s in settings]),
                              settings):
            hw = hardware_numbers(model, calibration, setting)
            rows.append({"token_keep": setting[0], "head_keep": setting[1],
                         "sparsity": m.sparsity, "token_fraction": m.token_fraction,
                         "head_fraction": m.head_fraction, "accuracy_points": m.accuracy,
                         "loss_points": m.loss, "first_image_binary": hw})
            print(f"token_keep {setting[0]:g} head_keep {setting[1]:g}: sparsity "
                  f"{m.sparsity:.2%}, tokens kept {m.token_fraction:.2f}, heads kept "
                  f"{m.head_fraction:.2f}, accuracy {m.accuracy:.2f} (dense "
                  f"{m.dense_accuracy:.2f}, loss {m.loss:.2f} points); binary: "
                  f"{hw['macs_executed']:,} of {hw['macs_dense']:,} MACs, {hw['cycles']:,} "
                  f"cycles (dense {dense_hw['cycles']:,})", file=sys.stderr)
    result = {"model": "esact_cc/models/digits_vit.onnx", "images": len(images),
              "dense_accuracy_points": evaluator.dense_accuracy, "dense_binary": dense_hw,
              "rows": rows,
              "command": "python bench/spatten_digits.py " + " ".join(argv or sys.argv[1:])}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
