"""Fixtures the SPLS unit tests share."""

import numpy as np
import pytest

from esact_cc.bundled_model import load_bundled_model


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> str:
    """8 of the bundled digits ViT's calibration images as a calibration .npz."""
    bundled = load_bundled_model()
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, **{bundled.input_name: bundled.calibration_images[:8]})
    return str(path)
