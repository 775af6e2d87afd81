"""A small ViT at batch B with its calibration file and one input batch, compiled with SPLS at
threshold 0.8 (the setting the batch > 1 projection and attention tests exercise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from vit_graph import vit_model

from esact_cc import api

SPLS_08 = {"sparsity": "spls",
           "sparsity_option": ["hlog-bits=6", "window=8", "threshold=0.8", "first-reference=1"]}


def spls_vit_case(tmp: Path, batch: int) -> tuple[Path, str, np.ndarray]:
    """(model path, calibration file, one input batch) written under `tmp`."""
    path = tmp / f"vit_b{batch}.onnx"
    onnx.save(vit_model(batch), path)
    rng = np.random.default_rng(4)
    calibration = tmp / "calib.npz"
    np.savez(calibration, pixel_values=rng.uniform(0, 1, (2, batch, 1, 8, 8)).astype(np.float32))
    return path, str(calibration), rng.uniform(0, 1, (batch, 1, 8, 8)).astype(np.float32)


def compile_spls(case: tuple[Path, str, np.ndarray], stage: str = "esb") -> api.CompiledModel:
    path, calibration, _ = case
    return api.compile(path, stage=stage, calibration_data=calibration, **SPLS_08)
