"""Which acceptance rule keeps a 1-point budget on held-apart digits? Each rule picks, from one
fixed grid of per-layer settings, the one that removes most on the calibration images while the
rule accepts it; the pick is then measured on the held-apart images.

Why a fixed grid and not esact-tune's search: on this machine (2 cores, load 10-15) one
`tune_confidence.py --augment 2` search costs about 2000 CPU s per split (150-250 settings on
180 images and 360 copies); the grid, 43 settings measured once on the 360 test images and
their 720 copies, costs about 600 CPU s for every rule and split at once. The selection among
the 43 is the effect the rules must survive (esact-tune compares 120-250).

Grid: cosprob similarity, dense attention, 6 HLog bits, window 4, first-reference 1; layer 0
off (prediction off) or 0.997, layer 1 off / 0.99 / 0.95 / 0.9, layer 2 off / 0.9 / 0.8 / 0.7
/ 0.6 (all off is the dense program and left out); plus the three settings esact-tune chose on
these splits before (tune_confidence_digits_flips_rerun.json) and threshold 0.997 alone.

Rules (labels, per-input losses 0 / +-100; bound: loss_bound.py):
- `flips C`: the bound at confidence C of the images' own flips (esact-tune's default, 0.9);
- `flips Bonferroni`: the same at confidence 1 - 0.1 / (settings compared);
- `augment N, C`: each image's loss the worst of itself and its N perturbed copies
  (calibration_augmentation.py, esact-tune --augment N), bound at confidence C;
- `flips 0.9, grid only, + one step safer`: the `flips 0.9` pick among the grid's own
  settings with every layer one step toward off on the grid's ladder (a per-layer safety
  margin; the earlier picks are not on the ladder).

    python bench/tune_confidence_rules.py [--cache-dir DIR] [--random-splits 1]
      -> bench/results/tune_confidence_rules_digits.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # many small GEMMs: threads only contend

import argparse
import json
import sys
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from spls_finetune import totals
from tune_confidence import MODELS, RESULTS, PerInputCache, cpu_seconds, log, splits

from esact_cc.sparsity.spls_options import SplsConfig
from esact_cc.tuning.calibration_augmentation import augment, grouped_losses
from esact_cc.tuning.loss_bound import loss_upper_bound, z_score
from esact_cc.tuning.spls_accounting import summarize
from esact_cc.tuning.spls_calibration_inputs import load_calibration_data, model_inputs
from esact_cc.tuning.spls_measurement import SplsEvaluator
from esact_cc.tuning.spls_tuning import BUDGET_SLACK, _key

BASE = {"attention": "dense", "dense-prefix": "none", "first-reference": 1, "hlog-bits": 6,
        "k-ratio": 0.2, "pam-scale": "one", "similarity": "cosprob", "window": 4,
        "threshold": 0.997}
LADDER: dict[int, tuple[Any, ...]] = {0: ("off", 0.997), 1: ("off", 0.99, 0.95, 0.9),
                                      2: ("off", 0.9, 0.8, 0.7, 0.6)}
"""Per layer, from no reuse (prediction off) to the most reuse the grid tries."""
EARLIER = {  # esact-tune's picks on the three splits before (flips, confidence 0.9)
    "chosen test[:180]": ({}, {1: 0.93, 2: 0.6}),
    "chosen test[180:]": ({"hlog-bits": 4, "threshold": 0.995}, {1: 0.99, 2: 0.6}),
    "chosen random 0": ({"threshold": 0.995}, {1: 0.85, 2: 0.6}),
    "0.997 uniform": ({}, {}),
}
COPIES = 2


def setting(values: tuple[Any, ...]) -> SplsConfig:
    layers = {}
    for index, value in enumerate(values):
        if value == "off":
            layers[index] = {"prediction": "off"}
        elif value != BASE["threshold"]:
            layers[index] = {"threshold": value}
    return SplsConfig(options=dict(BASE), layers=layers)


def grid() -> dict[str, SplsConfig]:
    out = {}
    for l0 in LADDER[0]:
        for l1 in LADDER[1]:
            for l2 in LADDER[2]:
                if l0 == l1 == l2 == "off":
                    continue  # the dense program
                out[f"{l0}/{l1}/{l2}"] = setting((l0, l1, l2))
    for name, (options, layers) in EARLIER.items():
        out[name] = SplsConfig(options={**BASE, **options},
                               layers={i: {"threshold": t} for i, t in layers.items()})
    return out


def one_step_safer(name: str) -> str | None:
    """The grid setting with every layer one ladder step toward off (None: not a grid one)."""
    if name.count("/") != 2:
        return None
    steps = []
    for index, text in enumerate(name.split("/")):
        ladder = LADDER[index]
        at = ladder.index(text if text == "off" else float(text))
        steps.append(str(ladder[max(at - 1, 0)]))
    safer = "/".join(steps)
    return None if safer == "off/off/off" else safer


class Losses:
    """Per setting: each image's own loss, the worst of it and its copies, its work."""

    def __init__(self, images: PerInputCache, copies: PerInputCache,
                 configs: dict[str, SplsConfig]):
        self.own: dict[str, np.ndarray] = {}
        self.grouped: dict[str, np.ndarray] = {}
        self.works: dict[str, list] = {}
        for name, config in configs.items():
            own = images.subset(np.arange(images.evaluator.sample_count)).measure([config])[0]
            copied = copies.subset(np.arange(copies.evaluator.sample_count)).measure([config])[0]
            self.own[name] = own.sample_losses
            self.grouped[name] = grouped_losses(own.sample_losses, copied.sample_losses, COPIES)
            self.works[name] = images.results[_key(config)][1]

    def bound(self, name: str, grouped: bool, z: float, indices: np.ndarray) -> float:
        losses = (self.grouped if grouped else self.own)[name][indices]
        return loss_upper_bound(float(losses.mean()), losses, True, z)

    def removed(self, name: str, indices: np.ndarray, macs: tuple[int, int]) -> dict[str, float]:
        work = summarize(self.works[name][i] for i in indices)
        return {"reduction_spls_layers": work.reduction,
                **totals(work.as_dict() | {"inputs": len(indices)}, *macs)}


def pick(losses: Losses, names: list[str], grouped: bool, z: float,
         calibration: np.ndarray) -> str | None:
    """The setting that removes most on `calibration` among those the rule accepts."""
    accepted = [n for n in names
                if losses.bound(n, grouped, z, calibration) <= 1.0 + BUDGET_SLACK]
    if not accepted:
        return None
    return max(accepted, key=lambda n: (summarize(losses.works[n][i]
                                                  for i in calibration).reduction, n))


def record(losses: Losses, name: str | None, split: tuple[str, np.ndarray, np.ndarray],
           grouped: bool, z: float, macs: tuple[int, int]) -> dict[str, Any]:
    label, calibration, held = split
    if name is None:
        return {"split": label, "chosen": None, "held_out_loss_points": 0.0,
                "note": "nothing within budget: reuse off (the dense program)"}
    return {"split": label, "chosen": name,
            "calibration_loss_points": float(losses.own[name][calibration].mean()),
            "calibration_bound_points": losses.bound(name, grouped, z, calibration),
            "held_out_loss_points": float(losses.own[name][held].mean()),
            "held_out_harmful_flips": int(np.count_nonzero(losses.own[name][held] > 0)),
            "held_out": losses.removed(name, held, macs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-dir", type=Path, help="keep the measured outputs here (images.pkl, "
                    "copies.pkl) across runs")
    ap.add_argument("--random-splits", type=int, default=1)
    ap.add_argument("--program-macs", default="1948800,2376832", metavar="DENSE,FULL",
                    help="the dense program's and the full model's MACs "
                    "(tune_confidence.py's program_macs; default: its recorded values)")
    ap.add_argument("-o", "--output", type=Path,
                    default=RESULTS / "tune_confidence_rules_digits.json")
    args = ap.parse_args(argv)
    macs = tuple(int(v) for v in args.program_macs.split(","))
    model = str(MODELS / "digits_vit.onnx")
    inputs = model_inputs(model)
    int8 = load_calibration_data(MODELS / "digits_calib.npz", inputs, "labels")
    test = load_calibration_data(MODELS / "digits_test.npz", inputs, "labels")
    cpu = cpu_seconds()
    caches = [PerInputCache(SplsEvaluator(model, data, ir="quantized",
                                          quantize_samples=int8.samples),
                            args.cache_dir / f"{name}.pkl" if args.cache_dir else None)
              for name, data in (("images", test), ("copies", augment(test, COPIES)))]
    configs = grid()
    for cache in caches:
        cache.ensure(list(configs.values()))
    losses = Losses(*caches, configs)
    names = list(configs)
    rules = {"flips 0.9": (False, z_score(0.9)), "flips 0.5": (False, 0.0),
             f"flips Bonferroni (0.9 over {len(names)})":
                 (False, NormalDist().inv_cdf(1 - 0.1 / len(names))),
             f"augment {COPIES}, 0.5": (True, 0.0), f"augment {COPIES}, 0.9": (True, z_score(0.9))}
    chosen = splits(len(test.samples), 180, args.random_splits, 0)
    report: dict[str, Any] = {
        "model": "digits ViT (bundled), INT8, ranges from digits_calib.npz",
        "pool": "digits_test.npz: 180 images calibrate, the other 180 are held apart",
        "budget_points": 1.0, "copies": COPIES, "settings": len(names),
        "program_macs": {"program_dense": macs[0], "full_dense": macs[1]},
        "command": "python bench/tune_confidence_rules.py " + " ".join(
            argv if argv is not None else sys.argv[1:]), "rules": {}}
    for rule, (grouped, z) in rules.items():
        report["rules"][rule] = [record(losses, pick(losses, names, grouped, z, c),
                                        (label, c, h), grouped, z, macs)
                                 for label, c, h in chosen]
    on_grid = [n for n in names if n not in EARLIER]
    for rule, step in (("flips 0.9, grid only", lambda n: n),
                       ("flips 0.9, grid only, + one step safer per layer", one_step_safer)):
        runs = []
        for label, c, h in chosen:
            picked = pick(losses, on_grid, False, z_score(0.9), c)
            runs.append(record(losses, step(picked) if picked else None, (label, c, h), False,
                               z_score(0.9), macs))
        report["rules"][rule] = runs
    report["summary"] = {rule: {
        "held_out_within_budget": sum(r["held_out_loss_points"] <= 1.0 + 1e-9 for r in runs),
        "held_out_loss_mean": float(np.mean([r["held_out_loss_points"] for r in runs])),
        "held_out_loss_max": float(max(r["held_out_loss_points"] for r in runs)),
        "removed_of_program_mean": float(np.mean([r["held_out"]["vs_dense_program"]
                                                  if r["chosen"] else 0.0 for r in runs]))}
        for rule, runs in report["rules"].items()}
    report["all_settings"] = {n: {"loss_points_360": float(losses.own[n].mean()),
                                  "grouped_loss_points_360": float(losses.grouped[n].mean()),
                                  **losses.removed(n, np.arange(len(test.samples)), macs)}
                              for n in names}
    report["cpu_seconds"] = round(cpu_seconds() - cpu, 1)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    for rule, s in report["summary"].items():
        log(f"{rule}: held-out loss mean {s['held_out_loss_mean']:.2f} max "
            f"{s['held_out_loss_max']:.2f}, {s['held_out_within_budget']}/{len(chosen)} within "
            f"budget, {s['removed_of_program_mean']:.1%} of the program removed")
    log(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
