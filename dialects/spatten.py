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
from typing import ClassVar

from xdsl.dialects.builtin import I64, Float32Type, FloatAttr, IntegerAttr, TensorType, f32, \
    i8
from xdsl.ir import Dialect, SSAValue
from xdsl.irdl import AttrSizedOperandSegments, irdl_op_definition, operand_def, \
    opt_operand_def, prop_def, result_def
from xdsl.utils.exceptions import VerifyException

from esact_cc.dialects.attention_prediction import Int8AttentionPredictionOp
from esact_cc.dialects.shape_checks import fmt, require, shape


@irdl_op_definition
class SelectOp(Int8AttentionPredictionOp):
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
    token_keep = prop_def(FloatAttr[Float32Type])
    """Fraction of the still-kept tokens this layer keeps."""
    head_keep = prop_def(FloatAttr[Float32Type])
    protect = prop_def(IntegerAttr[I64])
    """The first `protect` tokens are never pruned (the class token)."""
    requant_threshold = prop_def(FloatAttr[Float32Type])
    """A row whose MSB probabilities peak below it re-fetches its LSBs."""
    v_scale = prop_def(FloatAttr[Float32Type])
    tokens = result_def(TensorType)
    heads = result_def(TensorType)
    new_scores = result_def(TensorType)
    new_head_scores = result_def(TensorType)

    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    SCALES: ClassVar[tuple[str, ...]] = (*Int8AttentionPredictionOp.SCALES, "v_scale")

    # Generic form: three optional operands make a declarative format ambiguous in xDSL.

    def __init__(self, q: SSAValue, k: SSAValue, v: SSAValue, mask: SSAValue | None,
                 scores: SSAValue | None, head_scores: SSAValue | None, *, num_heads: int,
                 token_keep: float, head_keep: float, protect: int, requant_threshold: float,
                 q_scale: float, k_scale: float, v_scale: float, scale: float, causal: bool):
        batch, length, _ = shape(q)
        props = self.properties(
            {"num_heads": num_heads, "token_keep": token_keep, "head_keep": head_keep,
             "protect": protect, "requant_threshold": requant_threshold, "q_scale": q_scale,
             "k_scale": k_scale, "v_scale": v_scale, "scale": scale},
            ints=("num_heads", "protect"), causal=causal)
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
        q, k, v = shape(self.q), shape(self.k), shape(self.v)
        if len(q) != 3 or q != k or len(v) != 3 or v[:2] != q[:2]:
            raise VerifyException(f"{self.name}: q, k, v must be [B, L, N] of one B and L "
                                  f"(self-attention), got {fmt(q)}, {fmt(k)}, {fmt(v)}")
        heads = self.num_heads.value.data
        self.verify_attention_side(self.mask, (q[0], heads, q[1], q[1]), N=q[2], Nv=v[2])
        if (self.scores is None) != (self.head_scores is None):
            raise VerifyException(f"{self.name}: scores and head_scores go together")
        for value, dims, el in ((self.tokens, (q[0], q[1]), i8), (self.heads, (q[0], heads), i8),
                                (self.new_scores, (q[0], q[1]), f32),
                                (self.new_head_scores, (q[0], heads), f32),
                                (self.scores, (q[0], q[1]), f32),
                                (self.head_scores, (q[0], heads), f32)):
            if value is not None:
                require(self, "operand or result", value, dims, el)


SPATTEN = Dialect("spatten", [SelectOp], [])
