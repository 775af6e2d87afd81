"""Reference semantics of `scale_norm.scale_norm`: the RMSNORM row function on the RMS form
of the op (`scale_norm.as_rms_norm`), so the binary matches the interpreter bit for bit."""

from __future__ import annotations

import numpy as np

from esact_cc.interpreter.reference_interpreter import register
from esact_cc.runtime.isa_modern_blocks import rms_norm_rows
from scale_norm import ScaleNormOp, as_rms_norm


@register(ScaleNormOp.name)
def run_scale_norm(interpreter: object, op: ScaleNormOp, args: list[np.ndarray]) -> np.ndarray:
    x, g = args
    gamma, epsilon = as_rms_norm(float(g.reshape(-1)[0]), op.epsilon.value.data, x.shape[-1])
    return rms_norm_rows(x, gamma, epsilon)
