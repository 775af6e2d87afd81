"""The `spatten` dialect: SpAtten's cascade token and head pruning (Wang et al., HPCA 2021).

`insert-spatten` (passes/insert_spatten.py) emits per self-attention layer, on the layer's own
FP32 Q, K, V (quantized to INT8 as the attention does) and the previous layer's scores:

    %tok, %hd, %s, %hs = spatten.select %q, %k, %v [mask %m] [scores %s0, %hs0] heads(H)
        token_keep(0.7) head_keep(1.0) requant_threshold(0.1) q_scale(..) k_scale(..)
        v_scale(..) scale(..) [causal]

and gives the attention `tokens(%tok) head_mask(%hd)`. Per batch element: the keep masks are
the top-k of the earlier layers' accumulated scores %s0 [B, L] and %hs0 [B, H] (everything
when absent: the first layer); then this layer's importance (the probability each kept token
receives, over kept heads and rows; the magnitude of each kept head's output) is added, pruned
entries becoming -inf: %s, %hs, which the next layer reads. Numerics:
runtime/spatten_kernels.py; interpreter: esact_cc/interpreter/interpret_spatten_ops.py.
"""

from __future__ import annotations

import math

from xdsl.dialects.builtin import I64, Float32Type, FloatAttr, IntegerAttr, TensorType, \
    UnitAttr, f32, i8, i64
from xdsl.ir import Attribute, Dialect, SSAValue
from xdsl.irdl import AttrSizedOperandSegments, IRDLOperation, irdl_op_definition, \
    operand_def, opt_operand_def, opt_prop_def, prop_def, result_def, traits_def
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from esact_cc.dialects.gemm_ops import f32_attr
from esact_cc.dialects.shape_checks import fmt, require, require_positive, shape


@irdl_op_definition
class SelectOp(IRDLOperation):
    """SpAtten's token / head keep masks of one layer and the scores it passes on."""

    name = "spatten.select"

    q = operand_def(TensorType)
    k = operand_def(TensorType)
    v = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    """The attention's additive mask, broadcastable to [B, H, L, L]."""
    scores = opt_operand_def(TensorType)
    """Accumulated token scores of the earlier layers [B, L] f32 (-inf = pruned)."""
    head_scores = opt_operand_def(TensorType)
    """Accumulated head scores of the earlier layers [B, H] f32 (-inf = pruned)."""
    num_heads = prop_def(IntegerAttr[I64])
    token_keep = prop_def(FloatAttr[Float32Type])
    """Fraction of the still-kept tokens this layer keeps."""
    head_keep = prop_def(FloatAttr[Float32Type])
    protect = prop_def(IntegerAttr[I64])
    """The first `protect` tokens are never pruned (the class token)."""
    requant_threshold = prop_def(FloatAttr[Float32Type])
    """A row whose MSB probabilities peak below it re-fetches its LSBs."""
    q_scale = prop_def(FloatAttr[Float32Type])
    k_scale = prop_def(FloatAttr[Float32Type])
    v_scale = prop_def(FloatAttr[Float32Type])
    scale = prop_def(FloatAttr[Float32Type])
    causal = opt_prop_def(UnitAttr)
    tokens = result_def(TensorType)
    heads = result_def(TensorType)
    new_scores = result_def(TensorType)
    new_head_scores = result_def(TensorType)

    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)

    # Generic form: three optional operands make a declarative format ambiguous in xDSL.

    def __init__(self, q: SSAValue, k: SSAValue, v: SSAValue, mask: SSAValue | None,
                 scores: SSAValue | None, head_scores: SSAValue | None, *, num_heads: int,
                 token_keep: float, head_keep: float, protect: int, requant_threshold: float,
                 q_scale: float, k_scale: float, v_scale: float, scale: float, causal: bool):
        batch, length, _ = shape(q)
        props: dict[str, Attribute] = {
            "num_heads": IntegerAttr(num_heads, i64), "token_keep": f32_attr(token_keep),
            "head_keep": f32_attr(head_keep), "protect": IntegerAttr(protect, i64),
            "requant_threshold": f32_attr(requant_threshold),
            "q_scale": f32_attr(q_scale), "k_scale": f32_attr(k_scale),
            "v_scale": f32_attr(v_scale), "scale": f32_attr(scale)}
        if causal:
            props["causal"] = UnitAttr()
        super().__init__(
            operands=[q, k, v, mask, scores, head_scores], properties=props,
            result_types=[TensorType(i8, [batch, length]), TensorType(i8, [batch, num_heads]),
                          TensorType(f32, [batch, length]), TensorType(f32, [batch, num_heads])])

    def verify_(self) -> None:
        for what in ("token_keep", "head_keep"):
            ratio = getattr(self, what).value.data
            if not (math.isfinite(ratio) and 0.0 < ratio <= 1.0):
                raise VerifyException(f"{self.name}: {what} must be in (0, 1], got {ratio}")
        if self.protect.value.data < 0:
            raise VerifyException(f"{self.name}: protect must be >= 0, got "
                                  f"{self.protect.value.data}")
        t = self.requant_threshold.value.data
        if not (math.isfinite(t) and 0.0 <= t <= 1.0):
            raise VerifyException(f"{self.name}: requant_threshold must be in [0, 1], got {t}")
        for what in ("q_scale", "k_scale", "v_scale", "scale"):
            require_positive(self, what, getattr(self, what))
        q, k, v = shape(self.q), shape(self.k), shape(self.v)
        if len(q) != 3 or q != k or len(v) != 3 or v[:2] != q[:2]:
            raise VerifyException(f"{self.name}: q, k, v must be [B, L, N] of one B and L "
                                  f"(self-attention), got {fmt(q)}, {fmt(k)}, {fmt(v)}")
        heads = self.num_heads.value.data
        if heads <= 0 or q[2] % heads or v[2] % heads:
            raise VerifyException(f"{self.name}: num_heads {heads} does not divide "
                                  f"{q[2]} and {v[2]}")
        if (self.scores is None) != (self.head_scores is None):
            raise VerifyException(f"{self.name}: scores and head_scores go together")
        for value, dims, el in ((self.tokens, (q[0], q[1]), i8), (self.heads, (q[0], heads), i8),
                                (self.new_scores, (q[0], q[1]), f32),
                                (self.new_head_scores, (q[0], heads), f32),
                                (self.scores, (q[0], q[1]), f32),
                                (self.head_scores, (q[0], heads), f32)):
            if value is not None:
                require(self, "operand or result", value, dims, el)
        if self.mask is not None:
            m, target = shape(self.mask), (q[0], heads, q[1], q[1])
            if len(m) > 4 or any(d not in (1, t) for d, t in zip(reversed(m), reversed(target))):
                raise VerifyException(f"{self.name}: mask {fmt(m)} does not broadcast to "
                                      f"{fmt(target)}")


SPATTEN = Dialect("spatten", [SelectOp], [])
