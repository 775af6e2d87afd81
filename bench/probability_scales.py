"""INT8 attention probabilities: one calibrated scale per attention against one per query row.

The trained all-MiniLM-L6-v2 at 512 tokens lost its accuracy to the probability quantization
(worst cosine 0.90 where exact probabilities give 0.997): a head's peaked rows (p near 1 on
[CLS] / [SEP]) set the calibrated scale to 1/127, and its diffuse rows over 512 keys (p near
1/512, below half a step) round to 0. `quantize{probability-scales=row}` (the default) gives
each query row the scale its largest probability sets (QUANT_ROWS after SOFTMAX).

For each --seq and each --scales, the model (`minilm` or `bert`, exported as
bench/calibration_rows_budget.py does) is calibrated without calibration data (synthetic
ranges, the default sample count) and quantized with quantize{probability-scales=...} (the
passes, as `esact-opt -p 'calibrate,quantize{...}'` runs them), and run on --inputs inputs of
model-card text (tokenized_inputs there: the i-th fills seq * (1 - i / (n + 1)) tokens);
printed: worst / mean cosine to onnxruntime's FP32 (per-token outputs over the real tokens).
With --binary, the binary too, on the first input: its outputs equal the interpreter's bit for
bit (checked), instructions, cycles and on-chip energy. `--model digits`: the bundled digits ViT
calibrated on its calibration split, INT8 top-1 and logits cosine on its 360 test images.

    HF_HUB_OFFLINE=1 python bench/probability_scales.py --model minilm --seq 128 512 \
        [--onnx-dir /tmp/w] [--inputs 6] [--binary] [--json bench/results/probability_scales_minilm.json]
    python bench/probability_scales.py --model digits --json bench/results/probability_scales_digits.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibration_rows_budget import cosine, export_model, tokenized_inputs  # noqa: E402


def output_cosines(got: dict[str, np.ndarray], want: dict[str, np.ndarray],
                   real: np.ndarray) -> dict[str, float]:
    """Cosine per output; per-token outputs over the real tokens only."""
    found = {}
    for name, b in want.items():
        a = got[name]
        per_token = a.ndim == 3 and a.shape[1] == real.size
        found[name] = cosine(a[0, real] if per_token else a, b[0, real] if per_token else b)
    return found


def digits(scales: str) -> dict:
    """The bundled digits ViT, calibrated on its calibration split (as esact-demo), on its 360
    test images: INT8 top-1, agreement with onnxruntime's, worst / mean logits cosine (all and
    the first 60)."""
    import onnxruntime as ort

    from esact_cc.bundled_model import load_bundled_model

    model = load_bundled_model()
    folder = Path("/tmp/esact_probability_scales")
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "digits_calibration.npz", **{model.input_name: model.calibration_images})
    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    images = [{model.input_name: image[None]} for image in model.test_images]
    want = np.concatenate([session.run(None, x)[0] for x in images]).astype(np.float64)
    compiled = quantized(Path(model.onnx_path), scales, folder / "digits_calibration.npz", folder)
    got = np.concatenate([next(iter(compiled.run(x).values())) for x in images]).astype(np.float64)
    cos = np.einsum("ij,ij->i", got, want) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    return {"model": "digits_vit", "probability_scales": scales,
            "top1": float(np.mean(got.argmax(1) == model.test_labels)),
            "onnxruntime_top1": float(np.mean(want.argmax(1) == model.test_labels)),
            "agreement": float(np.mean(got.argmax(1) == want.argmax(1))),
            "logits": {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
                       "cosine_min_first60": float(cos[:60].min()),
                       "cosine_mean_first60": float(cos[:60].mean())}}


def compiled_ir(onnx_path: Path, scales: str, calibration: Path | None = None,
                folder: Path | None = None) -> Path:
    """The model calibrated (synthetic default) and quantized with
    quantize{probability-scales=scales}, written beside it as IR (as `esact-opt -p
    calibrate,quantize{...}` would)."""
    from esact_cc import api
    from esact_cc.dialect_registry import make_context
    from esact_cc.pipeline import make_pass

    ir = (folder or onnx_path.parent) / f"{onnx_path.stem}.quantized_{scales}.mlir"
    compiled = api.compile(onnx_path, stage="transformer")
    data = None if calibration is None else str(calibration)
    for step in (make_pass("calibrate", compiled.store, calibration_data=data),
                 make_pass("quantize", compiled.store, probability_scales=scales)):
        step.apply(make_context(), compiled.module)
    compiled.save_ir(ir)
    return ir


def quantized(onnx_path: Path, scales: str, calibration: Path | None = None,
              folder: Path | None = None):  # -> api.CompiledModel
    from esact_cc import api

    return api.load_ir(compiled_ir(onnx_path, scales, calibration, folder))


def measure(onnx_path: Path, seq: int, scales: str, count: int, binary: bool) -> dict:
    import onnxruntime as ort

    from esact_cc import api
    from esact_cc.pipeline import continue_pipeline

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    inputs = [{n: x[n] for n in names} for x in tokenized_inputs(seq, count)]
    references = [dict(zip(outputs, session.run(None, x))) for x in inputs]
    del session
    compiled = quantized(onnx_path, scales)
    per_output: dict[str, list[float]] = {name: [] for name in outputs}
    for x, reference in zip(inputs, references):
        found = output_cosines(compiled.run(x), reference, x["attention_mask"][0].astype(bool))
        for name, value in found.items():
            per_output[name].append(value)
    row = {"seq": seq, "probability_scales": scales,
           "input_lengths": [int(x["attention_mask"].sum()) for x in inputs],
           **{name: {"cosine_min": min(v), "cosine_mean": float(np.mean(v)), "cosines": v}
              for name, v in per_output.items()}}
    if binary:
        program = api.load_ir(compiled_ir(onnx_path, scales))
        continue_pipeline(program.module, program.store, "quantized", "esb")
        program = api.CompiledModel(program.module, program.store, "esb")
        result = program.simulate(inputs[0])
        interpreted = compiled.run(inputs[0])
        for name in outputs:
            np.testing.assert_array_equal(result.outputs[name], interpreted[name])
        row["binary_first_input"] = {
            "equals_interpreter": True,
            "instructions": len(program.program().instructions),
            "cycles": int(result.report["total"]["cycles"]),
            "on_chip_uj": result.report["energy"]["on_chip"]["energy_pj"] * 1e-6}
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("bert", "minilm", "digits"), default="minilm")
    parser.add_argument("--seq", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--scales", nargs="+", default=["tensor", "row"], choices=("tensor", "row"))
    parser.add_argument("--onnx-dir", type=Path, default=Path("/tmp/esact_probability_scales"),
                        help="the exported models (<model><seq>.onnx), exported there if missing")
    parser.add_argument("--inputs", type=int, default=6)
    parser.add_argument("--binary", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.onnx_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.model == "digits":
        for scales in args.scales:
            rows.append(digits(scales))
            print(rows[-1], flush=True)
        args.seq = []
    for seq in args.seq:
        path = args.onnx_dir / f"{args.model}{seq}.onnx"
        if not path.exists():
            export_model(args.model, seq, path)
        for scales in args.scales:
            row = measure(path, seq, scales, args.inputs, args.binary)
            rows.append(row)
            print(f"{args.model} {seq} tokens, probability-scales={scales}: " + "; ".join(
                f"{name} worst {v['cosine_min']:.4f} mean {v['cosine_mean']:.4f}"
                for name, v in row.items() if isinstance(v, dict) and "cosine_min" in v)
                + (f"; binary {row['binary_first_input']}" if args.binary else ""), flush=True)
    if args.json:
        calibration = "its calibration split" if args.model == "digits" else "synthetic (default)"
        args.json.write_text(json.dumps({"model": args.model, "calibration": calibration,
                                         "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
