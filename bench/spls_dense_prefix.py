"""What SPLS `dense-prefix` trades on a model whose rows ARE reused: cycles against MACs and
on-chip energy, on the bundled digits ViT (17 tokens, 4 layers), INT8 ranges from
digits_calib.npz, per test image (batch 1), summed over the first `--images` test images.

Per setting (the tuned defaults and DESIGN's reference setting) and prefix (none, q,
attention): cycles, MACs executed, on-chip and system energy, reused rows, and whether every
image's logits equal the `none` binary's bit for bit (they must: the prefix only computes
rows nothing reads).

    python bench/spls_dense_prefix.py [--images 20] [--json bench/results/spls_dense_prefix_digits.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
from pathlib import Path

import numpy as np

from esact_cc import api

MODELS = Path(__file__).resolve().parents[1] / "esact_cc" / "models"
SETTINGS = {"defaults": [], "design": ["hlog-bits=4", "k-ratio=0.2", "window=4",
                                       "threshold=0.9", "similarity=cosprob"]}
PREFIXES = ("none", "q", "attention")


def measure(images: np.ndarray, setting: list[str], prefix: str) -> tuple[dict, list]:
    compiled = api.compile(str(MODELS / "digits_vit.onnx"), stage="esact", sparsity="spls",
                           sparsity_option=[*setting, f"dense-prefix={prefix}"],
                           calibration_data=f"pixel_values={MODELS / 'digits_calib.npz'}:images")
    totals = {"cycles": 0, "macs_executed": 0, "energy_on_chip_uj": 0.0,
              "energy_system_uj": 0.0, "reused_rows": 0}
    logits = []
    for image in images:
        result = compiled.simulate({"pixel_values": image[None]})
        report = result.report
        totals["cycles"] += report["total"]["cycles"]
        totals["macs_executed"] += report["total"]["macs_executed"]
        totals["energy_on_chip_uj"] += report["energy"]["on_chip"]["energy_pj"] / 1e6
        totals["energy_system_uj"] += report["energy"]["system"]["energy_pj"] / 1e6
        totals["reused_rows"] += report["spls"]["reused_rows"]
        logits.append(next(iter(result.outputs.values())))
    return totals, logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    images = np.load(MODELS / "digits_test.npz")["images"][:args.images].astype(np.float32)
    rows = []
    for name, setting in SETTINGS.items():
        reference = None
        for prefix in PREFIXES:
            totals, logits = measure(images, setting, prefix)
            reference = reference or logits
            row = {"setting": name, "dense_prefix": prefix, **{
                k: round(v, 1) if isinstance(v, float) else v for k, v in totals.items()},
                "logits_equal_none": all(np.array_equal(a, b) for a, b in zip(logits, reference))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        command = f"python bench/spls_dense_prefix.py --images {args.images} --json {args.json}"
        args.json.write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
