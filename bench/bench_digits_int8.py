"""The bundled digits ViT compiled to INT8 and run on the hardware model: top-1 agreement with
onnxruntime and test accuracy of both, on the held-out test split shipped with the model.

Calibration uses the model's own calibration split (drawn from the training data), never the
test images.

    python bench/bench_digits_int8.py [--limit N]
"""

from __future__ import annotations

import os

# Single-threaded BLAS (before numpy loads): on a small or busy machine OpenBLAS's thread pool
# makes the many small matmuls of the interpreter and functional model 10-100x slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = Path(__file__).resolve().parent.parent / "esact_cc" / "models"


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort
    from esact_cc.runtime.functional import execute
    from esact_cc.runtime.hw_config import load_config

    from esact_cc import api

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="only the first N test images")
    args = ap.parse_args(argv)
    model = MODELS / "digits_vit.onnx"
    test = np.load(MODELS / "digits_test.npz")
    calib = np.load(MODELS / "digits_calib.npz")
    images, labels = test["images"], test["labels"]
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        calib_path = Path(tmp) / "calib.npz"
        np.savez(calib_path, pixel_values=calib["images"])
        t0 = time.perf_counter()
        compiled = api.compile(model, stage="esb", calibration_data=str(calib_path))
        compile_s = time.perf_counter() - t0
    program = compiled.program()
    session = ort.InferenceSession(str(model))
    config = load_config()
    agree = ours = theirs = 0
    for image, label in zip(images, labels):
        x = {"pixel_values": image[None]}
        ref = session.run(None, x)[0].argmax()
        got = execute(program, x, config).outputs["logits"].argmax()
        agree += int(ref == got)
        ours += int(got == label)
        theirs += int(ref == label)
    n = len(labels)
    print(f"digits ViT INT8 ({n} test images, {len(program.instructions)} instructions, compile {compile_s:.1f}s): "
          f"top-1 agreement {agree / n:.4f}, accuracy esact {ours / n:.4f} vs onnxruntime {theirs / n:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
