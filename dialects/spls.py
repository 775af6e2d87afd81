"""The `spls` dialect: SPLS prediction ops and the masked (sparse) forms of the GEMM ops.

docs/design.md section 6 in IR. `insert-spls` emits, per layer, on the Q/K/V projection input X:

- `spls.hlog_quantize`      X -> (HLog level values i32, per-tensor scale f32[]) (`bits`)
- `spls.predict_attention`  HLog X, HLog W_Q/W_K (+ FP32 biases) -> PAM [B, H, L, L] f32:
                            the BPU's shift-add estimate of the scaled logits Q K^T * scale;
                            masked (padding / causal) positions are -inf; with `kv_heads`
                            (grouped / multi-query attention) K^ has kv_heads heads and query
                            head h predicts against K^ head h // (heads / kv_heads)
- `spls.topk`               row-wise top-k of PAM -> SPA, the element mask [B, H, L, L] i1
- `spls.local_similarity`   SPA (+ softmax(PAM) for `cosprob`) -> reuse map [B, L] i32
                            (-1 = computed row, else the representative row) and the per-head
                            key mask [B, H, L] i1 (keys some computed row selects)

and gives the layer's GEMM-bearing ops (`transformer.linear` / `transformer.attention`, FP32 or
INT8) the masks as OPERANDS (`rows(%reuse_map)`, `keys(%key_mask) heads(H)`, `spa(%spa)`; see
`dialects/gemm_ops.py`), so a lowering reads them like any value (MBUF data of the TOPK /
SIMILARITY instructions).

Mask types: masks are builtin tensors with fixed element types, checked by the verifiers:
element mask (SPA) `tensor<BxHxLqxLkxi1>`, key mask `tensor<BxHxLkxi1>`, reuse map
`tensor<BxLxi32>`, HLog codes `tensor<...xi32>` (signed level values of
`runtime.spls_kernels.hlog_levels`), HLog scale `tensor<f32>`. Numerics live in
`runtime/spls_kernels.py`; interpreter semantics in `esact_cc.interpreter.interpret_spls_ops`.
"""

from __future__ import annotations

import math

from esact_cc.runtime.spls_kernels import MAX_HLOG_BITS, MIN_HLOG_BITS, SIMILARITY_MODES
from xdsl.dialects.builtin import (
    I64,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    TensorType,
    i1,
    i32,
    i64,
)
from xdsl.ir import Attribute, Dialect, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from esact_cc.dialects.attention_prediction import AttentionPredictionOp
from esact_cc.dialects.gemm_ops import f32_attr as _f32
from esact_cc.dialects.shape_checks import element as _element
from esact_cc.dialects.shape_checks import fmt as _fmt
from esact_cc.dialects.shape_checks import require as _require
from esact_cc.dialects.shape_checks import require_positive as _check_positive
from esact_cc.dialects.shape_checks import shape as _shape


def _i64(value: int) -> IntegerAttr:
    return IntegerAttr(value, i64)


def _check_bits(op: IRDLOperation, bits: IntegerAttr) -> None:
    n = bits.value.data
    if not MIN_HLOG_BITS <= n <= MAX_HLOG_BITS:
        raise VerifyException(f"{op.name}: bits must be in [{MIN_HLOG_BITS}, {MAX_HLOG_BITS}], "
                              f"got {n}")


def _is_int(value: SSAValue, width: int) -> bool:
    el = _element(value)
    return isinstance(el, IntegerType) and el.width.data == width


# ----------------------------------------------------------------------------- prediction


@irdl_op_definition
class HLogQuantizeOp(IRDLOperation):
    """HLog quantization of a tensor: nearest level of |x| / scale, sign and zero kept.

    Without `scale` the scale is max|x| / 2^(bits-1) of each batch element (x's dims before
    its last two: rows, columns), dynamic, so the elements of a batch stay independent (a
    batch-B program computes what B batch-1 programs do); with `scale` it is that calibrated
    constant for every element.
    """

    name = "spls.hlog_quantize"

    x = operand_def(TensorType)
    """FP32 tensor to quantize."""
    bits = prop_def(IntegerAttr[I64])
    """HLog bits n: levels {0, 2^0, 2^1, 2^0+2^1, ..., 2^(n-1)}."""
    scale = opt_prop_def(FloatAttr[Float32Type])
    """Optional static scale (calibrated); absent = max|x| / 2^(n-1) per batch element."""
    codes = result_def(TensorType)
    """Signed HLog level values, same shape as x, i32."""
    code_scale = result_def(TensorType)
    """The scale of each batch element, f32 of x's batch dims (x[b] ~ codes[b] * scale[b])."""

    traits = traits_def(Pure())

    assembly_format = (
        "$x `bits` `(` $bits `)` (`scale` `(` $scale^ `)`)? attr-dict"
        " `:` functional-type(operands, results)"
    )

    def __init__(self, x: SSAValue, bits: int, scale: float | None = None):
        props: dict[str, Attribute] = {"bits": _i64(bits)}
        if scale is not None:
            props["scale"] = _f32(scale)
        x_type = x.type
        assert isinstance(x_type, TensorType)
        super().__init__(operands=[x], properties=props,
                         result_types=[TensorType(i32, x_type.get_shape()),
                                       TensorType(Float32Type(), x_type.get_shape()[:-2])])

    def verify_(self) -> None:
        _check_bits(self, self.bits)
        if self.scale is not None:
            _check_positive(self, "scale", self.scale)
        _require(self, "codes", self.codes, _shape(self.x), i32)
        _require(self, "scale result", self.code_scale, _shape(self.x)[:-2], Float32Type())


@irdl_op_definition
class PredictAttentionOp(AttentionPredictionOp):
    """Predicted attention PAM per head from HLog-coded X, W_Q, W_K (the BPU).

    Q^ = X_c W_Qc (shift-adds), dequantized by x_scale[b] * wq_scale (+ bq) and re-quantized
    to HLog (`bits`, dynamic scale per batch element); likewise K^; PAM_h = Q^_h K^_h^T
    (shift-adds), dequantized and multiplied by `scale`; then the additive `mask` is added and
    positions it masks (value <= -1e4) or that `causal` masks become -inf, so they are never
    selected.
    """

    name = "spls.predict_attention"

    x = operand_def(TensorType)
    """HLog codes of X [B, L, D] (i32)."""
    x_scale = operand_def(TensorType)
    """Scale of X's codes per batch element (tensor<Bxf32>)."""
    wq = operand_def(TensorType)
    """HLog codes of W_Q [D, N] (i32 weight handle)."""
    wq_scale = operand_def(TensorType)
    """Scale of W_Q's codes (tensor<f32> weight handle)."""
    wk = operand_def(TensorType)
    """HLog codes of W_K [D, Nk] (Nk = kv_heads x N / heads: one column block per K head)."""
    wk_scale = operand_def(TensorType)
    """Scale of W_K's codes."""
    bq = operand_def(TensorType)
    """FP32 Q bias [N] (the pass supplies zeros for a bias-free projection)."""
    bk = operand_def(TensorType)
    """FP32 K bias [Nk]."""
    mask = opt_operand_def(TensorType)
    """Optional additive mask broadcastable to [B, H, L, L] (the attention's own mask)."""
    bits = prop_def(IntegerAttr[I64])
    """HLog bits of the re-quantized Q^ and K^."""
    kv_heads = opt_prop_def(IntegerAttr[I64])
    """K^ heads (grouped / multi-query attention, the attention's `kv_heads`); absent =
    num_heads. K^ is predicted once per K head, not repeated per query head."""
    result = result_def(TensorType)
    """PAM [B, H, L, L] f32."""

    assembly_format = (
        "$x `,` $x_scale `,` $wq `,` $wq_scale `,` $wk `,` $wk_scale"
        " `bias` `(` $bq `,` $bk `)` (`mask` $mask^)?"
        " `heads` `(` $num_heads `)` (`kv_heads` `(` $kv_heads^ `)`)?"
        " `bits` `(` $bits `)` `scale` `(` $scale `)`"
        " (`causal` $causal^)? attr-dict `:` functional-type(operands, results)"
    )

    def __init__(self, x: SSAValue, x_scale: SSAValue, wq: SSAValue, wq_scale: SSAValue,
                 wk: SSAValue, wk_scale: SSAValue, bq: SSAValue, bk: SSAValue,
                 mask: SSAValue | None, num_heads: int, bits: int, scale: float, causal: bool,
                 kv_heads: int | None = None):
        b, length, _ = _shape(x)
        props = self.properties({"num_heads": num_heads, "bits": bits, "scale": scale},
                                ints=("num_heads", "bits"), causal=causal)
        if kv_heads is not None and kv_heads != num_heads:
            props["kv_heads"] = _i64(kv_heads)
        super().__init__(
            operands=[x, x_scale, wq, wq_scale, wk, wk_scale, bq, bk, mask], properties=props,
            result_types=[TensorType(Float32Type(), [b, num_heads, length, length])])

    @property
    def key_heads(self) -> int:
        """K^ heads: kv_heads, or num_heads when absent."""
        return self.num_heads.value.data if self.kv_heads is None else self.kv_heads.value.data

    def verify_(self) -> None:
        _check_bits(self, self.bits)
        x = _shape(self.x)
        if len(x) != 3 or not _is_int(self.x, 32):
            raise VerifyException(f"{self.name}: x must be [B, L, D] i32 HLog codes, "
                                  f"got {self.x.type}")
        batch, length, dim = x
        wq = _shape(self.wq)
        if len(wq) != 2 or wq[0] != dim or not _is_int(self.wq, 32):
            raise VerifyException(f"{self.name}: wq must be [{dim}, N] i32 HLog codes, "
                                  f"got {self.wq.type}")
        heads, kv_heads = self.num_heads.value.data, self.key_heads
        if kv_heads <= 0 or heads % kv_heads:
            raise VerifyException(f"{self.name}: kv_heads {kv_heads} does not divide "
                                  f"num_heads {heads}")
        target = (batch, heads, length, length)
        self.verify_attention_side(self.mask, target, N=wq[1])
        k_width = wq[1] // heads * kv_heads
        _require(self, "wk", self.wk, (dim, k_width), i32)
        _require(self, "x_scale", self.x_scale, (batch,), Float32Type())
        for what, value in (("wq_scale", self.wq_scale), ("wk_scale", self.wk_scale)):
            _require(self, what, value, (), Float32Type())
        for what, value, width in (("bq", self.bq, wq[1]), ("bk", self.bk, k_width)):
            _require(self, what, value, (width,))
        _require(self, "result", self.result, target, Float32Type())


@irdl_op_definition
class TopKOp(IRDLOperation):
    """Row-wise top-k of scores: SPA. Ties: lower key index wins; -inf entries are never
    selected; a row with fewer than k selectable keys keeps them all."""

    name = "spls.topk"

    scores = operand_def(TensorType)
    """PAM [B, H, Lq, Lk] f32."""
    k = prop_def(IntegerAttr[I64])
    """Keys kept per row (the pass computes it from `k-ratio` and L)."""
    result = result_def(TensorType)
    """SPA element mask [B, H, Lq, Lk] i1."""

    traits = traits_def(Pure())

    assembly_format = "$scores `k` `(` $k `)` attr-dict `:` functional-type(operands, results)"

    def __init__(self, scores: SSAValue, k: int):
        super().__init__(operands=[scores], properties={"k": _i64(k)},
                         result_types=[TensorType(i1, _shape(scores))])

    def verify_(self) -> None:
        s = _shape(self.scores)
        if len(s) != 4:
            raise VerifyException(f"{self.name}: scores must be [B, H, Lq, Lk], got {_fmt(s)}")
        k = self.k.value.data
        if not 1 <= k <= s[3]:
            raise VerifyException(f"{self.name}: k must be in [1, {s[3]}], got {k}")
        _require(self, "result", self.result, s, i1)


@irdl_op_definition
class LocalSimilarityOp(IRDLOperation):
    """Reuse map and per-head key mask from SPA (docs/design.md section 6 step 4).

    Row i compares itself with the last `window` computed rows (reused rows are never
    references): `overlap` = mean over heads of |SPA_i & SPA_j| / k, `cosprob` = mean over
    heads of the cosine of softmax(PAM) rows (needs the `pam` operand). The best score >=
    `threshold` makes i reuse that row (ties: the most recent).
    """

    name = "spls.local_similarity"

    spa = operand_def(TensorType)
    """SPA [B, H, L, L] i1."""
    pam = opt_operand_def(TensorType)
    """PAM [B, H, L, L] f32 (its masked softmax is compared), for `cosprob`."""
    window = prop_def(IntegerAttr[I64])
    """Number of previous computed rows compared."""
    threshold = prop_def(FloatAttr[Float32Type])
    """Minimum similarity for reuse (> 1 disables reuse)."""
    mode = prop_def(StringAttr)
    """"overlap" or "cosprob"."""
    k = prop_def(IntegerAttr[I64])
    """The top-k k (the `overlap` denominator)."""
    first_reference = opt_prop_def(IntegerAttr[I64])
    """Rows before this index are always computed and never representatives (absent = 0, as
    docs/design.md; 1 keeps a leading [CLS] out of every window)."""
    reuse_map = result_def(TensorType)
    """[B, L] i32: -1 = computed row, else the representative row index."""
    key_mask = result_def(TensorType)
    """[B, H, L] i1: keys some computed row's SPA selects."""

    traits = traits_def(Pure())

    assembly_format = (
        "$spa (`probs` `(` $pam^ `)`)? `mode` `(` $mode `)` `window` `(` $window `)`"
        " `threshold` `(` $threshold `)` `k` `(` $k `)`"
        " (`first_reference` `(` $first_reference^ `)`)? attr-dict"
        " `:` functional-type(operands, results)"
    )

    def __init__(self, spa: SSAValue, pam: SSAValue | None, mode: str, window: int,
                 threshold: float, k: int, first_reference: int = 0):
        b, h, length, _ = _shape(spa)
        props: dict[str, Attribute] = {"window": _i64(window), "threshold": _f32(threshold),
                                       "mode": StringAttr(mode), "k": _i64(k)}
        if first_reference:
            props["first_reference"] = _i64(first_reference)
        super().__init__(
            operands=[spa, pam],
            properties=props,
            result_types=[TensorType(i32, [b, length]), TensorType(i1, [b, h, length])])

    def verify_(self) -> None:
        s = _shape(self.spa)
        if len(s) != 4 or s[2] != s[3] or not _is_int(self.spa, 1):
            raise VerifyException(f"{self.name}: spa must be [B, H, L, L] i1, got {self.spa.type}")
        mode = self.mode.data
        if mode not in SIMILARITY_MODES:
            raise VerifyException(f"{self.name}: mode must be one of "
                                  f"{', '.join(SIMILARITY_MODES)}, got {mode!r}")
        if mode == "cosprob" and self.pam is None:
            raise VerifyException(f"{self.name}: mode cosprob needs the probs (PAM) operand")
        if self.pam is not None:
            _require(self, "probs", self.pam, s, Float32Type())
        if self.window.value.data < 0:
            raise VerifyException(f"{self.name}: window must be >= 0, got "
                                  f"{self.window.value.data}")
        if not 1 <= self.k.value.data <= s[3]:
            raise VerifyException(f"{self.name}: k must be in [1, {s[3]}], got {self.k.value.data}")
        if self.first_reference is not None and not 0 <= self.first_reference.value.data <= s[2]:
            raise VerifyException(f"{self.name}: first_reference must be in [0, {s[2]}], got "
                                  f"{self.first_reference.value.data}")
        if not math.isfinite(self.threshold.value.data):
            raise VerifyException(f"{self.name}: threshold must be finite")
        _require(self, "reuse map", self.reuse_map, (s[0], s[2]), i32)
        _require(self, "key mask", self.key_mask, (s[0], s[1], s[3]), i1)


SPLS = Dialect("spls", [HLogQuantizeOp, PredictAttentionOp, TopKOp, LocalSimilarityOp], [])
