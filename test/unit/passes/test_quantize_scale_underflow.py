"""A calibrated peak so small that peak / 127 underflows float32 must not give a zero scale
(transformer.linear refuses input_scale 0: the fuzz found a model whose activations were all
denormal, and esact-cc ended in an internal error)."""

from __future__ import annotations

import numpy as np
from esact_cc.passes.quantize import symmetric_scale


def test_underflowing_peak_gets_the_all_zero_scale() -> None:
    tiny = float(np.float32(1e-44))
    assert np.float32(tiny / 127) == 0
    assert symmetric_scale(tiny) == 1.0
    assert symmetric_scale(0.0) == 1.0
    assert symmetric_scale(float("inf")) == 1.0
    assert symmetric_scale(float("nan")) == 1.0
    assert symmetric_scale(127.0) == 1.0
    assert symmetric_scale(2.54) == float(np.float32(0.02))
