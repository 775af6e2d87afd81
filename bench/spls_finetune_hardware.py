"""Cycles and energy of a chosen SPLS point against dense, on the hardware model, at batch 1.

Compiles the BUNDLED digits ViT dense and `--model` (a fine-tuned one, same graph) with
`--sparsity spls` and the `--spls-option`s (INT8 ranges from digits_calib.npz, as
bench/spls_finetune.py), runs `--images` test images from `--first` through both binaries
(functional + timing + energy model, default hardware) and reports per image: cycles, on-chip
and system energy, accuracy, and the computation removed as `esact-run --report` counts it
(whole program, prediction at 0.1 MAC per HLog product). Batch 1 only: the exported digits
ViT fixes its batch dimension to 1 (esact-cc refuses `--input-shape pixel_values=4x1x8x8`).

    python bench/spls_finetune_hardware.py --model FILE.onnx --spls-option threshold=0.8 ...
        [--images 60] [--first 0] -o OUT.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spls_finetune import CALIB_BINDING, MODELS, log  # noqa: E402


def run_binary(program: Any, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Means per image of one binary over `images`."""
    from esact_cc.runtime.hw_config import resolve_config
    from esact_cc.runtime.run_program import run_program

    hw = resolve_config(None)
    sums = {"cycles": 0.0, "on_chip_uj": 0.0, "system_uj": 0.0, "macs_dense": 0.0,
            "macs_spent": 0.0}
    right = 0
    for image, label in zip(images, labels):
        run = run_program(program, {"pixel_values": image[None]}, hw)
        right += int(np.argmax(run.outputs["logits"]) == label)
        total = run.report["total"]
        sums["cycles"] += total["cycles"]
        sums["on_chip_uj"] += run.report["energy"]["on_chip"]["energy_pj"] * 1e-6
        sums["system_uj"] += run.report["energy"]["system"]["energy_pj"] * 1e-6
        spls = run.report.get("spls")
        sums["macs_dense"] += total["macs_dense"]
        sums["macs_spent"] += (total["macs_dense"] if spls is None else total["macs_dense"]
                               - spls["macs_dense"] + spls["macs_executed"]
                               + 0.1 * spls["hlog_products"])
    n = len(images)
    return {"accuracy": 100.0 * right / n, **{f"mean_{k}": v / n for k, v in sums.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--spls-option", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--first", type=int, default=0, help="first test image")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    from esact_cc import api

    test = np.load(MODELS / "digits_test.npz")
    images = test["images"][args.first:args.first + args.images]
    labels = test["labels"][args.first:args.first + args.images]
    dense = api.compile(str(MODELS / "digits_vit.onnx"), stage="esb",
                        calibration_data=CALIB_BINDING).program()
    spls = api.compile(str(args.model), stage="esb", calibration_data=CALIB_BINDING,
                       sparsity="spls", spls_option=list(args.spls_option)).program()
    result = {"model": str(args.model), "spls_options": args.spls_option,
              "test_images": [args.first, args.first + len(images)], "batch": 1,
              "dense_bundled": run_binary(dense, images, labels),
              "spls": run_binary(spls, images, labels)}
    d, s = result["dense_bundled"], result["spls"]
    result["spls_over_dense"] = {k: s[f"mean_{k}"] / d[f"mean_{k}"]
                                 for k in ("cycles", "on_chip_uj", "system_uj")}
    result["computation_removed_vs_dense_program"] = 1.0 - s["mean_macs_spent"] / d[
        "mean_macs_dense"]
    result["command"] = "python bench/spls_finetune_hardware.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    log(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
