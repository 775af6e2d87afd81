"""A normalization op defined entirely under test/: ScaleNorm (Nguyen and Salazar, 2019),
y = g * x / sqrt(sum(x^2) + epsilon) over the last axis, g one learned scalar.

The op is these four files, the four a built-in norm op takes (docs/design.md section 11):
- this module: the op, a `ScaledNormOp` (so it is a `NormOp`: layer roles, dead rows, the
  SPLS layer walk and the lift summary take it unedited), and what makes it an RMS norm;
- scale_norm_lift.py: the lift pattern, registered in its phase by `@register_lift_pattern`;
- scale_norm_interpreter.py: its reference semantics (`reference_interpreter.register`);
- scale_norm_lowering.py: its rule (`register_lowering`), RMSNORM with the gamma row and
  epsilon below, so it needs no instruction of its own.
No file outside test/ names it.
"""

from __future__ import annotations

import numpy as np
from xdsl.ir import Dialect
from xdsl.irdl import irdl_op_definition

from esact_cc.dialects.transformer import ScaledNormOp


@irdl_op_definition
class ScaleNormOp(ScaledNormOp):
    """g * x / sqrt(sum(x^2) + epsilon) over the last axis; gamma is the handle of g [1]."""

    name = "scale_norm.scale_norm"

    def gamma_shape(self, width: int) -> tuple[int, ...]:
        return (1,)


SCALE_NORM = Dialect("scale_norm", [ScaleNormOp], [])


def as_rms_norm(g: float, epsilon: float, width: int) -> tuple[np.ndarray, float]:
    """(gamma row, epsilon) of the RMS norm equal to ScaleNorm over `width` channels:
    g x / sqrt(sum + eps) = x / sqrt(mean + eps / N) * g / sqrt(N). Epsilon is rounded to
    float32, as the RMSNORM instruction's field holds it."""
    gamma = np.full(width, g / np.sqrt(width), np.float32)
    return gamma, float(np.float32(epsilon / width))
