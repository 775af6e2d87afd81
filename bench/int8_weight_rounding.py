"""Weight rounding alternatives to quantize's bias correction, measured (docs/design.md section 3).

With calibration data and per-token input scales (quantize's defaults), each linear's INT8
weight and per-channel scale are replaced in the weight store of the quantized IR by one of:

- `per_channel`: quantize's rounding, scale = max |W[:, c]| / 127 (what esact-cc does);
- `mse_clip`: per channel, the scale of the fraction (0.6 .. 1.0 of the peak, 41 steps) with the
  least squared weight error;
- `moment_clip`: the same, the error weighted by the input's second moments X^T X (the output
  error over the calibration rows);
- `gptq`: quantize's scales, rows rounded in order with each row's error compensated in the
  rows after it through the inverse of X^T X (GPTQ, damping 1% of the mean diagonal, blocks of
  128);

each without and with bias correction (the bias minus mean(x) @ (W_int8 * scale - W):
passes/quantize.py `corrected_bias`, what esact-cc does by default with calibration data). X is
every row of every calibration sample at each linear's input in the FP32 model. Reported: the
worst and mean cosine to onnxruntime over held-out inputs per output (the INT8 reference
interpreter; the binary equals it bit for bit). Models and inputs as in
bench/int8_without_calibration.py (all-MiniLM-L6-v2 at 128 tokens, the bundled digits ViT).

    HF_HUB_OFFLINE=1 python bench/int8_weight_rounding.py --models DIR \
        [--json bench/results/int8_weight_rounding.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import contextlib
import io
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from int8_without_calibration import (CALIBRATION_SENTENCES, HELD_OUT_SENTENCES, cosine,
                                      sentence_samples, stack)

CLIP_FRACTIONS = np.linspace(0.6, 1.0, 41)
GPTQ_DAMPING = 0.01
GPTQ_BLOCK = 128


def input_moments(module, store, samples: Sequence[dict[str, np.ndarray]]):
    """Per FP32 linear (walk order): the mean [K] and second moments X^T X / rows [K, K] of its
    input over every row of the samples."""
    from esact_cc.dialects.transformer import LinearOp
    from esact_cc.interpreter.reference_interpreter import Interpreter
    from esact_cc.ir_queries import main_function

    linears = [op for op in module.walk() if isinstance(op, LinearOp)]
    sums: dict = {op: [0.0, 0.0, 0] for op in linears}

    class Recorder(Interpreter):
        def run_op(self, op, args):
            if op in sums:
                x = np.asarray(args[0], np.float64).reshape(-1, args[0].shape[-1])
                entry = sums[op]
                entry[0] = entry[0] + x.sum(axis=0)
                entry[1] = entry[1] + x.T @ x
                entry[2] += x.shape[0]
            return super().run_op(op, args)

    recorder = Recorder(store)
    for sample in samples:
        recorder.env.clear()
        recorder.run_function(main_function(module), sample)
    return [(sums[op][0] / sums[op][2], sums[op][1] / sums[op][2]) for op in linears], linears


def _codes(w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(w / scale), -127, 127)


def clipped(w: np.ndarray, moments: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the clip fraction whose rounding error is least (squared, or weighted by
    the input moments)."""
    peak = np.abs(w).max(axis=0)
    peak[peak == 0] = 1.0
    best_scale, best_error = None, None
    for fraction in CLIP_FRACTIONS:
        scale = (fraction * peak / 127).astype(np.float32).astype(np.float64)
        d = _codes(w, scale) * scale - w
        error = (d * d).sum(axis=0) if moments is None else np.einsum("kc,kc->c", d, moments @ d)
        if best_scale is None:
            best_scale, best_error = scale, error
        else:
            better = error < best_error
            best_scale = np.where(better, scale, best_scale)
            best_error = np.minimum(error, best_error)
    return _codes(w, best_scale).astype(np.int8), best_scale.astype(np.float32)


def gptq(w: np.ndarray, scale: np.ndarray, moments: np.ndarray) -> np.ndarray:
    """INT8 codes of w [K, N] at the given per-channel scales, GPTQ order and compensation."""
    w = w.copy()
    k = w.shape[0]
    h = moments.copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[dead] = 0.0
    h += GPTQ_DAMPING * np.mean(np.diag(h)) * np.eye(k)
    upper = np.linalg.cholesky(np.linalg.inv(h)).T
    s = np.asarray(scale, np.float64)
    codes = np.zeros_like(w)
    for b0 in range(0, k, GPTQ_BLOCK):
        b1 = min(k, b0 + GPTQ_BLOCK)
        block, errors, hb = w[b0:b1].copy(), np.zeros((b1 - b0, w.shape[1])), upper[b0:b1, b0:b1]
        for i in range(b1 - b0):
            codes[b0 + i] = _codes(block[i], s)
            errors[i] = (block[i] - codes[b0 + i] * s) / hb[i, i]
            block[i:] -= np.outer(hb[i, i:], errors[i])
        w[b1:] -= upper[b0:b1, b1:].T @ errors
    return codes.astype(np.int8)


Method = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
METHODS: dict[str, Method] = {
    "per_channel": lambda w, scale, m: (_codes(w, scale).astype(np.int8), scale),
    "mse_clip": lambda w, scale, m: clipped(w, None),
    "moment_clip": lambda w, scale, m: clipped(w, m),
    "gptq": lambda w, scale, m: (gptq(w, scale, m), scale),
}


def bench(model: str, held_out, calibration) -> dict:
    import onnxruntime as ort
    from esact_cc import api
    from esact_cc.passes.quantize import corrected_bias
    from esact_cc.weight_store import WeightStore

    reference = [ort.InferenceSession(model).run(None, s) for s in held_out]
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
        np.savez(Path(tmp) / "calib.npz", **stack(calibration))
        fp32 = api.compile(model, stage="transformer")
        quantized = api.compile(model, stage="quantized", bias_correction="off",
                                calibration_data=str(Path(tmp) / "calib.npz"))
    moments, fp32_linears = input_moments(fp32.module, fp32.store, calibration)
    from esact_cc.dialects.transformer import LinearOp

    int8_linears = [op for op in quantized.module.walk() if isinstance(op, LinearOp)]
    assert len(int8_linears) == len(fp32_linears)
    names = [op.weight.owner.weight_name.data for op in int8_linears]
    assert len(set(names)) == len(names), "a shared weight: one rounding per use would conflict"
    rows: dict[str, dict] = {}
    for method, rounding in METHODS.items():
        for correct in (False, True):
            replaced: dict[str, np.ndarray] = {}
            for op, fp, (mean, second) in zip(int8_linears, fp32_linears, moments):
                w = np.asarray(fp32.store[fp.weight.owner.weight_name.data], np.float64)
                scale_name = op.weight_scale.owner.weight_name.data
                codes, scale = rounding(w, np.asarray(quantized.store[scale_name], np.float64),
                                        second)
                replaced[op.weight.owner.weight_name.data] = codes
                replaced[scale_name] = np.asarray(scale, np.float32)
                if correct:
                    bias = op.bias.owner.weight_name.data
                    replaced[bias] = corrected_bias(w, codes, scale, quantized.store[bias], mean)
            store = WeightStore({n: replaced.get(n, quantized.store[n]) for n in quantized.store})
            variant = api.CompiledModel(quantized.module, store, "quantized")
            per_output: dict[str, list[float]] = {}
            for sample, expected in zip(held_out, reference):
                for (name, got), want in zip(variant.run(sample).items(), expected):
                    per_output.setdefault(name, []).append(cosine(got, want))
            key = method + ("_bias_correction" if correct else "")
            rows[key] = {name: {"min": round(min(v), 5), "mean": round(float(np.mean(v)), 5)}
                         for name, v in per_output.items()}
            print(f"{key:>28}: " + ", ".join(f"{o} {c['min']:.4f} / {c['mean']:.4f}"
                                             for o, c in rows[key].items()), flush=True)
    return {"held_out_inputs": len(held_out), "calibration_samples": len(calibration), **rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, required=True)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from esact_cc.bundled_model import load_bundled_model

    results: dict[str, dict] = {}
    minilm = args.models / "minilm_l6_legacy14.onnx"
    if minilm.exists():
        print("minilm_l6", flush=True)
        results["minilm_l6"] = bench(str(minilm), sentence_samples(HELD_OUT_SENTENCES),
                                     sentence_samples(CALIBRATION_SENTENCES))
    else:
        print(f"skipped (model file missing): {minilm}", file=sys.stderr)
    bundled = load_bundled_model()
    name = bundled.input_name
    print("digits_vit", flush=True)
    results["digits_vit"] = bench(str(bundled.onnx_path),
                                  [{name: image[None]} for image in bundled.test_images[:60]],
                                  [{name: image[None]} for image in bundled.calibration_images])
    if args.json:
        args.json.write_text(json.dumps({"models": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
