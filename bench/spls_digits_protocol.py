"""Issue 14's done-when 1 and 3 on the bundled digits ViT as one protocol, with and without
fine-tuning (docs/design.md 6.2).

Splits, disjoint, fixed before any run (scripts/train_digits_vit.py's, seed 0):
- FINE-TUNE: the 1437 training images (digits_calib.npz's 256 among them), self-distillation
  from the bundled dense model (`--labels`: plus the labels' cross-entropy) with SPLS at the
  training setting (`--train-threshold`) in the forward pass; the last 144 only pick the
  epoch (esact-finetune --validation). INT8 ranges: the 256
  digits_calib.npz images, as esact-cc --calibration-data is given (training images too).
- TUNE / REPORT: the 360 test images (never trained on), in two halves. Fold k: esact-tune's
  engine (its defaults: tuning/spls_tuning.tune, SearchOptions()) chooses on half k within
  `--budget` points of the BUNDLED model's dense INT8 accuracy; the choice is reported on the
  other half. Both folds together report every test image once: 360 held-apart images, the
  largest set the bundled data allows (the training images are the fine-tuning's, and the
  bundled model is 100% right on them). `--partitions P`: also P-1 seeded random halvings.
Reported per model (bundled = without fine-tuning, each `--seeds` fine-tune = with): fp32
(onnxruntime) / INT8 dense / SPLS accuracy on the reported images, and the share of the
computation removed: 1 - (executed MACs + 0.1 MAC per HLog product) / MACs of the DENSE
PROGRAM AS COMPILED (dead-row elimination on: 1,948,800 per image, the denominator
`esact-run --report` divides by; 2,376,832 without it), as spls_finetune.totals counts it; the
uniform frontier (threshold T, hlog-bits 6, window 8, first-reference 1) over all 360; where
the removal goes (limits); the chosen settings as binaries on the hardware model at batch 1
(bench/spls_digits_protocol_hardware.py).

    python bench/spls_digits_protocol.py [--seeds 0,1,2] [--partitions 1] [--budget 1]
      -> bench/results/spls_digits_protocol_s11.json (+ .png; fine-tuned models in --workdir)
    python bench/spls_digits_protocol.py --only bundled|SEED   # one model into the cache
CPU cost (process_time): fine-tuning 120-140 s per seed; a model's study ~530 s, of which
esact-tune's search ~220-245 s per fold (its layer screen); the binaries a few s per image.

Needs torch and scikit-learn (the `models` extra).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spls_finetune import MODELS, RESULTS, digits_splits, finetune_digits, log, program_macs, totals

BUNDLED = MODELS / "digits_vit.onnx"
TRAIN_SETTING = ("hlog-bits=6", "window=8", "threshold=0.8", "first-reference=1")
"""The fine-tuning's SPLS setting (its threshold: `--train-threshold`'s default): the
frontier's last point (bench/results/spls_finetune_digits_recipe_kl.json, recipe 'kl')."""
VALIDATION = 144
FRONTIER = (0.995, 0.99, 0.98, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
"""Uniform thresholds of the frontier: bench/spls_finetune.py's, and two past the training
setting, to see where the frontier stops."""


def frontier_configs() -> list[Any]:
    from esact_cc.tuning.spls_measurement import uniform_config

    return [uniform_config(**{"hlog-bits": 6, "window": 8, "threshold": t,
                              "first-reference": 1}) for t in FRONTIER]


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def train_setting(args: argparse.Namespace) -> list[str]:
    """TRAIN_SETTING with `--train-threshold`'s threshold."""
    return [f"threshold={args.train_threshold:g}" if o.startswith("threshold=") else o
            for o in TRAIN_SETTING]


def recipe(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """What a fine-tuned model of the cache was made with (its training record's fields)."""
    return {"train_setting": train_setting(args), "labels": args.labels,
            "mixup": args.mixup, "epochs": args.epochs, "learning_rate": args.learning_rate,
            "seed": seed, "validation": VALIDATION, "temperature": args.temperature,
            "dense_weight": args.dense_weight}


def recorded_recipe(record: dict[str, Any]) -> dict[str, Any]:
    """The recipe a training record states (records made before --temperature / --dense-weight
    / --mixup existed: their defaults)."""
    options = record["options"]
    return {"train_setting": record["train_setting"], "labels": record["labels"],
            "mixup": record.get("mixup") or 0, "epochs": options["epochs"],
            "learning_rate": options["learning_rate"], "seed": options["seed"],
            "validation": options["validation"],
            "temperature": options.get("temperature", 1.0),
            "dense_weight": options.get("dense_weight", 0.0)}


def fine_tuned(seed: int, splits: dict, args: argparse.Namespace) -> tuple[Path, dict]:
    """The seed's fine-tuned model (made once per --workdir) and its training record; a cached
    model made with another recipe is an error, never reused."""
    from esact_cc.finetune.distillation import FinetuneOptions

    path = args.workdir / f"digits_vit_protocol_s{seed}.onnx"
    record = path.with_suffix(".json")
    wanted = recipe(seed, args)
    if path.exists() and record.exists():
        made = recorded_recipe(json.loads(record.read_text()))
        if made != wanted:
            differ = ", ".join(f"{k} {made[k]} (asked {wanted[k]})" for k in wanted
                               if made[k] != wanted[k])
            raise SystemExit(f"error: {path} was fine-tuned with {differ}: use another "
                             "--workdir")
        return path, json.loads(record.read_text())
    options = FinetuneOptions(epochs=args.epochs, learning_rate=args.learning_rate,
                              seed=seed, validation=VALIDATION, temperature=args.temperature,
                              dense_weight=args.dense_weight)
    start = time.process_time()
    out = finetune_digits(path, splits, train_setting(args), options, use_labels=args.labels,
                          with_calib=True, augment=0, mixup=args.mixup)
    out["cpu_seconds"] = time.process_time() - start
    out.pop("seconds", None)  # wall time: meaningless on the shared machine
    record.write_text(json.dumps(out, indent=1) + "\n")
    return path, out


def fp32_right(model: Path, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.array([int(np.argmax(session.run(["logits"], {"pixel_values": img[None]})[0])
                         == label) for img, label in zip(images, labels)])


def evaluator(model: Path, images: np.ndarray, labels: np.ndarray, int8: list[dict],
              name: str) -> Any:
    from esact_cc.tuning.spls_calibration_inputs import CalibrationData
    from esact_cc.tuning.spls_measurement import SplsEvaluator

    data = CalibrationData([{"pixel_values": img[None]} for img in images], labels, name)
    return SplsEvaluator(str(model), data, "logits", quantize_samples=int8)


def point(m: Any, n: int, macs: dict[str, int]) -> dict[str, Any]:
    """One measured setting: per-image right (0/1), removal vs the dense program, limits."""
    work = m.work.as_dict()
    return {"options": dict(sorted(m.config.options.items())),
            "layers": {str(i): o for i, o in sorted(m.config.layers.items())},
            "accuracy": m.accuracy, "loss_points": m.loss,
            **totals(work | {"inputs": n}, **macs),
            "reused_fraction_per_layer": work["reused_fraction_per_layer"],
            "shares": shares(m.work, n, macs["program_dense"])}


def shares(work: Any, n: int, program_dense: int) -> dict[str, Any]:
    """Where the dense program's MACs go with this setting, as shares of it: per component of
    the SPLS layers dense and kept (executed), the prediction, and the rest (the dead-row-
    trimmed last layer and the head, which SPLS does not touch)."""
    from esact_cc.tuning.spls_accounting import COMPONENTS

    dense = {c: sum(w.dense[c] for w in work.layers) / n / program_dense for c in COMPONENTS}
    kept = {c: sum(w.executed[c] for w in work.layers) / n / program_dense for c in COMPONENTS}
    return {"dense": dense, "kept": kept,
            "prediction": work.prediction_macs / n / program_dense,
            "outside_spls_layers": 1.0 - sum(dense.values())}


def bits(scores: np.ndarray) -> str:
    return "".join("1" if s > 50 else "0" for s in scores)


class Half:
    """One model on one half of the test images: its evaluator with losses against the
    bundled model's dense predictions on those images (`reference`), the frontier measured."""

    def __init__(self, model: Path, index: np.ndarray, test: tuple, int8: list[dict],
                 reference: np.ndarray | None, macs: dict[str, int], name: str):
        images, labels = test[0][index], test[1][index]
        self.n, self.macs, self.name = len(index), macs, name
        self.evaluator = evaluator(model, images, labels, int8, name)
        self.own_dense = self.evaluator.dense_scores.copy()
        if reference is not None:  # losses (and esact-tune's budget) against the bundled model
            self.evaluator.dense_scores = reference
            self.evaluator.dense_accuracy = float(np.mean(reference))
        self.reference = self.evaluator.dense_scores
        self.frontier = {str(m.config.options["threshold"]): self.measured(m)
                         for m in self.evaluator.measure(frontier_configs())}

    def measured(self, m: Any) -> dict[str, Any]:
        scores = self.reference - m.sample_losses
        return {**point(m, self.n, self.macs), "right": bits(scores)}


def choose_uniform(tune_half: Half, budget: float) -> str | None:
    """The frontier threshold removing most with its mean loss on the tuning half within
    budget (the calibration mean, no confidence bound): the frontier rule."""
    ok = [(p["vs_dense_program"], t) for t, p in tune_half.frontier.items()
          if p["loss_points"] <= budget + 1e-9]
    return max(ok)[1] if ok else None


def fold(tune_half: Half, report_half: Half, budget: float, confidence: float,
         hw_configs: list) -> dict[str, Any]:
    """esact-tune's choice on `tune_half`, reported on `report_half`; and the frontier rule's."""
    from esact_cc.tuning.spls_tuning import SearchOptions, tune

    start = time.process_time()
    result = tune(tune_half.evaluator, budget, search=SearchOptions(confidence=confidence),
                  log=lambda message: log(f"  esact-tune on {tune_half.name}: {message}"))
    best = result.best
    held = report_half.evaluator.measure([best.config])[0]
    out = {"esact_tune": {"confidence": confidence,
                          "cpu_seconds": time.process_time() - start,
                          "screen_margin": result.search.screen_margin,
                          "screen_margin_choice": None if result.margin_choice is None else
                          result.margin_choice.as_dict(),
                          "on_tuning_half": point(best, tune_half.n, tune_half.macs),
                          "reported": report_half.measured(held)}}
    hw_configs.append(best.config)
    threshold = choose_uniform(tune_half, budget)
    out["frontier_rule"] = {"threshold": threshold, "reported": (
        report_half.frontier[threshold] if threshold else None)}
    return out


def pooled(folds: list[dict[str, Any]], key: str, references: list[np.ndarray]
           ) -> dict[str, Any] | None:
    """Both folds' reported images together (every test image once)."""
    reported = [f[key]["reported"] for f in folds]
    if any(r is None for r in reported):
        return None
    right = sum(r["right"].count("1") for r in reported)
    count = sum(len(r["right"]) for r in reported)
    dense = sum(int(np.sum(ref > 50)) for ref in references)
    return {"inputs": count, "accuracy": 100.0 * right / count,
            "loss_points_vs_bundled_dense_int8": 100.0 * (dense - right) / count,
            "removed_vs_dense_program": float(np.average(
                [r["vs_dense_program"] for r in reported],
                weights=[len(r["right"]) for r in reported])),
            "removed_vs_dense_without_dead_rows": float(np.average(
                [r["vs_full_dense_model"] for r in reported],
                weights=[len(r["right"]) for r in reported]))}


def halvings(count: int, partitions: int) -> list[list[np.ndarray]]:
    """Partition 0: test[:180] / test[180:] (the earlier runs'); then seeded random halves."""
    out = [[np.arange(count // 2), np.arange(count // 2, count)]]
    for seed in range(1, partitions):
        order = np.random.default_rng(seed).permutation(count)
        out.append([np.sort(order[:count // 2]), np.sort(order[count // 2:])])
    return out


def bundled_references(test: tuple, int8: list[dict], partitions: int) -> list[list]:
    """The bundled model's dense INT8 points per image, per halving and half."""
    scores = evaluator(BUNDLED, *test, int8, "bundled dense").dense_scores
    return [[scores[idx] for idx in pair] for pair in halvings(len(test[1]), partitions)]


def study_key(model: Path, args: argparse.Namespace, count: int) -> dict[str, Any]:
    """What a cached study depends on."""
    return {"sha256": file_hash(model), "budgets": args.budget,
            "confidences": args.confidence, "partitions": args.partitions,
            "frontier": list(FRONTIER), "test_images": count}


def study_model(name: str, model: Path, test: tuple, int8: list[dict], macs: dict,
                references: list[list], args: argparse.Namespace) -> dict[str, Any]:
    """Frontier and both folds' choices of one model on every halving (cached in --workdir:
    one process per model can run them side by side)."""
    cache = args.workdir / f"study_{name.replace('/', '_')}.json"
    key = study_key(model, args, len(test[1]))
    if cache.exists() and json.loads(cache.read_text())["key"] == key:
        log(f"{name}: study cached in {cache}")
        return json.loads(cache.read_text())["study"]
    start = time.process_time()
    fp32 = fp32_right(model, *test)
    out: dict[str, Any] = {"file": str(model), "sha256": key["sha256"],
                           "fp32_accuracy_all": 100.0 * float(fp32.mean()), "partitions": [],
                           "hardware_cases": {}}
    halves_first = []
    for p, pair in enumerate(halvings(len(test[1]), args.partitions)):
        halves = [Half(model, idx, test, int8, None if name == "bundled"
                       else references[p][h], macs, f"{name}/p{p}h{h}")
                  for h, idx in enumerate(pair)]
        halves_first = halves_first or halves
        entry: dict[str, Any] = {
            "reported_first_images": [[int(i) for i in idx[:4]] for idx in pair],
            "int8_dense_own_accuracy": [float(np.mean(h.own_dense)) for h in halves],
            "int8_dense_bundled_accuracy": [float(np.mean(h.reference)) for h in halves],
            "fp32_accuracy": [100.0 * float(fp32[idx].mean()) for idx in pair],
            "frontier": [h.frontier for h in halves], "budgets": {}}
        for budget in args.budget:
            for confidence in args.confidence:
                configs: list = []
                folds = [fold(halves[k], halves[1 - k], budget, confidence, configs)
                         for k in (0, 1)]
                refs = [halves[1].reference, halves[0].reference]
                chosen = entry["budgets"][f"{budget}@{confidence}"] = {
                    "folds": folds, "esact_tune": pooled(folds, "esact_tune", refs),
                    "frontier_rule": pooled(folds, "frontier_rule", refs)}
                if p == 0 and budget == args.budget[0] and confidence == args.confidence[0]:
                    out["hardware_cases"] = hardware_cases(name, configs[0], folds[0])
                log(f"{name} p{p} budget {budget} conf {confidence}: esact-tune "
                    f"{json.dumps(chosen['esact_tune'])}; frontier rule "
                    f"{json.dumps(chosen['frontier_rule'])}")
        out["partitions"].append(entry)
    out["frontier_all"] = frontier_all(halves_first)
    out["cpu_seconds"] = time.process_time() - start
    cache.write_text(json.dumps({"key": key, "study": out}, indent=1) + "\n")
    return out


def hardware_cases(name: str, tuned: Any, first_fold: dict[str, Any]) -> dict[str, str]:
    """Fold 0's choices (made on test[:180], reported on test[180:]) as SPLS config JSON."""
    cases = {f"{name} esact-tune": tuned.to_json()}
    threshold = first_fold["frontier_rule"]["threshold"]
    if threshold is not None:
        config = frontier_configs()[[str(t) for t in FRONTIER].index(threshold)]
        cases[f"{name} frontier rule {threshold}"] = config.to_json()
    return cases


def frontier_all(halves: list[Half]) -> dict[str, Any]:
    """Every uniform threshold over all test images (no choice: the frontier itself)."""
    dense = sum(int(np.sum(h.reference > 50)) for h in halves)
    n = sum(h.n for h in halves)
    out = {}
    for t in halves[0].frontier:
        points = [h.frontier[t] for h in halves]
        right = sum(p["right"].count("1") for p in points)
        out[t] = {"accuracy": 100.0 * right / n, "loss_points": 100.0 * (dense - right) / n,
                  "removed_vs_dense_program": float(np.mean([p["vs_dense_program"]
                                                             for p in points])),
                  "shares": points[0]["shares"]}
    return out


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "mean": float(np.mean(values)), "max": max(values),
            "n": len(values)}


FIELDS = ("loss_points_vs_bundled_dense_int8", "removed_vs_dense_program")


def pooled_values(model: dict[str, Any], key: str, rule: str, field: str) -> list[float]:
    """One model's pooled held-apart `field` per halving (a rule that chose nothing: none)."""
    return [p["budgets"][key][rule][field] for p in model["partitions"]
            if p["budgets"][key][rule] is not None]


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """Per budget and confidence: without fine-tuning, with (the seeds' and halvings'
    spread), for esact-tune's choice and the frontier rule's."""
    models = report["models"]
    tuned = [k for k in models if k != "bundled"]
    out: dict[str, Any] = {}
    for key in models["bundled"]["partitions"][0]["budgets"]:
        out[key] = {}
        for rule in ("esact_tune", "frontier_rule"):
            entry = {"without_finetuning": {f: spread(pooled_values(models["bundled"], key,
                                                                    rule, f))
                                            for f in FIELDS}}
            if tuned:
                entry["with_finetuning"] = {f: spread([v for m in tuned for v in pooled_values(
                    models[m], key, rule, f)]) for f in FIELDS}
            out[key][rule] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2", help="fine-tuning seeds ('' for none)")
    ap.add_argument("--partitions", type=int, default=1, help="halvings of the test images")
    ap.add_argument("--budget", type=float, action="append", default=None)
    ap.add_argument("--confidence", type=float, action="append", default=None,
                    help="esact-tune's --confidence (repeatable; default: its default, 0.9)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--learning-rate", type=float, default=3e-4)
    ap.add_argument("--temperature", type=float, default=1.0,
                    help="fine-tuning's distillation temperature (esact-finetune's)")
    ap.add_argument("--dense-weight", type=float, default=0.0,
                    help="fine-tuning's weight of the pass without SPLS (esact-finetune's)")
    ap.add_argument("--mixup", type=int, default=0, metavar="K",
                    help="fine-tuning: K mixes of two training images per image, distilled")
    ap.add_argument("--labels", action="store_true",
                    help="fine-tuning: the task labels' cross-entropy added to the distillation")
    ap.add_argument("--train-threshold", type=float, default=0.8,
                    help="fine-tuning's SPLS similarity threshold (default: %(default)s)")
    ap.add_argument("--hw-images", type=int, default=4,
                    help="reported images run as binaries on the hardware model at batch 1")
    ap.add_argument("--hw-models", default="bundled,0",
                    help="models whose chosen settings run as binaries ('bundled', seeds)")
    ap.add_argument("--only", default=None, metavar="MODEL",
                    help="study this one model ('bundled' or a seed) into --workdir's cache "
                    "and stop (processes side by side; a run without it assembles)")
    ap.add_argument("--limit", type=int, default=None,
                    help="the first N test images only (a smoke run, not the protocol)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/spls_digits_protocol"))
    ap.add_argument("-o", "--output", type=Path,
                    default=RESULTS / "spls_digits_protocol_s11.json")
    args = ap.parse_args(argv)
    from esact_cc.tuning.spls_tuning import SearchOptions

    args.budget = args.budget or [1.0]
    args.confidence = args.confidence or [SearchOptions().confidence]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.partitions < 1:
        raise SystemExit("error: --partitions must be >= 1")
    args.workdir.mkdir(parents=True, exist_ok=True)
    start = time.process_time()
    splits = digits_splits()
    splits["int8"] = splits["calib"]
    test = tuple(a[:args.limit] for a in splits["test"])
    int8 = [{"pixel_values": img[None]} for img in splits["calib"][0]]
    macs = {"program_dense": program_macs(BUNDLED, test[0][0]),
            "full_dense": program_macs(BUNDLED, test[0][0], dead_rows=False)}
    references = bundled_references(test, int8, args.partitions)
    names = ["bundled"] + [str(s) for s in seeds]
    if args.only is not None and args.only not in names:
        raise SystemExit(f"error: --only {args.only}: not one of {', '.join(names)}")
    report: dict[str, Any] = {
        "protocol": __doc__.split("\n\n")[1], "program_macs": macs,
        "splits": {"finetune": len(splits["finetune"][1]) + len(splits["calib"][1]),
                   "finetune_validation": VALIDATION, "int8_ranges": len(splits["calib"][1]),
                   "tune": len(test[1]) // 2, "report": len(test[1]) - len(test[1]) // 2,
                   "reported_over_both_folds": len(test[1])},
        "train_setting": train_setting(args), "frontier_thresholds": list(FRONTIER),
        "budgets": args.budget, "confidences": args.confidence, "models": {},
        "finetune": {}}
    for name in names:
        if args.only is not None and name != args.only:
            continue
        model, label = BUNDLED, name
        if name != "bundled":
            model, report["finetune"][name] = fine_tuned(int(name), splits, args)
            label = f"fine-tuned/s{name}"
        report["models"][label] = study_model(label, model, test, int8, macs, references,
                                              args)
    if args.only is not None:
        return 0
    report["summary"] = summary(report)
    report["command"] = "python bench/spls_digits_protocol.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    from spls_digits_protocol_hardware import hardware, plot

    args.output.write_text(json.dumps(report, indent=1) + "\n")  # the binaries take long
    plot(report, args.output.with_suffix(".png"))
    if not args.hw_images:
        log(f"-> {args.output} (no binaries: --hw-images 0)")
        return 0
    on_hardware = {"bundled" if n == "bundled" else f"fine-tuned/s{n}"
                   for n in args.hw_models.split(",")}
    cases = {case: (Path(m["file"]), text) for name, m in report["models"].items()
             if name in on_hardware for case, text in m["hardware_cases"].items()}
    report["hardware_batch1"] = hardware(cases, test, args.hw_images, args.workdir, macs)
    report["cpu_seconds_this_process"] = time.process_time() - start
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    plot(report, args.output.with_suffix(".png"))
    log(json.dumps(report["summary"], indent=1))
    log(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
