"""INT8 accuracy of the defaults on the bundled digits ViT (issue 15 item 4; bench/
int8_without_calibration.py measures BERT-base and all-MiniLM-L6-v2 the same way): worst cosine
of the logits to onnxruntime over held-out test images, >= 0.99 without calibration data and
>= 0.995 with it, bias correction a good part of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from esact_cc import api

MODELS = Path(api.__file__).parent / "models"
IMAGES = 60


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.skipif(not (MODELS / "digits_vit.onnx").exists(), reason="bundled model not built")
def test_default_int8_accuracy_with_and_without_calibration_data(tmp_path: Path) -> None:
    model = str(MODELS / "digits_vit.onnx")
    images = np.load(MODELS / "digits_test.npz")["images"][:IMAGES]
    np.savez(tmp_path / "calib.npz", pixel_values=np.load(MODELS / "digits_calib.npz")["images"])
    session = ort.InferenceSession(model)
    inputs = [{"pixel_values": image[None]} for image in images]
    reference = [session.run(None, x)[0] for x in inputs]

    def worst_cosine(**options) -> float:
        compiled = api.compile(model, stage="quantized", **options)
        return min(_cosine(compiled.run(x)["logits"], want) for x, want in zip(inputs, reference))

    calibrated = {"calibration_data": str(tmp_path / "calib.npz")}
    assert worst_cosine() >= 0.99  # synthetic samples from the model's input domain
    with_data = worst_cosine(**calibrated)
    without_correction = worst_cosine(bias_correction="off", **calibrated)
    assert with_data >= 0.995 and with_data > without_correction + 0.002, (
        with_data, without_correction)  # measured 0.9989 and 0.9953
