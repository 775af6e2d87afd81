"""The bundled digits ViT through the whole INT8 back end: the binary's top-1 predictions agree
with onnxruntime's on held-out test images (calibrated on the model's calibration split)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from esact_cc import api
from esact_cc.runtime.functional import execute
from esact_cc.runtime.hw_config import load_config

MODELS = Path(api.__file__).parent / "models"
IMAGES = 60


@pytest.mark.skipif(not (MODELS / "digits_vit.onnx").exists(), reason="bundled model not built")
def test_digits_vit_int8_agrees_with_onnxruntime(tmp_path: Path) -> None:
    test = np.load(MODELS / "digits_test.npz")
    calib = np.load(MODELS / "digits_calib.npz")
    np.savez(tmp_path / "calib.npz", pixel_values=calib["images"])
    program = api.compile(MODELS / "digits_vit.onnx", stage="esb",
                          calibration_data=str(tmp_path / "calib.npz")).program()
    session = ort.InferenceSession(str(MODELS / "digits_vit.onnx"))
    config = load_config()
    agree = correct = 0
    for image, label in zip(test["images"][:IMAGES], test["labels"][:IMAGES]):
        x = {"pixel_values": image[None]}
        ours = execute(program, x, config).outputs["logits"].argmax()
        agree += int(ours == session.run(None, x)[0].argmax())
        correct += int(ours == label)
    assert agree >= IMAGES - 1
    assert correct >= 0.9 * IMAGES
