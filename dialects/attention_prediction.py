"""The bases of scheme ops that predict an attention's masks (`spls.predict_attention`;
`sanger.predict_mask` and `spatten.select`, from the attention's own INT8 codes): the
attention's heads, logit scale, causality and INT8 scales as properties, how a constructor
builds them and how a verifier checks them. Operands stay in each op (their order is the op's
generic form).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import ClassVar

from xdsl.dialects.builtin import I64, Float32Type, FloatAttr, IntegerAttr, UnitAttr, i64
from xdsl.ir import Attribute, SSAValue
from xdsl.irdl import IRDLOperation, opt_prop_def, prop_def, traits_def
from xdsl.traits import Pure

from esact_cc.dialects.gemm_ops import f32_attr
from esact_cc.dialects.shape_checks import require_broadcast, require_heads, require_positives


class AttentionPredictionOp(IRDLOperation):
    """Properties shared with the attention the op predicts for (subclasses add their own)."""

    num_heads = prop_def(IntegerAttr[I64])
    """The attention's heads; divides the widths the verifier names."""
    scale = prop_def(FloatAttr[Float32Type])
    """The attention's logit scale (1 / sqrt(d_head))."""
    causal = opt_prop_def(UnitAttr)
    """If present, key j is masked for query i when j > i."""

    traits = traits_def(Pure())

    SCALES: ClassVar[tuple[str, ...]] = ("scale",)
    """The float properties that must be finite and positive."""

    @staticmethod
    def properties(values: Mapping[str, float], *, ints: Collection[str],
                   causal: bool) -> dict[str, Attribute]:
        """A constructor's property dict, in `values`' order: i64 for the names in `ints`, f32
        for the others, then `causal`."""
        props: dict[str, Attribute] = {
            name: IntegerAttr(int(value), i64) if name in ints else f32_attr(value)
            for name, value in values.items()}
        if causal:
            props["causal"] = UnitAttr()
        return props

    def verify_attention_side(self, mask: SSAValue | None, target: tuple[int, ...],
                              **widths: int) -> None:
        """Scales positive, heads dividing `widths`, the additive mask broadcasting to the
        scores `target` [B, H, Lq, Lk]."""
        require_positives(self, *self.SCALES)
        require_heads(self, self.num_heads.value.data, **widths)
        if mask is not None:
            require_broadcast(self, "mask", mask, target)


class Int8AttentionPredictionOp(AttentionPredictionOp):
    """A prediction from the INT8 codes the attention quantizes anyway: its Q and K scales."""

    q_scale = prop_def(FloatAttr[Float32Type])
    """The attention's INT8 Q scale."""
    k_scale = prop_def(FloatAttr[Float32Type])

    SCALES: ClassVar[tuple[str, ...]] = ("q_scale", "k_scale", "scale")
