"""Benchmark: esact-cc import (+ lift) of an ONNX model vs onnxruntime session creation.

    python bench/bench_import.py MODEL.onnx [--stage onnx|transformer] [--input-shape NAME=1x128 ...]
                                 [--repeat 3]

Each measurement runs in a fresh subprocess (so peak RSS is its own): onnxruntime
InferenceSession creation, esact-cc `compile_model` to the stage (import, then lift-transformer
for `transformer`), and a baseline process that only imports the libraries. Reports the best
wall time of `--repeat` runs of each, the time ratio esact/onnxruntime, and peak RSS against
the model file size (absolute and above the baseline). Dynamic dims default to 1 (dim 0) and
128 (others) unless given.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

_CHILD = {
    "onnxruntime": """
        import onnxruntime as ort
        t0 = time.perf_counter()
        ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
        elapsed = time.perf_counter() - t0
    """,
    "esact": """
        from esact_cc.pipeline import CompileOptions, compile_model
        t0 = time.perf_counter()
        compile_model(MODEL, STAGE, CompileOptions(input_shapes=SHAPES))
        elapsed = time.perf_counter() - t0
    """,
    "baseline": """
        import onnxruntime, esact_cc.pipeline, esact_cc.frontend.onnx_frontend, esact_cc.dialect_registry
        elapsed = 0.0
    """,
}


def measure(kind: str, model: str, stage: str, shapes: dict[str, list[int]]) -> dict[str, float]:
    code = textwrap.dedent(f"""
        import json, time
        MODEL, STAGE, SHAPES = {model!r}, {stage!r}, {shapes!r}
    """) + textwrap.dedent(_CHILD[kind]) + textwrap.dedent("""
        # VmHWM belongs to this process image (ru_maxrss would include the parent's at fork).
        peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        print(json.dumps({"seconds": elapsed, "peak_mb": peak_kb / 1024}))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def default_shapes(model: str, given: list[str]) -> dict[str, list[int]]:
    from esact_cc.frontend.onnx_frontend import parse_input_shape

    shapes = {name: list(dims) for name, dims in (parse_input_shape(t) for t in given)}
    from esact_cc.frontend.onnx_file_reader import read_model

    proto, _ = read_model(model)  # weights stay unread: the parent stays small
    initializers = {i.name for i in proto.graph.initializer}
    for info in proto.graph.input:
        if info.name in initializers or info.name in shapes:
            continue
        dims = info.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims):
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else (1 if i == 0 else 128)
                                 for i, d in enumerate(dims)]
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--stage", default="transformer")
    parser.add_argument("--input-shape", action="append", default=[])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    model = str(Path(args.model).resolve())
    shapes = default_shapes(model, args.input_shape)
    size_mb = os.path.getsize(model) / 2**20
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):
        for kind in ("onnxruntime", "esact", "baseline"):
            run = measure(kind, model, args.stage, shapes)
            if kind not in best or run["seconds"] < best[kind]["seconds"]:
                best[kind] = {"seconds": run["seconds"], "peak_mb": max(run["peak_mb"], best.get(kind, {}).get("peak_mb", 0))}
            else:
                best[kind]["peak_mb"] = max(best[kind]["peak_mb"], run["peak_mb"])
    ort_s, esact_s = best["onnxruntime"]["seconds"], best["esact"]["seconds"]
    peak, base = best["esact"]["peak_mb"], best["baseline"]["peak_mb"]
    report = {
        "model": model, "stage": args.stage, "input_shapes": shapes, "file_mb": round(size_mb, 1),
        "onnxruntime_session_s": round(ort_s, 3), "esact_compile_s": round(esact_s, 3),
        "time_ratio_esact_over_ort": round(esact_s / ort_s, 3),
        "esact_peak_rss_mb": round(peak, 1), "baseline_rss_mb": round(base, 1),
        "onnxruntime_peak_rss_mb": round(best["onnxruntime"]["peak_mb"], 1),
        "peak_rss_over_file_size": round(peak / size_mb, 3),
        "peak_rss_above_baseline_over_file_size": round((peak - base) / size_mb, 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
