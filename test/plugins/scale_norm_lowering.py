"""The lowering rule of `scale_norm.scale_norm`: RMSNORM on row chunks with the gamma row and
epsilon of its RMS form (`lower_modern_blocks.emit_rms_norm`)."""

from __future__ import annotations

from esact_cc.passes.lower_modern_blocks import emit_rms_norm
from esact_cc.passes.lowering_state import Lowering, node_name, register_lowering
from scale_norm import ScaleNormOp, as_rms_norm


def lower_scale_norm(lw: Lowering, op: ScaleNormOp) -> None:
    g = float(lw.weight_array(op.gamma, "scale").reshape(-1)[0])
    width = op.x.type.get_shape()[-1]  # type: ignore[attr-defined]
    gamma, epsilon = as_rms_norm(g, op.epsilon.value.data, width)
    emit_rms_norm(lw, op.x, op.result, gamma, epsilon, node_name(op) or "scale_norm")


register_lowering(ScaleNormOp, lower_scale_norm)
