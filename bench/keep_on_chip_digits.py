"""Activations kept on chip (`keep-on-chip`) on the digits ViT at batch 1, 2, 4, ... (issue 14).

For each batch B the bundled digits ViT is re-exported at B (bench/digits_vit_batch.py),
compiled dense with and without keep-on-chip and with SPLS (each `--case`, keep-on-chip on),
INT8 ranges from digits_calib.npz (B images a sample), and run on `--images` test images from
`--first` in batches of B. Per image: cycles, on-chip / system energy, DRAM bytes, busy cycles
of each unit and which unit bounds the run (the busiest); the dense logits with and without
keep-on-chip must be identical (else the script fails). `compute_bound_from` names the
smallest B whose dense run keeps the MAC array the busiest unit (`bound_by`).

    python bench/keep_on_chip_digits.py [--batches 1,2,4,8,16,32] [--first 180]
        [--images 64] [--case LABEL=OPTION,...] -o bench/results/keep_on_chip_digits.json

Needs torch (the batch export).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spls_finetune import MODELS, log
from spls_finetune_hardware import TUNED, bound_by, calibration, exported, measures

CASES = (f"spls-tuned={TUNED}", "spls-0.8=hlog-bits=6,window=8,threshold=0.8,first-reference=1")


def run(program: Any, images: np.ndarray, labels: np.ndarray, batch: int
        ) -> tuple[dict[str, float], np.ndarray]:
    """Per-image means of one binary over `images` in batches of `batch`, and its logits."""
    from esact_cc.runtime.hw_config import resolve_config
    from esact_cc.runtime.run_program import run_program

    config = resolve_config(None)
    sums: dict[str, float] = {}
    logits = []
    for start in range(0, len(images), batch):
        result = run_program(program, {"pixel_values": images[start:start + batch]}, config)
        logits.append(result.outputs["logits"])
        for key, value in measures(result.report).items():
            sums[key] = sums.get(key, 0.0) + value
        sums["dram_bytes"] = sums.get("dram_bytes", 0.0) + result.report["total"]["dram_bytes"]
    out = np.concatenate(logits)
    means = {k: v / len(images) for k, v in sums.items()}
    means["accuracy"] = 100.0 * float((np.argmax(out, -1) == labels).mean())
    means["bound_by"] = bound_by(means)
    return means, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="1,2,4,8,16,32")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--first", type=int, default=180, help="first test image")
    ap.add_argument("--case", action="append", default=None, metavar="LABEL=OPTIONS")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/keep_on_chip_digits"))
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    if any(b < 1 or args.images % b for b in batches):
        raise SystemExit(f"error: --images {args.images} must be a multiple of every batch")
    cases = [c.partition("=")[::2] for c in (args.case or CASES)]
    args.workdir.mkdir(parents=True, exist_ok=True)
    from esact_cc import api

    test = np.load(MODELS / "digits_test.npz")
    images = test["images"][args.first:args.first + args.images]
    labels = test["labels"][args.first:args.first + args.images]
    result: dict[str, Any] = {"test_images": [args.first, args.first + len(images)],
                              "cases": dict(cases), "batches": {}}
    for batch in batches:
        start = time.process_time()
        calib = calibration(args.workdir, batch)
        model = str(exported(args.workdir, MODELS / "digits_vit.onnx", batch))
        entry: dict[str, Any] = {}
        logits = {}
        for keep in (False, True):
            program = api.compile(model, stage="esb", calibration_data=calib,
                                  keep_on_chip=keep).program()
            label = "dense_keep_on_chip" if keep else "dense_through_dram"
            entry[label], logits[keep] = run(program, images, labels, batch)
        if not np.array_equal(logits[False], logits[True]):
            raise SystemExit(f"error: batch {batch}: keep-on-chip changed the dense logits")
        dense = entry["dense_keep_on_chip"]
        for label, options in cases:
            program = api.compile(model, stage="esb", calibration_data=calib, sparsity="spls",
                                  spls_option=[o for o in options.split(",") if o]).program()
            spls, _ = run(program, images, labels, batch)
            spls["over_dense"] = {k: spls[k] / dense[k] for k in ("cycles", "on_chip_uj")}
            entry[label] = spls
        entry["cpu_seconds"] = time.process_time() - start
        result["batches"][str(batch)] = entry
        log(f"batch {batch}: " + json.dumps({k: (round(v["cycles"]), v["bound_by"])
                                             for k, v in entry.items() if isinstance(v, dict)}))
    result["compute_bound_from"] = {
        label: next((int(b) for b, e in result["batches"].items()
                     if e[label]["bound_by"] == "compute"), None)
        for label in ("dense_through_dram", "dense_keep_on_chip")}
    result["command"] = "python bench/keep_on_chip_digits.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
