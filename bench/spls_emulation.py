"""fp32 emulation of SPLS exactly as docs/design.md section 6 defines it, on trained models.

Owns the accuracy-versus-computation study of the SPLS *algorithm* (before quantization and
lowering): a numpy forward pass of each encoder layer in which the prediction of
runtime/spls_kernels.py decides, per layer and input, which rows are reused and which keys each
computed row attends to. Measured per setting: computation reduction (executed MACs plus the
prediction at 0.1 MAC per HLog product, against the dense MACs of the same layers), task
accuracy (digits ViT) or mean cosine to the dense embedding (all-MiniLM-L6-v2), reuse rate,
top-k recall of the predicted mask against the exact top-k, and a control: random row reuse at
the same per-layer, per-input reuse count.

The forward pass and its MAC counts: bench/spls_emulation_encoder.py; the models and their
dense checks: bench/spls_emulation_models.py. This script owns the study: settings swept,
aggregate results, the greedy per-layer threshold calibration and the command line.

Models: digits (the bundled ViT, task accuracy) and minilm (all-MiniLM-L6-v2, cosine to dense).

Run:  python bench/spls_emulation.py --model digits [--split test] [--out results.json]
      python bench/spls_emulation.py --model minilm --texts 200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from esact_cc.passes.insert_spls import DESIGN_REFERENCE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spls_emulation_encoder import (  # noqa: E402
    COMPONENTS,
    Encoder,
    LayerStats,
    SplsOptions,
    random_reuse_like,
    run_model,
)
from spls_emulation_models import load_digits_vit, load_minilm  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PREDICTION_MAC_PER_PRODUCT = 0.1  # docs/design.md section 6: one HLog product ~ 0.1 INT8 MAC


@dataclass
class Result:
    setting: dict
    accuracy: float  # task accuracy (digits) or mean cosine to dense (minilm)
    dense_accuracy: float
    reduction: float  # 1 - (executed + prediction) / dense
    reduction_without_prediction_cost: float
    reused_fraction: float
    reused_fraction_per_layer: list[float]
    topk_recall: float
    executed_fraction_by_component: dict[str, float]
    saving_share_row_reuse: float  # share of saved MACs in q, o, ffn (row reuse)
    control_accuracy: float | None = None


def evaluate(enc: Encoder, samples: list, labels: np.ndarray | None,
             options: list[SplsOptions | None], control: bool, seed: int = 0,
             dense_outputs: list[np.ndarray] | None = None) -> Result:
    total = [LayerStats() for _ in enc.layers]
    scores, control_scores = [], []
    rng = np.random.default_rng(seed)
    for idx, sample in enumerate(samples):
        out, stats, maps = run_model(enc, sample, options)
        for agg, s in zip(total, stats):
            agg.add(s)
        ref = dense_outputs[idx] if dense_outputs is not None else None
        scores.append(_score(out, labels, idx, ref))
        if control:
            first_ref = next((o.first_reference for o in options if o is not None), 0)
            out_c, _, _ = run_model(enc, sample, options, random_reuse_like(maps, rng, first_ref))
            control_scores.append(_score(out_c, labels, idx, ref))
    agg = LayerStats()
    for s in total:
        agg.add(s)
    dense = sum(agg.dense.values())
    executed = sum(agg.executed.values())
    pred = agg.prediction_products * PREDICTION_MAC_PER_PRODUCT
    saved_row = sum(agg.dense[c] - agg.executed[c] for c in ("q", "o", "ffn1", "ffn2"))
    saved = dense - executed
    opts0 = next((o for o in options if o is not None), None)
    return Result(
        setting=asdict(opts0) if opts0 else {"dense": True},
        accuracy=float(np.mean(scores)),
        dense_accuracy=float("nan"),
        reduction=1.0 - (executed + pred) / dense,
        reduction_without_prediction_cost=1.0 - executed / dense,
        reused_fraction=agg.reused_rows / agg.rows,
        reused_fraction_per_layer=[s.reused_rows / s.rows for s in total],
        topk_recall=agg.recall_sum / agg.recall_rows if agg.recall_rows else 1.0,
        executed_fraction_by_component={c: agg.executed[c] / agg.dense[c] for c in COMPONENTS},
        saving_share_row_reuse=saved_row / saved if saved > 0 else 0.0,
        control_accuracy=float(np.mean(control_scores)) if control else None,
    )


def _score(out: np.ndarray, labels: np.ndarray | None, idx: int, ref: np.ndarray | None) -> float:
    if labels is not None:
        return float(int(np.argmax(out)) == int(labels[idx]))
    assert ref is not None
    return float(out @ ref)


def _ref(**changes: object) -> SplsOptions:
    """docs/design.md section 6's reference setting with `changes` (this emulation's origin; the
    insert-spls defaults are a tuned setting, see passes/insert_spls.py)."""
    return replace(DESIGN_REFERENCE, **changes)


def default_grid(model: str) -> list[SplsOptions]:
    """Settings swept: the reference point of docs/design.md section 6 (cosprob, dense attention,
    4 bits, k 0.2, window 4, threshold 0.9), stricter thresholds, the overlap rule, top-k
    attention, and top-k attention alone (threshold 2: no reuse)."""
    if model == "minilm":
        return [_ref(threshold=0.99), _ref(threshold=0.97),
                _ref(hlog_bits=6, threshold=0.99), _ref(similarity="overlap"),
                _ref(hlog_bits=6, k_ratio=0.5, threshold=2.0, attention="topk"),
                _ref(hlog_bits=3, k_ratio=0.5, threshold=2.0, attention="topk")]
    grid = [_ref(threshold=t) for t in (0.9, 0.95, 0.98, 0.99)]
    grid += [_ref(threshold=0.98, attention="topk"),
             _ref(similarity="overlap", threshold=0.75),
             _ref(similarity="overlap", threshold=0.9),
             _ref(threshold=2.0, attention="topk")]
    return grid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fp32 emulation of SPLS (docs/design.md section 6)")
    ap.add_argument("--model", choices=["digits", "minilm"], default="digits")
    ap.add_argument("--model-dir", type=Path, default=REPO / "esact_cc" / "models")
    ap.add_argument("--split", choices=["test", "calib"], default="test")
    ap.add_argument("--texts", type=int, default=150, help="minilm: sentences (1/3 calib)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N samples")
    ap.add_argument("--no-control", action="store_true")
    ap.add_argument("--setting", action="append", default=[],
                    help="NAME=VALUE,... one setting (changes to DESIGN_REFERENCE) instead of "
                         "the grid")
    ap.add_argument("--layers", default="",
                    help='per-layer overrides of every setting: "L:name=value,...;L:..."')
    ap.add_argument("--calibrate", type=float, metavar="POINTS",
                    help="greedy per-layer thresholds on the calib split under this accuracy "
                         "budget (points, or cosine x100 for minilm), then report on --split")
    ap.add_argument("--calib-from", choices=["calib", "test-half"], default="calib",
                    help="calibration data: the calib split, or the first half of the test split "
                         "(then results are on the second half)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    if args.model == "digits":
        enc, splits = load_digits_vit(args.model_dir)
    else:
        enc, splits = load_minilm(args.texts)
    if args.calib_from == "test-half":
        # Calibrate on the first half of the held-out split, report on the second half: the
        # bundled calib split is training data, on which the model is over-confident.
        test_samples, test_labels = list(splits["test"][0]), splits["test"][1]
        half = len(test_samples) // 2
        splits["calib"] = (test_samples[:half],
                           None if test_labels is None else test_labels[:half])
        splits["test"] = (test_samples[half:],
                          None if test_labels is None else test_labels[half:])
    samples, labels = splits[args.split]
    samples = list(samples)
    if args.limit:
        samples = samples[: args.limit]
        labels = labels[: args.limit] if labels is not None else None
    dense_outs = [run_model(enc, s, [None] * len(enc.layers))[0] for s in samples]
    dense_acc = (float(np.mean([int(np.argmax(o)) == int(label) for o, label in zip(dense_outs, labels)]))
                 if labels is not None else 1.0)
    grid = ([_parse_setting(s) for s in args.setting] if args.setting
            else default_grid(args.model))
    per_layer_grid = [[_with_layers(o, args.layers, i) for i in range(len(enc.layers))]
                      for o in grid]
    if args.calibrate is not None:
        per_layer_grid = [calibrate_thresholds(enc, splits["calib"], layer_opts,
                                               args.calibrate / 100.0)
                          for layer_opts in per_layer_grid]
    results = []
    print(f"{enc.name} ({args.split}, {len(samples)} samples): dense accuracy {dense_acc:.4f}")
    print(f"{'setting':58s} {'reduct':>7s} {'acc':>7s} {'loss':>6s} {'ctrl':>7s} "
          f"{'reuse':>6s} {'recall':>6s} {'rowshare':>8s}  reuse/layer")
    for layer_opts in per_layer_grid:
        opts = layer_opts[0]
        res = evaluate(enc, samples, labels, layer_opts, not args.no_control,
                       dense_outputs=dense_outs)
        res.setting["per_layer_threshold"] = [o.threshold for o in layer_opts]
        res.dense_accuracy = dense_acc
        results.append(res)
        ctrl = f"{res.control_accuracy:7.4f}" if res.control_accuracy is not None else "      -"
        thresholds = sorted({o.threshold for o in layer_opts})
        thr = (f"{opts.threshold}" if len(thresholds) == 1
               else "/".join(f"{o.threshold:g}" for o in layer_opts))
        name = (f"bits={opts.hlog_bits} k={opts.k_ratio} w={opts.window} thr={thr} "
                f"{opts.similarity} attn={opts.attention}"
                + ("" if opts.pam_scale == "one" else " pam=att")
                + (f" first-ref={opts.first_reference}" if opts.first_reference else ""))
        print(f"{name:58s} {res.reduction:7.2%} {res.accuracy:7.4f} "
              f"{(dense_acc - res.accuracy) * 100:6.2f} {ctrl} {res.reused_fraction:6.2%} "
              f"{res.topk_recall:6.3f} {res.saving_share_row_reuse:8.2%}  "
              + " ".join(f"{f:.2f}" for f in res.reused_fraction_per_layer), flush=True)
    if args.out:
        payload = {"model": enc.name, "split": args.split, "samples": len(samples),
                   "calibration": None if args.calibrate is None else {
                       "budget_points": args.calibrate, "data": args.calib_from},
                   "dense_accuracy": dense_acc,
                   "prediction_mac_per_product": PREDICTION_MAC_PER_PRODUCT,
                   "command": "python bench/spls_emulation.py " + " ".join(argv or sys.argv[1:]),
                   "results": [asdict(r) for r in results]}
        fd, tmp = tempfile.mkstemp(dir=args.out.parent or ".", suffix=".json")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are for everyone to read
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=1)
        os.replace(tmp, args.out)
    return 0


def _with_layers(opts: SplsOptions, text: str, layer: int) -> SplsOptions:
    """opts with the overrides of `text` ("L:name=value,...;L:...") for this layer."""
    for chunk in filter(None, (c.strip() for c in text.split(";"))):
        index, _, assignments = chunk.partition(":")
        if int(index) == layer:
            opts = replace(opts, **asdict(_parse_setting(assignments, opts)))
    return opts


CALIBRATION_THRESHOLDS = (0.99, 0.98, 0.97, 0.95, 0.93, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5)


def calibrate_thresholds(enc: Encoder, calib: tuple, layer_opts: list[SplsOptions],
                         budget: float) -> list[SplsOptions]:
    """Greedy per-layer thresholds: start with reuse off everywhere; from the last layer to
    the first, lower the layer's threshold step by step (CALIBRATION_THRESHOLDS) while the
    calib loss stays within `budget`; stop at the first step that exceeds it."""
    samples, labels = list(calib[0]), calib[1]
    dense_outs = [run_model(enc, s, [None] * len(enc.layers))[0] for s in samples]
    dense = (float(np.mean([int(np.argmax(o)) == int(label) for o, label in zip(dense_outs, labels)]))
             if labels is not None else 1.0)
    current = [replace(o, threshold=2.0) for o in layer_opts]
    for layer in reversed(range(len(current))):
        for thr in CALIBRATION_THRESHOLDS:
            trial = list(current)
            trial[layer] = replace(current[layer], threshold=thr)
            acc = evaluate(enc, samples, labels, trial, False, dense_outputs=dense_outs).accuracy
            if dense - acc > budget + 1e-12:
                break
            current = trial
        print(f"  calibrate layer {layer}: threshold {current[layer].threshold}", flush=True)
    return current


def _parse_setting(text: str, base: SplsOptions | None = None) -> SplsOptions:
    fields = {f: type(getattr(DESIGN_REFERENCE, f)) for f in SplsOptions.__dataclass_fields__}
    values = asdict(base if base is not None else DESIGN_REFERENCE)
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        key = name.strip().replace("-", "_")
        if key not in fields:
            raise SystemExit(f"error: unknown SPLS option {name!r}")
        values[key] = fields[key](value)
    return SplsOptions(**values)


if __name__ == "__main__":
    sys.exit(main())
