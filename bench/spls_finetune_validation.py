"""Fine-tuning recipes for the digits ViT compared on their VALIDATION images only (issue 14,
done-when 1; docs/design.md 6.1, "Thirteenth stop").

The validation images are the last 144 of the 1437 fine-tuning inputs (digits_calib.npz's 256,
then the other training images; esact-finetune --validation 144 holds them apart to pick the
epoch): never trained on by the fine-tuning, never a test image, so a recipe chosen here has
not seen the images the protocol (bench/spls_digits_protocol.py) reports on. The bundled
model was trained on them (it is right on all 144): they measure how well a recipe keeps the
bundled model's function, not its accuracy on unseen digits.

Per model (INT8 reference interpreter, ranges from digits_calib.npz, as esact-cc is given):
dense accuracy and the KL of its dense logits to the bundled model's (how far the dense
function moved); per uniform threshold (hlog-bits 6, window 8, first-reference 1): accuracy,
the predictions that differ from the bundled model's dense ones, the margin price (the dense
top class's margin eroded, priced as flips: margin_loss.py, a continuous stand-in for the
flips 144 images cannot resolve), and the share of the dense program removed. Per recipe
(models named RECIPE/sSEED): mean and spread over its seeds.

    python bench/spls_finetune_validation.py --model T4/s0=FILE.onnx ... [-o OUT.json]
      -> bench/results/spls_finetune_validation_s13.json

Needs scikit-learn (the `models` extra); torch only to make the models.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spls_digits_protocol import BUNDLED, VALIDATION, file_hash
from spls_finetune import RESULTS, digits_splits, log, program_macs, totals

THRESHOLDS = (0.9, 0.85, 0.8, 0.75)


def validation_split() -> tuple[tuple[np.ndarray, np.ndarray], list[dict]]:
    """The fine-tuning's validation images and labels (finetune_digits' input order with
    the calibration images first), and the INT8 range samples."""
    splits = digits_splits()
    images = np.concatenate([splits["calib"][0], splits["finetune"][0]])
    labels = np.concatenate([splits["calib"][1], splits["finetune"][1]])
    int8 = [{"pixel_values": img[None]} for img in splits["calib"][0]]
    return (images[-VALIDATION:], labels[-VALIDATION:]), int8


def kl_to(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """Mean KL(softmax(reference) || softmax(outputs)) over the inputs (temperature 1)."""
    total = 0.0
    for r, o in zip(reference, outputs):
        lr = r.reshape(-1).astype(np.float64)
        lo = o.reshape(-1).astype(np.float64)
        lr, lo = lr - np.logaddexp.reduce(lr), lo - np.logaddexp.reduce(lo)
        total += float(np.sum(np.exp(lr) * (lr - lo)))
    return total / len(reference)


def measure(model: Path, data: tuple, int8: list[dict], bundled: Any,
            macs: dict[str, int]) -> dict[str, Any]:
    """One model on the validation images: dense, and each threshold of THRESHOLDS."""
    from esact_cc.tuning.spls_calibration_inputs import CalibrationData
    from esact_cc.tuning.spls_measurement import SplsEvaluator, uniform_config

    images, labels = data
    samples = CalibrationData([{"pixel_values": img[None]} for img in images], labels,
                              "validation")
    evaluator = SplsEvaluator(str(model), samples, "logits", quantize_samples=int8)
    reference = bundled.dense_scores
    out: dict[str, Any] = {
        "file": str(model), "sha256": file_hash(model),
        "dense": {"accuracy": evaluator.dense_accuracy,
                  "differs_from_bundled": int(np.sum(evaluator.dense_scores != reference)),
                  "kl_to_bundled": kl_to(bundled.dense_outputs, evaluator.dense_outputs)},
        "thresholds": {}}
    configs = [uniform_config(**{"hlog-bits": 6, "window": 8, "threshold": t,
                                 "first-reference": 1}) for t in THRESHOLDS]
    for m in evaluator.measure(configs):
        scores = evaluator.dense_scores - m.sample_losses
        work = m.work.as_dict()
        out["thresholds"][f"{m.config.options['threshold']:g}"] = {
            "accuracy": m.accuracy, "wrong_where_bundled_right": int(np.sum(
                (scores < 50) & (reference > 50))),
            "margin_price_points": m.margin_loss,
            "reused_fraction_per_layer": work["reused_fraction_per_layer"],
            **totals(work | {"inputs": len(labels)}, **macs)}
    return out


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "min": min(values), "max": max(values),
            "n": len(values)}


def by_recipe(models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread over the seeds of each recipe (model names RECIPE/sSEED)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for name, m in models.items():
        groups.setdefault(name.split("/")[0], []).append(m)
    out = {}
    for recipe, ms in groups.items():
        entry: dict[str, Any] = {
            "seeds": len(ms),
            "dense_accuracy": spread([m["dense"]["accuracy"] for m in ms]),
            "dense_kl_to_bundled": spread([m["dense"]["kl_to_bundled"] for m in ms])}
        for t in THRESHOLDS:
            points = [m["thresholds"][f"{t:g}"] for m in ms]
            entry[f"{t:g}"] = {k: spread([p[k] for p in points]) for k in (
                "accuracy", "wrong_where_bundled_right", "margin_price_points",
                "vs_dense_program")}
        out[recipe] = entry
    return out


def parse_models(specs: list[str]) -> dict[str, Path]:
    out = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or "/" not in name or not Path(file).is_file():
            raise SystemExit(f"error: --model {spec}: expected RECIPE/SEED=FILE.onnx, an "
                             "existing file")
        out[name] = Path(file)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, metavar="RECIPE/SEED=FILE",
                    help="a fine-tuned model (repeatable)")
    ap.add_argument("-o", "--output", type=Path,
                    default=RESULTS / "spls_finetune_validation_s13.json")
    args = ap.parse_args(argv)
    models = parse_models(args.model)
    start = time.process_time()
    data, int8 = validation_split()
    from esact_cc.tuning.spls_calibration_inputs import CalibrationData
    from esact_cc.tuning.spls_measurement import SplsEvaluator

    bundled = SplsEvaluator(str(BUNDLED), CalibrationData(
        [{"pixel_values": img[None]} for img in data[0]], data[1], "validation"), "logits",
        quantize_samples=int8)
    macs = {"program_dense": program_macs(BUNDLED, data[0][0]),
            "full_dense": program_macs(BUNDLED, data[0][0], dead_rows=False)}
    report: dict[str, Any] = {
        "command": "python bench/spls_finetune_validation.py " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        "validation_images": len(data[1]), "bundled_dense_accuracy": bundled.dense_accuracy,
        "program_macs": macs, "models": {}}
    for name, path in models.items():
        report["models"][name] = measure(path, data, int8, bundled, macs)
        t = report["models"][name]["thresholds"]
        log(f"{name}: dense {report['models'][name]['dense']} " + ", ".join(
            f"{k}: {v['accuracy']:.2f} price {v['margin_price_points']:.2f} "
            f"{v['vs_dense_program']:.1%}" for k, v in t.items()))
    report["recipes"] = by_recipe(report["models"])
    report["cpu_seconds"] = time.process_time() - start
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    log(json.dumps(report["recipes"], indent=1))
    log(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
