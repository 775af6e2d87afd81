"""Sanger on the bundled digits ViT: attention sparsity and accuracy vs dense at thresholds.

    python bench/sanger_digits.py [--thresholds 0.002,0.02,0.05] [--images N]
        [--out bench/results/sanger_digits.json]

The model is quantized with its bundled calibration images and run by the INT8 reference
interpreter (bit-identical to the binaries: test/e2e/test_sanger_binary.py) on the held-out
test images. Sparsity = fraction of visible attention scores (every layer, head, query, key)
the Sanger masks remove, so the QK and PV MACs saved; accuracy in points. One binary (the
first image) is also run on the hardware model for the MAC reduction and the cycles of the
report (the sweep: bench/digits_scheme_sweep.py).
"""

from __future__ import annotations

import argparse
import sys

from digits_scheme_sweep import SweepPoint, sweep_digits

from esact_cc.tuning.sanger_tuning import SangerEvaluator, uniform


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", default="0.002,0.02,0.05")
    parser.add_argument("--images", type=int, default=0, help="test images (0: all)")
    parser.add_argument("--out", default="bench/results/sanger_digits.json")
    args = parser.parse_args(argv)
    points = [SweepPoint({"threshold": t}, uniform(t), [f"threshold={t}"])
              for t in (float(x) for x in args.thresholds.split(","))]
    return sweep_digits("bench/sanger_digits.py", "sanger", SangerEvaluator, "measure_sanger",
                        points, args.images, args.out, argv, lambda m: {})


if __name__ == "__main__":
    sys.exit(main())
