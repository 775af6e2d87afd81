"""Does a setting esact-tune chooses keep its budget on inputs it never saw? Per `--confidence`.

The bundled digits ViT (INT8 program, ranges from digits_calib.npz as esact-cc is given them).
Its 360 test images, which it was never trained on, are split into calibration images, on which
esact-tune's search (esact_cc/tuning/spls_tuning.py, default search options) chooses a setting
under `--budget`, and held-apart images, on which the chosen setting is then measured. Splits:
the two halves both ways (bench/spls_tradeoff.py --split-test, --swap-halves), then
`--random-splits` seeded random ones. Every setting is measured once on all 360 images and
each split reads its own images' results (same numbers as measuring the subset: per-input
scores and work do not depend on the other inputs).

Computation removed is counted as esact-tune counts it (SPLS layers, real tokens, prediction
at 0.1 MAC per HLog product), and over the whole dense program esact-cc builds (dead rows
eliminated, bench/spls_finetune.py `totals`).

    python bench/tune_confidence.py [--loss-estimates flips,margins] [--confidences 0.9]
      [--random-splits 2] [--cache FILE.pkl] [--augment N] [--split I] [--verbose]
      -> bench/results/tune_confidence_digits.json (rewritten after every tuned setting)

`--loss-estimates` compares esact-tune's `--loss-estimate` values: `flips` (the observed
flipped predictions) and `margins` (margin erosion priced as flips, margin_loss.py).
`--augment N` is esact-tune's: N perturbed copies of every calibration image, an image counted
as flipped when it or any of its copies flips (calibration_augmentation.py); the copies are
cached as the images are, measured only for the calibration images and the settings within
budget on the images alone. `--split I` runs one split (several processes, one cache each).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # many small GEMMs: threads only contend

import argparse
import json
import pickle
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from esact_cc.cli.esact_tune_main import screen_margin_value
from esact_cc.runtime.errors import CompileError
from scheme_comparison_core import use_search_tables
from spls_finetune import program_macs, totals

from esact_cc.sparsity.spls_options import SplsConfig
from esact_cc.tuning.calibration_augmentation import (
    AugmentedEvaluator,
    augment,
    budget_screen,
    check_augment,
)
from esact_cc.tuning.layer_screen import DEFAULT_SCREEN_MARGIN
from esact_cc.tuning.margin_loss import MarginReference
from esact_cc.tuning.spls_accounting import LayerWork, summarize
from esact_cc.tuning.spls_calibration_inputs import (
    load_calibration_data,
    model_inputs,
)
from esact_cc.tuning.spls_measurement import Measurement, SplsEvaluator
from esact_cc.tuning import spls_tuning
from esact_cc.tuning.spls_tuning import SearchOptions, _key, tune

MODELS = REPO / "esact_cc" / "models"
RESULTS = REPO / "bench" / "results"


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (wall time is noisy on a shared machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


LEAN_UNIFORM = {
    "UNIFORM_GRID": (("cosprob", "dense", 6, (0.998,)),),
    "REFINE_VALUES": {},
    "FINER_THRESHOLDS": {"cosprob": (), "overlap": ()},
}
"""`--search lean`: the uniform phase is one setting (6-bit cosprob, dense attention, window 4:
the base of tune_confidence_rules.py's grid; on the digits ViT no uniform setting removes more
than 3% within a 1-point budget), then esact-tune's own per-layer search: a fraction of the CPU
of the full search, the same per-layer phase."""


def git_commit() -> str:
    import subprocess

    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False).stdout.strip()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class PerInputCache:
    """Every setting measured once per input of `evaluator`, on the inputs asked for only;
    per-input outputs and work kept, so any subset of the inputs is measured without running
    anything again. With `path` the results persist across runs (a pickle, checked against
    the dense outputs)."""

    def __init__(self, evaluator: SplsEvaluator, path: Path | None = None):
        self.evaluator = evaluator
        self.path = path
        self.results: dict[str, tuple[list[np.ndarray | None], list[list[LayerWork] | None]]] \
            = {}
        self.dense = np.stack(evaluator.dense_outputs)
        if path is not None and path.exists():
            saved = pickle.loads(path.read_bytes())
            if np.array_equal(saved["dense"], self.dense):
                self.results = {k: (list(o), list(w)) for k, (o, w) in saved["results"].items()}
                log(f"{len(self.results)} settings read from {path}")
            else:
                log(f"{path} was measured on other dense outputs: not used")

    def ensure(self, configs: Sequence[SplsConfig], indices: Sequence[int] | None = None
               ) -> None:
        """Measure `configs` on the `indices` (default: all inputs) not measured yet."""
        ev = self.evaluator
        wanted = range(ev.sample_count) if indices is None else [int(i) for i in indices]
        for config in configs:
            self.results.setdefault(_key(config), ([None] * ev.sample_count,
                                                   [None] * ev.sample_count))
        todo = [c for c in {_key(c): c for c in configs}.values()
                if any(self.results[_key(c)][1][i] is None for i in wanted)]
        if not todo:
            return
        prepared = [(self.results[_key(c)], ev._prepare(c)) for c in todo]
        for index in wanted:
            memo: dict[int, list[np.ndarray]] = {}  # shared by the settings on one input
            for (outputs, works), p in prepared:
                if works[index] is None:
                    outputs[index], works[index] = ev._run(p, index, memo, None)
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps({"dense": self.dense, "results": self.results}))
            tmp.replace(self.path)

    def outputs(self, config: SplsConfig) -> list[np.ndarray]:
        """Per input: the setting's output, the dense one where it was not measured."""
        outputs = self.results[_key(config)][0]
        return [d if o is None else o for o, d in zip(outputs, self.evaluator.dense_outputs)]

    def subset(self, indices: np.ndarray) -> SubsetEvaluator:
        return SubsetEvaluator(self, indices)


class SubsetEvaluator:
    """The `Evaluator` interface esact-tune's search uses, on some of the cache's inputs."""

    def __init__(self, cache: PerInputCache, indices: np.ndarray):
        self.cache = cache
        self.indices = indices
        ev = cache.evaluator
        self.labels = ev.labels[indices]
        self.dense_scores = ev.dense_scores[indices]
        self.dense_accuracy = float(np.mean(self.dense_scores))
        self.margins = MarginReference.of(cache.dense[indices], self.labels)

    @property
    def sample_count(self) -> int:
        return len(self.indices)

    def subset(self, indices: Sequence[int]) -> SubsetEvaluator:
        """Some of these inputs (esact-tune's --screen-margin auto check)."""
        return SubsetEvaluator(self.cache, self.indices[list(indices)])

    def reuse_off_gap(self, count: int = 4) -> float:
        return self.cache.evaluator.reuse_off_gap(count)

    def layer_indices(self, config: SplsConfig) -> list[int]:
        return self.cache.evaluator.layer_indices(config)

    def measure(self, configs: Sequence[SplsConfig], control: bool = False,
                seed: int = 0) -> list[Measurement]:
        if control:
            raise ValueError("the per-input cache does not run the random-reuse control")
        self.cache.ensure(configs, self.indices)
        out = []
        for config in configs:
            outputs = self.cache.outputs(config)
            works = self.cache.results[_key(config)][1]
            mine = self.cache.evaluator._scores(outputs)[self.indices]
            price = self.margins.price(self.margins.erosions(
                np.stack([outputs[i] for i in self.indices])))
            out.append(Measurement(config, float(np.mean(mine)), self.dense_accuracy,
                                   summarize(works[i] for i in self.indices), None,
                                   self.dense_scores - mine, True, price))
        return out


def splits(count: int, calibration: int, random_splits: int, seed: int
           ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, calibration indices, held-apart indices): the halves both ways, then random."""
    half = count // 2
    first, second = np.arange(half), np.arange(half, count)
    out = [("test[:180] -> test[180:]", first, second),
           ("test[180:] -> test[:180]", second, first)]
    rng = np.random.default_rng(seed)
    for r in range(random_splits):
        order = rng.permutation(count)
        out.append((f"random {r} (seed {seed})", np.sort(order[:calibration]),
                    np.sort(order[calibration:])))
    return out


def point(m: Measurement, macs: dict[str, int], search: SearchOptions) -> dict[str, Any]:
    n = len(m.sample_losses) if m.sample_losses is not None else 0
    work = m.work.as_dict()
    return {"accuracy": m.accuracy, "dense_accuracy": m.dense_accuracy, "loss_points": m.loss,
            "loss_se_points": m.loss_se, "margin_loss_points": m.margin_loss,
            "margin_loss_se_points": m.margin_price.se if m.margin_price else None,
            "loss_bound_points": m.loss_bound(search.margin_se, search.loss_estimate),
            "harmful_flips": int(np.count_nonzero(m.sample_losses > 0)),
            "helpful_flips": int(np.count_nonzero(m.sample_losses < 0)), "inputs": n,
            "reduction_spls_layers": m.reduction,
            **totals(work | {"inputs": n}, macs["program_dense"], macs["full_dense"])}


def summary(runs: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    by: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by.setdefault(f"{run['loss_estimate']} {run['confidence']} screen "
                      f"{run.get('layer_screen', 'off')} augment {run.get('augment', 0)}",
                      []).append(run)
    out = {}
    for confidence, group in by.items():
        held = [r["held_out"] for r in group]
        out[confidence] = {
            "splits": len(group),
            "held_out_within_budget": sum(h["loss_points"] <= budget + 1e-9 for h in held),
            "held_out_loss_mean": float(np.mean([h["loss_points"] for h in held])),
            "held_out_loss_max": float(max(h["loss_points"] for h in held)),
            "calibration_loss_mean": float(np.mean([r["calibration"]["loss_points"]
                                                    for r in group])),
            "removed_of_program_mean": float(np.mean([h["vs_dense_program"] for h in held])),
            "removed_of_full_model_mean": float(np.mean([h["vs_full_dense_model"]
                                                         for h in held]))}
    return out


def copy_indices(indices: np.ndarray, copies: int) -> np.ndarray:
    """The copies of `indices` in the input-major copies set (copy j of input i: i*copies+j)."""
    return (indices[:, None] * copies + np.arange(copies)).reshape(-1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--confidences", default="0.9")
    ap.add_argument("--loss-estimates", default="flips,margins",
                    help="esact-tune --loss-estimate values compared")
    ap.add_argument("--program-macs", metavar="DENSE,FULL",
                    help="the dense program's and the full model's MACs as an earlier run "
                    "recorded them (program_macs), instead of compiling and simulating them")
    ap.add_argument("--verbose", action="store_true", help="the search's progress on stderr")
    ap.add_argument("--cache", type=Path, metavar="FILE.pkl",
                    help="keep every measured setting's per-input outputs here across runs")
    ap.add_argument("--random-splits", type=int, default=2)
    ap.add_argument("--calibration", type=int, default=180,
                    help="calibration images of a random split (the rest are held apart)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--splits-only", type=int, default=0, metavar="N",
                    help="stop after the first N splits (0: all)")
    ap.add_argument("--split", type=int, action="append", metavar="I",
                    help="run split I only (0, 1: the halves; 2...: the random ones); "
                    "repeatable")
    ap.add_argument("--augment", default="0", metavar="N[,N]",
                    help="esact-tune --augment N: an input counts as flipped when the setting "
                    "flips it or any of its N perturbed copies (calibration_augmentation.py); "
                    "0: no copies; several values are run one after the other on the same "
                    "per-input cache")
    ap.add_argument("--layer-screens", default="on",
                    help="esact-tune --layer-screen values compared (layer_screen.py), e.g. on,off")
    ap.add_argument("--layer-steps", type=int, default=0,
                    help="esact-tune --layer-steps (0: every value each round)")
    ap.add_argument("--screen-margin", type=screen_margin_value, default=DEFAULT_SCREEN_MARGIN,
                    help="esact-tune --screen-margin (default: %(default)s)")
    ap.add_argument("--search", choices=("full", "quick", "lean"), default="full",
                    help="esact-tune's search tables, scheme_comparison_core.QUICK_SEARCH's "
                    "fewer values, or `LEAN_UNIFORM`'s uniform phase before esact-tune's own "
                    "per-layer thresholds (default: %(default)s)")
    ap.add_argument("-o", "--output", type=Path, default=RESULTS / "tune_confidence_digits.json")
    args = ap.parse_args(argv)
    use_search_tables("full" if args.search == "full" else "quick")
    if args.search == "lean":
        use_search_tables("full")
        for name, value in LEAN_UNIFORM.items():
            setattr(spls_tuning, name, value)
    screens = args.layer_screens.split(",")
    confidences = [float(c) for c in args.confidences.split(",")]
    augments = [int(n) for n in args.augment.split(",")]
    estimates = args.loss_estimates.split(",")
    for c in confidences:
        for e in estimates:
            try:
                for screen in screens:
                    SearchOptions(confidence=c, loss_estimate=e, layer_screen=screen,
                                  screen_margin=args.screen_margin,
                                  layer_steps=args.layer_steps).validate()
                for copies in augments:
                    check_augment(copies, e)
            except CompileError as error:
                ap.error(str(error))
    model = str(MODELS / "digits_vit.onnx")
    inputs = model_inputs(model)
    int8 = load_calibration_data(MODELS / "digits_calib.npz", inputs, "labels")
    test = load_calibration_data(MODELS / "digits_test.npz", inputs, "labels")
    cache = PerInputCache(SplsEvaluator(model, test, ir="quantized",
                                        quantize_samples=int8.samples), args.cache)
    copies_caches = {n: PerInputCache(
        SplsEvaluator(model, augment(test, n), ir="quantized", quantize_samples=int8.samples),
        args.cache.with_suffix(f".copies{n}.pkl") if args.cache else None)
        for n in augments if n}
    image = np.load(MODELS / "digits_test.npz")["images"][0]
    if args.program_macs:
        dense_macs, full_macs = (int(v) for v in args.program_macs.split(","))
    else:
        dense_macs = program_macs(Path(model), image)
        full_macs = program_macs(Path(model), image, dead_rows=False)
    macs = {"program_dense": dense_macs, "full_dense": full_macs}
    report: dict[str, Any] = {
        "model": "digits ViT (bundled), INT8, ranges from digits_calib.npz",
        "pool": "digits_test.npz (360 images the model was never trained on)",
        "budget_points": args.budget, "confidences": confidences,
        "loss_estimates": estimates, "program_macs": macs, "augment": augments,
        "layer_screens": screens, "screen_margin": args.screen_margin, "search": args.search,
        "commit": git_commit(),
        "command": "python bench/tune_confidence.py " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        "runs": []}
    chosen = splits(test.labels.shape[0], args.calibration, args.random_splits, args.seed)
    picked = [chosen[i] for i in args.split] if args.split else chosen[:args.splits_only or None]
    for name, calib_idx, held_idx in picked:
        plain, held = cache.subset(calib_idx), cache.subset(held_idx)
        for copies, estimate, confidence, screen in [
                (n, e, c, s) for n in augments for e in estimates for c in confidences
                for s in screens]:
            search = SearchOptions(confidence=confidence, loss_estimate=estimate,
                                   layer_screen=screen, screen_margin=args.screen_margin,
                                   layer_steps=args.layer_steps)
            calib = plain
            if copies:
                calib = AugmentedEvaluator(
                    plain, copies_caches[copies].subset(copy_indices(calib_idx, copies)),
                    copies, budget_screen(args.budget, search))
            start, cpu = time.time(), cpu_seconds()
            result = tune(calib, args.budget, search=search,
                          log=log if args.verbose else None)
            best = result.best
            held_m = held.measure([best.config])[0]
            run = {"split": name, "calibration_inputs": len(calib_idx),
                   "held_out_inputs": len(held_idx), "confidence": confidence,
                   "loss_estimate": estimate, "layer_screen": screen, "augment": copies,
                   "screen_margin": args.screen_margin, "layer_steps": args.layer_steps,
                   "layer_floors": None if result.floors is None else
                   {str(i): f.as_dict() for i, f in sorted(result.floors.items())},
                   "options": dict(sorted(best.config.options.items())),
                   "layers": {str(i): o for i, o in sorted(best.config.layers.items())},
                   "chosen": "per_layer" if best is result.per_layer else "uniform",
                   "calibration": point(best, macs, search),
                   "calibration_inputs_alone": point(plain.measure([best.config])[0], macs,
                                                     search),
                   "held_out": point(held_m, macs, search),
                   "settings_measured": len(result.history),
                   "settings_cached": len(cache.results),
                   "seconds": round(time.time() - start, 1),
                   "cpu_seconds": round(cpu_seconds() - cpu, 1)}
            report["runs"].append(run)
            report["summary"] = summary(report["runs"], args.budget)
            args.output.write_text(json.dumps(report, indent=1) + "\n")
            log(f"{name} augment {copies} {estimate} confidence {confidence} screen {screen}: "
                f"{run['chosen']} "
                f"{run['options']['threshold']} {run['layers']}: calibration loss "
                f"{run['calibration']['loss_points']:.2f} (bound "
                f"{run['calibration']['loss_bound_points']:.2f}), held-out loss "
                f"{run['held_out']['loss_points']:.2f}, removed of program "
                f"{run['held_out']['vs_dense_program']:.2%} ({run['seconds']} s, "
                f"{len(cache.results)} settings cached)")
    log(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
