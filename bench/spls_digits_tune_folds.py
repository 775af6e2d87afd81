"""esact-tune at its defaults on one fine-tuned digits ViT, fold by fold (issue 14, done-when 1;
docs/design.md 6.1, "Thirteenth stop").

The esact-tune part of bench/spls_digits_protocol.py without its frontier, one process per
fold: fold k tunes on test half k (esact-tune's engine, SearchOptions() defaults, within
`--budget` points of the BUNDLED model's dense INT8 accuracy, as the protocol does) and
reports the choice on the other half. Each fold's result is cached in --workdir by the model's
hash, so two processes can run the two folds side by side on a loaded machine; a run whose
folds are all cached pools them (every test image reported once, 360 held apart) into -o.
The uniform frontier of the same models: bench/spls_finetune_folds.py.

    python bench/spls_digits_tune_folds.py --model FILE.onnx --folds 0   # and --folds 1
    python bench/spls_digits_tune_folds.py --model FILE.onnx --folds 0,1 -o OUT.json
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

from spls_digits_protocol import BUNDLED, bits, evaluator, file_hash, halvings, point
from spls_finetune import digits_splits, log, program_macs


def run_fold(model: Path, k: int, budget: float, macs: dict[str, int]) -> dict[str, Any]:
    """esact-tune on half k (losses against the bundled model's dense predictions there),
    the choice measured on half 1 - k."""
    from esact_cc.tuning.spls_tuning import SearchOptions, tune

    splits = digits_splits()
    test = splits["test"]
    int8 = [{"pixel_values": img[None]} for img in splits["calib"][0]]
    pair = halvings(len(test[1]), 1)[0]
    halves = []
    for h in (k, 1 - k):
        images, labels = test[0][pair[h]], test[1][pair[h]]
        ev = evaluator(model, images, labels, int8, f"half {h}")
        own = ev.dense_scores.copy()
        reference = evaluator(BUNDLED, images, labels, int8, "bundled").dense_scores
        ev.dense_scores, ev.dense_accuracy = reference, float(np.mean(reference))
        halves.append((ev, own))
    (tune_ev, tune_own), (report_ev, report_own) = halves
    start = time.process_time()
    result = tune(tune_ev, budget, search=SearchOptions(),
                  log=lambda message: log(f"  esact-tune fold {k}: {message}"))
    best = result.best
    held = report_ev.measure([best.config])[0]
    n = len(pair[1 - k])
    return {"fold": k, "budget": budget, "tuned_on_half": k,
            "tune_cpu_seconds": time.process_time() - start,
            "screen_margin": result.search.screen_margin,
            "screen_margin_choice": None if result.margin_choice is None else
            result.margin_choice.as_dict(),
            "own_dense_right_tuning_half": bits(tune_own),
            "own_dense_right_reported_half": bits(report_own),
            "bundled_right_reported_half": bits(report_ev.dense_scores),
            "on_tuning_half": point(best, len(pair[k]), macs),
            "reported": {**point(held, n, macs),
                         "right": bits(report_ev.dense_scores - held.sample_losses)}}


def pooled(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Both folds' reported halves together: every test image once."""
    right = sum(f["reported"]["right"].count("1") for f in folds)
    bundled = sum(f["bundled_right_reported_half"].count("1") for f in folds)
    own = sum(f["own_dense_right_reported_half"].count("1") for f in folds)
    n = sum(len(f["reported"]["right"]) for f in folds)
    weights = [len(f["reported"]["right"]) for f in folds]
    return {"inputs": n, "accuracy": 100.0 * right / n,
            "loss_points_vs_bundled_dense_int8": 100.0 * (bundled - right) / n,
            "own_dense_loss_points_vs_bundled": 100.0 * (bundled - own) / n,
            "removed_vs_dense_program": float(np.average(
                [f["reported"]["vs_dense_program"] for f in folds], weights=weights)),
            "removed_vs_dense_without_dead_rows": float(np.average(
                [f["reported"]["vs_full_dense_model"] for f in folds], weights=weights))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="a fine-tuned digits ViT")
    ap.add_argument("--folds", default="0,1", help="folds to run or read (0: tune on "
                    "test[:180], report on test[180:]; 1: the other way)")
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/spls_digits_tune_folds"))
    ap.add_argument("-o", "--output", type=Path, default=None,
                    help="the pooled result (needs both folds, run or cached)")
    args = ap.parse_args(argv)
    folds = sorted({int(f) for f in args.folds.split(",")})
    if not args.model.is_file() or not set(folds) <= {0, 1}:
        raise SystemExit("error: --model must be a file and --folds a subset of 0,1")
    args.workdir.mkdir(parents=True, exist_ok=True)
    digest = file_hash(args.model)
    image = digits_splits()["test"][0][0]
    macs = {"program_dense": program_macs(BUNDLED, image),
            "full_dense": program_macs(BUNDLED, image, dead_rows=False)}
    results = []
    for k in folds:
        cache = args.workdir / f"tune_fold{k}_{digest}_b{args.budget:g}.json"
        if not cache.exists():
            cache.write_text(json.dumps(run_fold(args.model, k, args.budget, macs), indent=1)
                             + "\n")
        results.append(json.loads(cache.read_text()))
        log(f"fold {k}: {json.dumps(results[-1]['reported'])[:400]}")
    if args.output is not None:
        if folds != [0, 1]:
            raise SystemExit("error: -o pools both folds: --folds 0,1")
        report = {"command": "python bench/spls_digits_tune_folds.py " + " ".join(
            argv if argv is not None else sys.argv[1:]), "model": str(args.model),
            "sha256": digest, "program_macs": macs, "folds": results,
            "pooled": pooled(results)}
        args.output.write_text(json.dumps(report, indent=1) + "\n")
        log(f"pooled: {json.dumps(report['pooled'])} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
