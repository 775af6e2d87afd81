"""Two-fold held-apart frontier of the fine-tuned digits ViTs (docs/spls_results.md,
"Fine-tuning").

Protocol, fixed before the runs it reports: every model -- the bundled one, and each
fine-tuning recipe x seed made by bench/spls_finetune.py on the 1437 TRAINING images only --
is measured (INT8 reference interpreter, ranges from digits_calib.npz, a training split) on
each half of the 360 test images: dense, and the uniform settings `hlog-bits=6 window=8
first-reference=1 threshold=T` for T in spls_finetune.FRONTIER. Fold k: on half k, among the
candidates (models x settings) choose the one that removes most of the dense program whose
accuracy loss against the BUNDLED model's dense INT8 accuracy on half k is within the budget;
report that choice on the other half. The two folds together report on every test image once
(360 held-apart evaluations), and no choice -- of recipe, threshold or epoch -- saw the images
it is reported on. Candidate sets: the bundled model alone (without fine-tuning), and the
bundled model plus one seed's fine-tuned models (with fine-tuning), once per seed, and the
bundled model plus each fine-tuned model alone: the seeds' spread is reported, never the best
seed.

    python bench/spls_finetune_folds.py --model RECIPE/SEED=FILE.onnx ... [--budget 1 ...]
      -> bench/results/spls_finetune_digits_folds.json (measurements cached in it by file hash)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spls_finetune import (  # noqa: E402
    FRONTIER, MODELS, RESULTS, digits_splits, log, program_macs, totals)

HALVES = ("test[:180]", "test[180:]")
BUNDLED = "bundled"


def half_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The two test halves, and digits_calib.npz (training images) for the INT8 ranges."""
    splits = digits_splits()
    images, labels = splits["test"]
    half = len(labels) // 2
    return {"int8": splits["calib"], HALVES[0]: (images[:half], labels[:half]),
            HALVES[1]: (images[half:], labels[half:])}


def measure_model(path: Path, splits: dict, macs: dict[str, int]) -> dict[str, Any]:
    """Per half: per-image correctness (0/1 string) and program reduction of each setting."""
    from esact_cc.tuning.spls_calibration_inputs import CalibrationData
    from esact_cc.tuning.spls_measurement import SplsEvaluator, uniform_config

    int8 = [{"pixel_values": img[None]} for img in splits["int8"][0]]
    configs = [uniform_config(**{"hlog-bits": 6, "window": 8, "threshold": t,
                                 "first-reference": 1}) for t in FRONTIER]
    out: dict[str, Any] = {}
    for half in HALVES:
        images, labels = splits[half]
        data = CalibrationData([{"pixel_values": img[None]} for img in images], labels, half)
        evaluator = SplsEvaluator(str(path), data, "logits", quantize_samples=int8)
        dense = evaluator.dense_scores
        settings = {"dense": {"right": _bits(dense), "vs_dense_program": 0.0,
                              "vs_full_dense_model": 1.0 - macs["program_dense"]
                              / macs["full_dense"]}}
        for m in evaluator.measure(configs):
            settings[str(m.config.options["threshold"])] = {
                "right": _bits(dense - m.sample_losses),
                **totals(m.work.as_dict() | {"inputs": len(labels)}, **macs)}
        out[half] = settings
        log(f"  {path.name} {half}: " + ", ".join(
            f"{k} {_accuracy(v['right']):.2f}/{v['vs_dense_program']:.1%}"
            for k, v in settings.items()))
    return out


def fp32_right(model: Path, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per image 1/0: the fp32 model (onnxruntime) right: INT8 effects apart."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.array([int(np.argmax(session.run(None, {"pixel_values": img[None]})[0]) == label)
                     for img, label in zip(images, labels)])


def _bits(scores: np.ndarray) -> str:
    return "".join("1" if s > 50 else "0" for s in scores)


def _accuracy(bits: str) -> float:
    return 100.0 * bits.count("1") / len(bits)


def choose(candidates: dict[str, dict], tune: str, report: str, reference: dict[str, str],
           budget: float) -> dict[str, Any]:
    """The candidate (model, setting) removing most within `budget` on half `tune`, and what it
    does on half `report`. Losses are against the bundled model's dense predictions."""
    best = None
    for model, halves in sorted(candidates.items()):
        for setting, point in halves[tune].items():
            loss = _accuracy(reference[tune]) - _accuracy(point["right"])
            key = (point["vs_dense_program"], -loss)
            if loss <= budget + 1e-9 and (best is None or key > best[0]):
                best = (key, model, setting, loss)
    if best is None:
        return {"tuned_on": tune, "choice": None}
    _, model, setting, loss = best
    held = candidates[model][report][setting]
    return {"tuned_on": tune, "reported_on": report, "model": model, "setting": setting,
            "tune_loss_points": loss,
            "tune_vs_dense_program": candidates[model][tune][setting]["vs_dense_program"],
            "held_right": held["right"],
            "held_loss_points": _accuracy(reference[report]) - _accuracy(held["right"]),
            "held_vs_dense_program": held["vs_dense_program"],
            "held_vs_full_dense_model": held["vs_full_dense_model"]}


def two_fold(candidates: dict[str, dict], reference: dict[str, str],
             budget: float) -> dict[str, Any]:
    """Both folds and their pooled held-apart result (every test image reported once)."""
    folds = [choose(candidates, HALVES[k], HALVES[1 - k], reference, budget) for k in (0, 1)]
    if any(f.get("choice", True) is None for f in folds):
        return {"folds": folds, "pooled": None}
    held = [f.pop("held_right") for f in folds]
    right, count = sum(h.count("1") for h in held), sum(len(h) for h in held)
    dense_right = sum(reference[h].count("1") for h in HALVES)
    return {"folds": folds, "pooled": {
        "inputs": count, "loss_points": 100.0 * (dense_right - right) / count,
        "vs_dense_program": float(np.mean([f["held_vs_dense_program"] for f in folds])),
        "vs_full_dense_model": float(np.mean([f["held_vs_full_dense_model"]
                                              for f in folds]))}}


def frontier_360(halves: dict[str, dict], reference: dict[str, str]) -> dict[str, Any]:
    """Each setting over all 360 test images (no choice made: the frontier as measured)."""
    dense_right = sum(reference[h].count("1") for h in HALVES)
    out = {}
    for setting in halves[HALVES[0]]:
        points = [halves[h][setting] for h in HALVES]
        right = sum(p["right"].count("1") for p in points)
        count = sum(len(p["right"]) for p in points)
        out[setting] = {"accuracy": 100.0 * right / count,
                        "loss_points": 100.0 * (dense_right - right) / count,
                        **{k: float(np.mean([p[k] for p in points]))
                           for k in ("vs_dense_program", "vs_full_dense_model")}}
    return out


def selections(models: dict[str, Path], cache: dict[str, Any], reference: dict[str, str],
               budget: float) -> dict[str, Any]:
    """Two-fold choices at `budget`: the bundled model alone; with each seed's fine-tuned
    models; with each fine-tuned model alone."""
    bundled_only = {BUNDLED: cache[BUNDLED]["halves"]}
    tuned = [n for n in models if n != BUNDLED]
    seeds = sorted({n.split("/", 1)[1] for n in tuned})
    return {"without_finetuning": two_fold(bundled_only, reference, budget),
            "with_finetuning": {seed: two_fold({**bundled_only, **{
                n: cache[n]["halves"] for n in tuned if n.split("/", 1)[1] == seed}},
                reference, budget) for seed in seeds},
            "per_model": {n: two_fold({**bundled_only, n: cache[n]["halves"]}, reference,
                                      budget) for n in tuned}}


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[], metavar="RECIPE/SEED=FILE",
                    help="a fine-tuned model (recipe name / seed, its ONNX file)")
    ap.add_argument("--budget", type=float, action="append", default=None,
                    help="accuracy budget in points (repeatable; default: 1)")
    ap.add_argument("-o", "--output", type=Path,
                    default=RESULTS / "spls_finetune_digits_folds.json")
    args = ap.parse_args(argv)
    args.budget = args.budget or [1.0]
    models = {BUNDLED: MODELS / "digits_vit.onnx"}
    for spec in args.model:
        name, _, path = spec.partition("=")
        if "/" not in name or not path:
            ap.error(f"--model {spec!r}: expected RECIPE/SEED=FILE.onnx")
        models[name] = Path(path)
    report: dict[str, Any] = json.loads(args.output.read_text()) if args.output.exists() else {}
    cache: dict[str, Any] = report.get("measured", {})
    splits = half_splits()
    image = splits[HALVES[0]][0][0]
    bundled = MODELS / "digits_vit.onnx"
    macs = {"program_dense": program_macs(bundled, image),
            "full_dense": program_macs(bundled, image, dead_rows=False)}
    for name, path in models.items():
        digest = file_hash(path)
        if cache.get(name, {}).get("sha256") != digest:
            log(f"measuring {name} ({path})")
            cache[name] = {"sha256": digest, "file": str(path),
                           "halves": measure_model(path, splits, macs)}
        if "fp32" not in cache[name]:
            cache[name]["fp32"] = {h: _bits(100.0 * fp32_right(path, *splits[h]))
                                   for h in HALVES}
            report["measured"] = cache
            args.output.write_text(json.dumps(report, indent=1) + "\n")
    reference = {h: cache[BUNDLED]["halves"][h]["dense"]["right"] for h in HALVES}
    report.update({"protocol": __doc__.split("\n\n")[1], "program_macs": macs,
                   "frontier": FRONTIER,
                   "frontier_360": {n: frontier_360(cache[n]["halves"], reference)
                                    for n in models},
                   "fp32_accuracy_360": {n: _accuracy("".join(cache[n]["fp32"][h]
                                                              for h in HALVES))
                                         for n in models},
                   "budgets": {str(b): selections(models, cache, reference, b)
                               for b in args.budget},
                   "command": "python bench/spls_finetune_folds.py " + " ".join(
                       argv if argv is not None else sys.argv[1:])})
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    for budget, chosen in report["budgets"].items():
        for label, result in [("without fine-tuning", chosen["without_finetuning"])] + [
                (f"with fine-tuning, seed {s}", r) for s, r in chosen["with_finetuning"].items()]:
            log(f"budget {budget}, {label}: {json.dumps(result['pooled'])}; " + "; ".join(
                f"{f.get('model')} {f.get('setting')} (tune loss {f.get('tune_loss_points')})"
                for f in result["folds"]))
    log(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
