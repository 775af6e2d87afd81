"""The bundled default model: a small ViT trained on scikit-learn's digits.

`scripts/train_digits_vit.py` produced these files; this module is the one place that knows
their names and layout (`digits_vit.json` describes them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).parent / "models"


@dataclass(frozen=True)
class BundledModel:
    onnx_path: Path
    input_name: str
    test_images: np.ndarray
    """[N, 1, 8, 8] float32, held out from training and calibration."""
    test_labels: np.ndarray
    calibration_images: np.ndarray
    """[M, 1, 8, 8] float32, a split of the training data."""
    metadata: dict


def load_bundled_model() -> BundledModel:
    metadata = json.loads((MODELS_DIR / "digits_vit.json").read_text())
    test = np.load(MODELS_DIR / metadata["test_file"])
    calib = np.load(MODELS_DIR / metadata["calibration_file"])
    return BundledModel(
        onnx_path=MODELS_DIR / metadata["model"],
        input_name=metadata["inputs"][0]["name"],
        test_images=test["images"],
        test_labels=test["labels"],
        calibration_images=calib["images"],
        metadata=metadata,
    )
