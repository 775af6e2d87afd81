"""The digits ViT's held-apart frontier: share of the dense program removed against points lost,
every point chosen on one test half and reported on the other (issue 14, done-when 1;
docs/design.md 6.1, "Thirteenth stop").

Reads the model studies bench/spls_digits_protocol.py caches in its --workdir (study_*.json:
per test half, each uniform threshold's per-image right/wrong and removal). Per model and
budget B: fold k takes, among the model's uniform thresholds and the bundled model dense (0%
removed, 0 points), the one removing most whose loss on half k against the bundled model's
dense INT8 accuracy is within B (the protocol's frontier rule, at more budgets than it runs);
the choice is reported on the other half, and both folds pool to the 360 test images. Nothing
is measured again: the budgets only read the cached measurements, so the frontier is cheap
and every point on it is held apart. Also listed: esact-tune's own choice at the protocol's
budget, pooled as the protocol reports it. Per recipe: mean and spread over its models.

    python bench/spls_digits_held_apart_frontier.py --recipe T4=/tmp/h2/proto_T4 ...
      -> bench/results/spls_digits_held_apart_frontier_s13.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
BUDGETS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
BUNDLED_DENSE = "bundled dense"


def candidates(frontier: dict[str, Any], reference_right: int, n: int
               ) -> list[tuple[float, float, str]]:
    """(removed, loss points vs the bundled dense, name) on one half, the bundled model dense
    included."""
    out = [(0.0, 0.0, BUNDLED_DENSE)]
    for threshold, point in frontier.items():
        out.append((point["vs_dense_program"],
                    100.0 * (reference_right - point["right"].count("1")) / n, threshold))
    return out


def choose(frontier: dict[str, Any], reference_right: int, n: int, budget: float) -> str:
    """The candidate removing most within `budget` points on this half."""
    ok = [c for c in candidates(frontier, reference_right, n) if c[1] <= budget + 1e-9]
    return max(ok)[2]


def reported(frontier: dict[str, Any], choice: str, reference_right: int
             ) -> tuple[int, float]:
    """(images right, share removed) of `choice` on a half."""
    if choice == BUNDLED_DENSE:
        return reference_right, 0.0
    point = frontier[choice]
    return point["right"].count("1"), point["vs_dense_program"]


def held_apart(partition: dict[str, Any], budget: float) -> dict[str, Any]:
    """Both folds of one halving at `budget`: choices and the pooled held-apart point."""
    halves = partition["frontier"]
    sizes = [len(next(iter(h.values()))["right"]) for h in halves]
    refs = [round(a * n / 100.0) for a, n in zip(partition["int8_dense_bundled_accuracy"],
                                                   sizes)]
    folds, right, lost, removed = [], 0, 0, 0.0
    for k in (0, 1):
        choice = choose(halves[k], refs[k], sizes[k], budget)
        got, share = reported(halves[1 - k], choice, refs[1 - k])
        folds.append({"tuned_on_half": k, "choice": choice,
                      "reported_loss_points": 100.0 * (refs[1 - k] - got) / sizes[1 - k],
                      "reported_removed": share})
        right, lost, removed = right + got, lost + refs[1 - k] - got, removed + share * sizes[1 - k]
    n = sum(sizes)
    return {"budget": budget, "folds": folds, "inputs": n, "accuracy": 100.0 * right / n,
            "loss_points": 100.0 * lost / n, "removed_vs_dense_program": removed / n}


def model_frontier(study: dict[str, Any]) -> dict[str, Any]:
    """The held-apart frontier of one model (halving 0), and esact-tune's pooled choices."""
    partition = study["partitions"][0]
    tuned = {key: entry["esact_tune"] for key, entry in partition["budgets"].items()}
    return {"file": study["file"], "sha256": study["sha256"],
            "dense_int8_own_accuracy": partition["int8_dense_own_accuracy"],
            "held_apart": [held_apart(partition, b) for b in BUDGETS],
            "esact_tune": tuned,
            "esact_tune_folds": {key: [tuned_fold(f["esact_tune"]) for f in entry["folds"]]
                                 for key, entry in partition["budgets"].items()}}


def tuned_fold(tuned: dict[str, Any]) -> dict[str, Any]:
    """esact-tune's choice on one fold: its loss where chosen and where reported."""
    reported = tuned["reported"]
    return {"loss_on_tuning_half": tuned["on_tuning_half"]["loss_points"],
            "reported_loss_points": reported["loss_points"],
            "reported_removed": reported["vs_dense_program"], "options": reported["options"],
            "layers": reported["layers"], "screen_margin": tuned.get("screen_margin")}


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "min": min(values), "max": max(values),
            "n": len(values)}


def recipe_summary(models: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per budget: the recipe's models' pooled held-apart loss and removal, mean and spread."""
    out = []
    for i, budget in enumerate(BUDGETS):
        points = [m["held_apart"][i] for m in models.values()]
        out.append({"budget": budget,
                    "loss_points": spread([p["loss_points"] for p in points]),
                    "removed_vs_dense_program": spread([p["removed_vs_dense_program"]
                                                        for p in points])})
    return out


def load_studies(workdir: Path) -> dict[str, dict[str, Any]]:
    studies = {p.stem.removeprefix("study_"): json.loads(p.read_text())["study"]
               for p in sorted(workdir.glob("study_fine-tuned_s*.json"))}
    if not studies:
        raise SystemExit(f"error: {workdir}: no study_fine-tuned_s*.json (run "
                         "bench/spls_digits_protocol.py --only SEED --workdir there first)")
    return studies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", action="append", required=True, metavar="NAME=WORKDIR",
                    help="a recipe's protocol --workdir (repeatable)")
    ap.add_argument("-o", "--output", type=Path,
                    default=RESULTS / "spls_digits_held_apart_frontier_s13.json")
    args = ap.parse_args(argv)
    report: dict[str, Any] = {"command": "python bench/spls_digits_held_apart_frontier.py "
                              + " ".join(argv if argv is not None else sys.argv[1:]),
                              "budgets": list(BUDGETS), "recipes": {}}
    for spec in args.recipe:
        name, sep, workdir = spec.partition("=")
        if not sep or not Path(workdir).is_dir():
            raise SystemExit(f"error: --recipe {spec}: expected NAME=WORKDIR, a directory")
        models = {k: model_frontier(s) for k, s in load_studies(Path(workdir)).items()}
        report["recipes"][name] = {"models": models, "summary": recipe_summary(models)}
        for row in report["recipes"][name]["summary"]:
            print(f"{name} budget {row['budget']}: loss {row['loss_points']['mean']:.2f} "
                  f"({row['loss_points']['min']:.2f}-{row['loss_points']['max']:.2f}), removed "
                  f"{row['removed_vs_dense_program']['mean']:.1%}")
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
