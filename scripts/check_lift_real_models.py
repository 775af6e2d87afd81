"""Check lift-transformer and the reference interpreter on the full-size real exports.

For every model written by `scripts/generate_models.py` (default folder /work/models, listed in
its models.json): import, lift, then check
  - no MatMul, Gemm, Softmax, LayerNormalization, layer-norm decomposition (ReduceMean, Pow,
    Sqrt) or GELU piece (Erf, Gelu, Tanh) is left outside transformer ops, except inside host
    regions (counted and reported separately),
  - one transformer.attention per layer (causal exactly for GPT-2), no near misses,
  - the interpreter's outputs on the lifted IR match the stored onnxruntime outputs:
    max abs error <= 1e-4 x max abs output, for every output.
Prints one table row per model and writes the numbers to CHECK_FILE (default
<models>/check_lift.json). Exit 1 if any model fails a check.

Issue 2's acceptance check on the real models; the CI counterpart on the tiny fixtures is
test/e2e/test_lift_fixture_models.py. Needs no torch.

    python scripts/check_lift_real_models.py [--models /work/models] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from esact_cc.dialects.transformer import AttentionOp, HostOp
from esact_cc.passes.lift_transformer import lift_module

from esact_cc.frontend.onnx_frontend import import_onnx
from esact_cc.interpreter.reference_interpreter import run_module

# Ops that must end up inside transformer ops (Tanh is allowed in host: BERT/ViT pooler).
CORE_ONNX_OPS = frozenset({
    "onnx.MatMul", "onnx.Gemm", "onnx.Softmax", "onnx.LayerNormalization",
    "onnx.ReduceMean", "onnx.Pow", "onnx.Sqrt", "onnx.Erf", "onnx.Gelu",
})
TOLERANCE = 1e-4  # relative to the max abs reference output
LAYERS = {"bert_base": 12, "vit_base": 12, "gpt2_small": 12, "minilm_l6": 6,
          "bert_tiny": 2, "vit_tiny": 2, "gpt2_tiny": 2, "minilm_tiny": 2}


def expected_layers(name: str) -> int | None:
    return next((n for prefix, n in LAYERS.items() if name.startswith(prefix)), None)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_model(folder: Path, name: str) -> dict[str, Any]:
    path = folder / f"{name}.onnx"
    row: dict[str, Any] = {"name": name, "file_mb": round(path.stat().st_size / 2**20, 1)}
    inputs = dict(np.load(folder / f"{name}.inputs.npz"))
    # The sample inputs fix any dynamic dims (the dynamic-axes extra export has batch and seq).
    shapes = {k: list(v.shape) for k, v in inputs.items()}
    t0 = time.perf_counter()
    module, store = import_onnx(path, input_shapes=shapes)
    t1 = time.perf_counter()
    report = lift_module(module, store)
    t2 = time.perf_counter()
    module.verify()
    row.update(import_s=round(t1 - t0, 2), lift_s=round(t2 - t1, 2))

    outside: Counter[str] = Counter()
    in_host: Counter[str] = Counter()
    host_ops = {id(op) for h in module.walk() if isinstance(h, HostOp) for op in h.body.walk()}
    for op in module.walk():
        if op.name in CORE_ONNX_OPS:
            (in_host if id(op) in host_ops else outside)[op.name] += 1
    ops = Counter(op.name for op in module.walk())
    attention = [op for op in module.walk() if isinstance(op, AttentionOp)]
    row.update(
        core_ops_outside_transformer=dict(outside),
        core_ops_in_host=dict(in_host),
        near_misses=list(report.near_misses),
        transformer_ops={k.removeprefix("transformer."): v for k, v in sorted(ops.items())
                         if k.startswith("transformer.") and k != "transformer.yield"},
        causal=sorted({op.causal is not None for op in attention}),
    )

    expected = dict(np.load(folder / f"{name}.ref.npz"))
    t3 = time.perf_counter()
    got = run_module(module, inputs, store)
    row["interpret_s"] = round(time.perf_counter() - t3, 2)
    errors = {}
    for output, want in expected.items():
        err = float(np.max(np.abs(got[output].astype(np.float64) - want)))
        errors[output] = {"max_abs_err": err, "max_abs_out": float(np.max(np.abs(want))),
                          "rel": err / float(np.max(np.abs(want)))}
    row["outputs"] = errors
    row["peak_rss_mb"] = round(peak_rss_mb())

    layers = expected_layers(name)
    failures = []
    if outside:
        failures.append(f"core ops outside transformer ops: {dict(outside)}")
    if report.near_misses:
        failures.append(f"{len(report.near_misses)} near misses")
    if layers is not None and len(attention) != layers:
        failures.append(f"{len(attention)} attention ops, expected {layers}")
    if row["causal"] != [name.startswith("gpt2")]:
        failures.append(f"causal flags {row['causal']}")
    failures += [f"{o}: rel error {e['rel']:.2e} > {TOLERANCE:g}"
                 for o, e in errors.items() if e["rel"] > TOLERANCE]
    row["failures"] = failures
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("/work/models"))
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--check-file", type=Path, default=None)
    args = ap.parse_args(argv)
    manifest = json.loads((args.models / "models.json").read_text())
    names = [n for n, r in manifest.items()
             if not n.startswith("_") and "error" not in r and (not args.only or n in args.only)]
    rows = []
    print(f"{'model':22} {'MB':>6} {'import s':>8} {'lift s':>7} {'interp s':>8} "
          f"{'attn':>4} {'lin':>4} {'ln':>3} {'gelu':>4} {'add':>4} {'rel err (max)':>13} "
          f"{'host core ops':>14}  result")
    for name in names:
        try:
            row = check_model(args.models, name)
        except Exception as exc:  # noqa: BLE001 - report and go on with the next model
            row = {"name": name, "failures": [f"{type(exc).__name__}: {exc}"]}
            print(f"{name:22} ERROR {row['failures'][0]}", flush=True)
            rows.append(row)
            continue
        t = row["transformer_ops"]
        rel = max(e["rel"] for e in row["outputs"].values())
        print(f"{name:22} {row['file_mb']:6.0f} {row['import_s']:8.2f} {row['lift_s']:7.2f} "
              f"{row['interpret_s']:8.2f} {t.get('attention', 0):4} {t.get('linear', 0):4} "
              f"{t.get('layer_norm', 0):3} {t.get('gelu', 0):4} {t.get('add', 0):4} "
              f"{rel:13.2e} {sum(row['core_ops_in_host'].values()):14}  "
              + ("OK" if not row["failures"] else "FAIL: " + "; ".join(row["failures"])),
              flush=True)
        rows.append(row)
    out = args.check_file or args.models / "check_lift.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    return 1 if any(r["failures"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
