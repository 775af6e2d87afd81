"""The `sanger` dialect: Sanger's attention prediction (Lu et al., MICRO 2021) as one op.

`insert-sanger` (passes/insert_sanger.py) emits per attention layer, on the attention's own
Q and K (FP32, before the attention quantizes them with its `q_scale` / `k_scale`):

    %spa = sanger.predict_mask %q, %k [mask %m] heads(H) bits(4) threshold(0.002)
             q_scale(..) k_scale(..) scale(..) [causal] : (...) -> tensor<BxHxLqxLkxi1>

and gives the attention `spa(%spa)`: the per-query key mask every masked attention reads.
Semantics (interpreter: esact_cc/interpreter/interpret_sanger_ops.py; numerics:
runtime/sanger_kernels.py, shared with the SANGER_PREDICT instruction): Q and K quantized to
INT8 as the attention does, re-quantized to `bits`, predicted logits = product * score scale,
softmax with the additive `mask` and causality, kept where the probability > `threshold`
(and each row's top key).
"""

from __future__ import annotations

import math

from xdsl.dialects.builtin import I64, Float32Type, FloatAttr, IntegerAttr, TensorType, \
    UnitAttr, i1
from xdsl.ir import Dialect, SSAValue
from xdsl.irdl import irdl_op_definition, operand_def, opt_operand_def, opt_prop_def, \
    prop_def, result_def
from xdsl.utils.exceptions import VerifyException

from esact_cc.dialects.attention_prediction import Int8AttentionPredictionOp
from esact_cc.dialects.shape_checks import fmt, require, shape
from esact_cc.runtime.sanger_kernels import MAX_BITS, MIN_BITS


@irdl_op_definition
class PredictMaskOp(Int8AttentionPredictionOp):
    """Sanger's predicted per-query key mask [B, H, Lq, Lk] from Q [B, Lq, N], K [B, Lk, N]."""

    name = "sanger.predict_mask"

    q = operand_def(TensorType)
    """FP32 queries [B, Lq, N] (the attention's Q operand)."""
    k = operand_def(TensorType)
    """FP32 keys [B, Lk, N]."""
    mask = opt_operand_def(TensorType)
    """The attention's additive mask, broadcastable to [B, H, Lq, Lk]."""
    bits = prop_def(IntegerAttr[I64])
    """Low-bit width of the predicted Q and K."""
    threshold = prop_def(FloatAttr[Float32Type])
    """Keep positions whose predicted probability exceeds it."""
    normalize_qk = opt_prop_def(UnitAttr)
    """Unit-norm Q and K rows before the low-bit quantization (Sanger's `inner_product`)."""
    result = result_def(TensorType)
    """The element mask [B, H, Lq, Lk] i1."""

    assembly_format = (
        "$q `,` $k (`mask` $mask^)? `heads` `(` $num_heads `)` `bits` `(` $bits `)`"
        " `threshold` `(` $threshold `)` `q_scale` `(` $q_scale `)` `k_scale` `(` $k_scale `)`"
        " `scale` `(` $scale `)` (`causal` $causal^)? (`normalize_qk` $normalize_qk^)? attr-dict"
        " `:` functional-type(operands, results)"
    )

    def __init__(self, q: SSAValue, k: SSAValue, mask: SSAValue | None, *, num_heads: int,
                 bits: int, threshold: float, q_scale: float, k_scale: float, scale: float,
                 causal: bool, normalize_qk: bool = False):
        batch, lq, _ = shape(q)
        lk = shape(k)[1]
        props = self.properties(
            {"num_heads": num_heads, "bits": bits, "threshold": threshold, "q_scale": q_scale,
             "k_scale": k_scale, "scale": scale}, ints=("num_heads", "bits"), causal=causal)
        if normalize_qk:
            props["normalize_qk"] = UnitAttr()
        super().__init__(operands=[q, k, mask], properties=props,
                         result_types=[TensorType(i1, [batch, num_heads, lq, lk])])

    def verify_(self) -> None:
        bits = self.bits.value.data
        if not MIN_BITS <= bits <= MAX_BITS:
            raise VerifyException(f"{self.name}: bits must be in [{MIN_BITS}, {MAX_BITS}], "
                                  f"got {bits}")
        threshold = self.threshold.value.data
        if not (math.isfinite(threshold) and 0.0 <= threshold < 1.0):
            raise VerifyException(f"{self.name}: threshold must be in [0, 1), got {threshold}")
        q, k = shape(self.q), shape(self.k)
        if len(q) != 3 or len(k) != 3 or q[0] != k[0] or q[2] != k[2]:
            raise VerifyException(f"{self.name}: q and k must be [B, L, N] with one B and N, "
                                  f"got {fmt(q)} and {fmt(k)}")
        target = (q[0], self.num_heads.value.data, q[1], k[1])
        self.verify_attention_side(self.mask, target, N=q[2])
        require(self, "result", self.result, target, i1)


SANGER = Dialect("sanger", [PredictMaskOp], [])
