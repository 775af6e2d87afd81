"""`transformer.rotary`: rotary position embedding (RoPE) of projected Q or K.

The exporters apply it per head, after the head split ([B, H, L, d]):
    out = x * cos + rotate_half(x) * sin,  rotate_half(x) = concat(-x[..., R/2:], x[..., :R/2])
on the first R = rotary_dim channels of each head (LLaMA, Mistral, Qwen2: R = d; Phi, GPT-NeoX:
partial, the other d - R channels pass through). Position p's cos / sin rows are the same for
every head and batch element, so the op works on the projection before the head split,
x [B, L, H * d], with head h the contiguous channel block [h * d, (h + 1) * d): the attention op
then splits heads as usual. cos and sin are [L, R] tables (handles into the weight store; the
lift folds them from the exporter's constants) or [B or 1, L, R] values (computed on the host
from explicit position ids). Semantics: `runtime/rotary_kernels.py`, one
function the interpreter and the hardware's ROPE instruction share.
"""

from __future__ import annotations

from xdsl.dialects.builtin import I64, IntegerAttr, TensorType, i64
from xdsl.ir import Attribute, SSAValue
from xdsl.irdl import IRDLOperation, irdl_op_definition, operand_def, prop_def, result_def, traits_def
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from esact_cc.dialects.shape_checks import fmt, require_rank, shape, shapes_agree


@irdl_op_definition
class RotaryOp(IRDLOperation):
    """x [B, L, H * d] -> the same with each head's first rotary_dim channels rotated."""

    name = "transformer.rotary"

    x = operand_def(TensorType)
    """Projected Q or K [B, L, H * d]."""
    cos = operand_def(TensorType)
    """cos table [L, rotary_dim] (row p: position p) or [B or 1, L, rotary_dim]."""
    sin = operand_def(TensorType)
    """sin table, the shape of cos."""
    num_heads = prop_def(IntegerAttr[I64])
    """H: heads in x's last axis."""
    rotary_dim = prop_def(IntegerAttr[I64])
    """R: rotated channels at the start of each head (even, <= d)."""
    result = result_def(TensorType)
    """Same shape as x."""

    traits = traits_def(Pure())

    assembly_format = (
        "$x `,` $cos `,` $sin `heads` `(` $num_heads `)` `rotary_dim` `(` $rotary_dim `)`"
        " attr-dict `:` functional-type(operands, results)"
    )

    def __init__(self, x: SSAValue, cos: SSAValue, sin: SSAValue, num_heads: int,
                 rotary_dim: int, result_type: Attribute):
        super().__init__(
            operands=[x, cos, sin],
            properties={"num_heads": IntegerAttr(num_heads, i64),
                        "rotary_dim": IntegerAttr(rotary_dim, i64)},
            result_types=[result_type],
        )

    @property
    def heads(self) -> int:
        return self.num_heads.value.data

    @property
    def rotated(self) -> int:
        return self.rotary_dim.value.data

    def verify_(self) -> None:
        x, y = shape(self.x), shape(self.result)
        require_rank(self.name, "x", x, (3,))
        heads, rotated = self.heads, self.rotated
        if heads < 1 or x[2] % heads:
            raise VerifyException(f"{self.name}: heads {heads} does not divide width {x[2]}")
        head_dim = x[2] // heads
        if rotated < 2 or rotated % 2 or rotated > head_dim:
            raise VerifyException(f"{self.name}: rotary_dim {rotated} must be even, >= 2 and "
                                  f"<= the head width {head_dim}")
        for what, value in (("cos", self.cos), ("sin", self.sin)):
            got = shape(value)
            if not (shapes_agree(got, (x[1], rotated)) or shapes_agree(got, (x[0], x[1], rotated))
                    or shapes_agree(got, (1, x[1], rotated))):
                raise VerifyException(f"{self.name}: {what} must be {fmt((x[1], rotated))} or "
                                      f"{fmt((x[0], x[1], rotated))}, got {fmt(got)}")
        if not shapes_agree(y, x):
            raise VerifyException(f"{self.name}: result must be {fmt(x)}, got {fmt(y)}")
