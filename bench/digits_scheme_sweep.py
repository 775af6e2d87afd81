"""The sweep bench/sanger_digits.py and bench/spatten_digits.py share: a scheme's settings on
the bundled digits ViT, quantized with its bundled calibration images, measured by the
scheme's tuning evaluator (the INT8 reference interpreter, bit-identical to the binaries) on
the held-out test images, and one binary per setting (the first image) on the hardware model.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from esact_cc import api
from esact_cc.bundled_model import load_bundled_model
from esact_cc.runtime.hw_config import resolve_config
from esact_cc.runtime.run_program import run_program
from esact_cc.tuning.spls_calibration_inputs import CalibrationData


@dataclass(frozen=True)
class SweepPoint:
    row: dict[str, float]
    """The setting as the result row names it (e.g. {"threshold": 0.02})."""
    config: Any
    """The tuning evaluator's setting (its module's `uniform(...)`)."""
    options: list[str]
    """The same setting as `--sparsity-option` values, for the binary."""


def hardware_numbers(model, calibration: str, scheme: str | None, options: Sequence[str]) -> dict:
    """Cycles and MACs of the first test image's binary (dense without a scheme)."""
    extra = {} if scheme is None else {"sparsity": scheme, "sparsity_option": list(options)}
    program = api.compile(model.onnx_path, stage="esact", calibration_data=calibration,
                          **extra).program()
    total = run_program(program, {model.input_name: model.test_images[:1]},
                        resolve_config(None)).report["total"]
    return {key: total[key] for key in ("cycles", "macs_executed", "macs_dense")}


def sweep_digits(script: str, scheme: str, evaluator_type: type, measure: str,
                 points: Sequence[SweepPoint], images: int, out: str, argv: Sequence[str],
                 measured: Callable[[Any], dict[str, float]]) -> int:
    """Measure every point, print one line each, write the result JSON to `out`.
    `measured(m)` gives the scheme's own fields of a measurement (beyond sparsity, accuracy
    and loss)."""
    model = load_bundled_model()
    test_images = model.test_images[: images or None]
    labels = model.test_labels[: len(test_images)]
    with tempfile.TemporaryDirectory() as tmp:
        calibration = str(Path(tmp) / "calibration.npz")
        np.savez(calibration, **{model.input_name: model.calibration_images})
        data = CalibrationData([{model.input_name: image[None]} for image in test_images],
                               np.asarray(labels), "")
        evaluator = evaluator_type(model.onnx_path, data,
                                   quantize_samples=[{model.input_name: image[None]}
                                                     for image in model.calibration_images])
        dense_hw = hardware_numbers(model, calibration, None, ())
        rows = []
        results = getattr(evaluator, measure)([p.config for p in points])
        for m, point in zip(results, points):
            hw = hardware_numbers(model, calibration, scheme, point.options)
            own = measured(m)
            rows.append({**point.row, "sparsity": m.sparsity, **own,
                         "accuracy_points": m.accuracy, "loss_points": m.loss,
                         "first_image_binary": hw})
            setting = " ".join(f"{k} {v:g}" for k, v in point.row.items())
            extras = "".join(f", {k} {v:.2f}" for k, v in own.items())
            print(f"{setting}: sparsity {m.sparsity:.2%}{extras}, accuracy {m.accuracy:.2f} "
                  f"(dense {m.dense_accuracy:.2f}, loss {m.loss:.2f} points); binary: "
                  f"{hw['macs_executed']:,} of {hw['macs_dense']:,} MACs, {hw['cycles']:,} "
                  f"cycles (dense {dense_hw['cycles']:,})", file=sys.stderr)
    result = {"model": "esact_cc/models/digits_vit.onnx", "images": len(test_images),
              "dense_accuracy_points": evaluator.dense_accuracy, "dense_binary": dense_hw,
              "rows": rows, "command": f"python {script} " + " ".join(argv)}
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    return 0
