"""SpAtten on the bundled digits ViT: token / head pruning and accuracy vs dense at settings.

    python bench/spatten_digits.py [--settings "0.9:1,0.7:1,0.6:0.75"] [--images N]
        [--out bench/results/spatten_digits.json]

A setting is token_keep:head_keep, uniform over layers (cascade: layer 0 keeps all, each later
layer keeps that fraction of the survivors). The model is quantized with its bundled
calibration images and run by the INT8 reference interpreter (bit-identical to the binaries:
test/unit/spatten/test_spatten_binary.py) on the held-out test images. Reported: attention
sparsity (fraction of (head, query, key) positions removed: QK and PV MACs saved), mean kept
token and head fractions over layers, accuracy in points; one binary (the first image) on the
hardware model for MACs and cycles (the sweep: bench/digits_scheme_sweep.py).
"""

from __future__ import annotations

import argparse
import sys

from digits_scheme_sweep import SweepPoint, sweep_digits

from esact_cc.tuning.spatten_tuning import SpattenEvaluator, uniform


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="0.9:1,0.7:1,0.6:0.75")
    parser.add_argument("--images", type=int, default=0, help="test images (0: all)")
    parser.add_argument("--out", default="bench/results/spatten_digits.json")
    args = parser.parse_args(argv)
    points = []
    for setting in args.settings.split(","):
        token_keep, head_keep = (float(x) for x in setting.split(":"))
        points.append(SweepPoint({"token_keep": token_keep, "head_keep": head_keep},
                                 uniform(token_keep, head_keep),
                                 [f"token_keep={token_keep}", f"head_keep={head_keep}"]))
    return sweep_digits("bench/spatten_digits.py", "spatten", SpattenEvaluator,
                        "measure_spatten", points, args.images, args.out, argv,
                        lambda m: {"token_fraction": m.token_fraction,
                                   "head_fraction": m.head_fraction})


if __name__ == "__main__":
    sys.exit(main())
