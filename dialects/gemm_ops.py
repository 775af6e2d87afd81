"""`transformer.linear` and `transformer.attention`: the GEMM-bearing ops, one definition each.

One op per computation, at every stage: the FP32 op that `lift-transformer` makes, its INT8
form after `quantize` (quantization parameters present) and its masked forms after
`insert-spls` or a test sparsity scheme (mask operands present) are the same op with more
operands and properties filled in. Whatever produced a mask (an SPLS prediction op or a
constant in the weight store), the op reads it as a value.

Quantization (INT8 on the MAC array, FP32 in and out; numerics in
`esact_cc.interpreter.interpret_quantized_ops`):
- linear: `weight_scale(%s) input_scale(f)`: W is an INT8 handle, %s its FP32 per-output-channel
  scale [out]; x is quantized with input_scale, or per group of `group_size` input channels
  with the FP32 [G] vector `groups(handle, size)` names in the weight store; `token_scales`
  instead of input_scale: each row (token) of x, or of each group run, is quantized with a
  scale computed from the row at run time (max |x| / 127, the SFU's QUANT_ROWS).
- attention: `q_scale(..) k_scale(..) v_scale(..) p_scale(..)`: INT8 Q, K, V and probabilities;
  `p_row_scales` instead of p_scale: each query row's probabilities get the scale its largest
  one sets at run time (QUANT_ROWS), so a diffuse row over many keys keeps its resolution.

Masks (values; semantics in `esact_cc.interpreter.interpret_spls_ops`):
- `rows(%map)` (linear and self-attention): reuse map [B, L] (or [L] for every batch element),
  integer: row i with map[i] = -1 is computed, a row with map[i] = r >= 0 is not computed and
  takes row r's output (r a computed row).
- `keys(%mask) heads(H)` (linear): key mask [B, H, L] (or [H, L]), integer (nonzero = kept):
  row j of head h's output column block is computed iff kept, else 0 (SPLS K / V).
- `spa(%mask)` (attention): per-query key mask [B, H, Lq, Lk] (or [H, Lq, Lk]), integer: a
  computed row attends only to the keys its row selects.
- `tokens(%keep)` (self-attention): token-keep mask [B, L] (or [L]), integer: a pruned token
  is no key of any row and its own row is not computed (0); `head_mask(%h)`: [B, H] (or [H]),
  integer: a pruned head is not computed and contributes 0 (SpAtten's cascade pruning,
  docs/design.md section 9.2). Either excludes `spa`.

`kv_heads` (attention, default `heads`): grouped / multi-query attention; K and V have
kv_heads heads, query head h reads K/V head h // (heads / kv_heads).

Disentangled position scores (attention; DeBERTa, docs/design.md section 3.3): with
`c2p_table(%t) c2p_index(%i)`, scores gain C_h[i, j] = Q_h[i] . t[h, i_[i, j]] (content to
position), with `p2c_table(%t) p2c_index(%i)` P_h[i, j] = K_h[j] . t[h, i_[i, j]] (position to
content), both before the scale: softmax(scale * (Q_h K_h^T + C_h + P_h) + mask). Tables are
FP32 weights [H, P, d], indices integer weights [Lq, Lk] in [0, P); quantized, `c2p_scale` /
`p2c_scale` are the tables' INT8 scales (the GEMMs run in INT8 like Q K^T).
"""

from __future__ import annotations

from typing import ClassVar

from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    I64,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    TensorType,
    UnitAttr,
    i64,
)
from xdsl.ir import Attribute, SSAValue
from xdsl.irdl import (
    AttrSizedOperandSegments,
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

from esact_cc.dialects.keyword_format import KeywordFormat
from esact_cc.dialects.shape_checks import (
    dims_agree,
    element,
    fmt,
    require_mask,
    require_positive,
    require_rank,
    shape,
    shapes_agree,
)

# Largest magnitude of a symmetric INT8 code (-128 is never produced, as in the hardware).
INT8_MAX = 127
# Softmax probabilities lie in [0, 1]: quantizing them with 1/127 uses the full INT8 range.
DEFAULT_P_SCALE = 1.0 / INT8_MAX
ATTENTION_SCALES = ("q_scale", "k_scale", "v_scale", "p_scale")
"""The INT8 scales of a quantized attention, in operand order Q, K, V, then P."""
POSITION_TERMS = ("c2p", "p2c")
"""Disentangled position terms of an attention: `<term>_table`, `<term>_index`, `<term>_scale`."""
INDEX_WIDTHS = (32, 64)
"""Integer widths a position index table may have."""
REUSE_MAP_WIDTHS = (8, 32)
"""Integer widths a reuse map may have (it holds -1 and row indices)."""
KEY_MASK_WIDTHS = (1, 8, 32)
"""Integer widths a key / SPA mask may have (nonzero = kept)."""


def _is_integer(value: SSAValue, widths: tuple[int, ...]) -> bool:
    el = element(value)
    return isinstance(el, IntegerType) and el.width.data in widths


def f32_attr(value: float) -> FloatAttr:
    return FloatAttr(value, Float32Type())


class GemmOp(KeywordFormat):
    """Family base of linear and attention: the result, traits, operand segments and the
    checks both share (masks, INT8 scales)."""

    result = result_def(TensorType)

    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)

    @property
    def is_quantized(self) -> bool:
        raise NotImplementedError

    @property
    def is_masked(self) -> bool:
        """Does some mask operand restrict the work?"""
        return any(getattr(self, name, None) is not None
                   for name in ("rows", "keys", "spa", "tokens", "head_mask"))

    def _verify_rows(self, batch: int, length: int) -> None:
        rows = getattr(self, "rows")
        if rows is not None:
            require_mask(self, "rows (reuse map)", rows, (batch, length), REUSE_MAP_WIDTHS)

    def _verify_scales(self, names: tuple[str, ...]) -> None:
        present = [getattr(self, n) is not None for n in names]
        if any(present) and not all(present):
            raise VerifyException(f"{self.name}: {', '.join(names)} go together")
        for n in names:
            if getattr(self, n) is not None:
                require_positive(self, n, getattr(self, n))


@irdl_op_definition
class LinearOp(GemmOp):
    """y = x @ weight (+ bias) over the last axis of x; INT8 and masked forms (module doc)."""

    name = "transformer.linear"

    x = operand_def(TensorType)
    """Activations [..., in] (FP32; quantized inside the op when weight_scale is present)."""
    weight = operand_def(TensorType)
    """Weight handle [in, out] (an `onnx.weight`, never transposed; INT8 when quantized)."""
    weight_scale = opt_operand_def(TensorType)
    """FP32 per-output-channel scale handle [out] of an INT8 weight."""
    bias = opt_operand_def(TensorType)
    """Optional FP32 bias [out], added to every row (after dequantization)."""
    rows = opt_operand_def(TensorType)
    """Optional reuse map [B, L] (or [L]): only computed rows are computed."""
    keys = opt_operand_def(TensorType)
    """Optional key mask [B, H, L] (or [H, L]) over the `heads` output column blocks."""
    input_scale = opt_prop_def(FloatAttr[Float32Type])
    """Per-tensor scale of x: x_int8 = round(x / input_scale)."""
    group_scales = opt_prop_def(StringAttr)
    """Weight-store handle of an FP32 [G] vector: one input scale per group of `group_size`
    input channels (activations with outlier channels); replaces input_scale."""
    group_size = opt_prop_def(IntegerAttr[I64])
    """Input channels per group of `group_scales`."""
    token_scales = opt_prop_def(UnitAttr)
    """x is quantized per row with a scale computed from the row at run time (replaces
    input_scale; with group scales, per row of each group run: the groups only cut the runs)."""
    heads = opt_prop_def(IntegerAttr[I64])
    """Heads splitting the output columns into contiguous blocks (with `keys`)."""

    POSITIONAL: ClassVar[tuple[str, ...]] = ("x", "weight", "bias")
    REQUIRED: ClassVar[int] = 2
    KEYWORDS: ClassVar[tuple[str, ...]] = (
        "weight_scale",
        "input_scale",
        "group_scales",
        "group_size",
        "token_scales",
        "rows",
        "keys",
        "heads",
    )
    KIND: ClassVar[dict[str, type[Attribute]]] = {
        "input_scale": FloatAttr,
        "group_scales": StringAttr,
        "group_size": IntegerAttr,
        "token_scales": UnitAttr,
        "heads": IntegerAttr,
    }

    def __init__(
        self,
        x: SSAValue,
        weight: SSAValue,
        bias: SSAValue | None,
        result_type: Attribute,
        *,
        weight_scale: SSAValue | None = None,
        input_scale: float | None = None,
        group_scales: str | None = None,
        group_size: int | None = None,
        token_scales: bool = False,
        rows: SSAValue | None = None,
        keys: SSAValue | None = None,
        heads: int | None = None,
    ):
        properties: dict[str, Attribute] = {}
        if input_scale is not None:
            properties["input_scale"] = f32_attr(input_scale)
        if group_scales is not None and group_size is not None:
            properties["group_scales"] = StringAttr(group_scales)
            properties["group_size"] = IntegerAttr(group_size, i64)
        if token_scales:
            properties["token_scales"] = UnitAttr()
        if heads is not None:
            properties["heads"] = IntegerAttr(heads, i64)
        super().__init__(
            operands=[x, weight, weight_scale, bias, rows, keys],
            properties=properties,
            result_types=[result_type],
        )

    @property
    def is_quantized(self) -> bool:
        return self.weight_scale is not None

    def with_operands_of(self, **changes: object) -> LinearOp:
        """A copy of this op (same operands, properties, result type) with `changes` applied
        to the constructor's keyword arguments (e.g. `rows=%map`)."""
        fields: dict[str, object] = {
            "weight_scale": self.weight_scale,
            "input_scale": None if self.input_scale is None else self.input_scale.value.data,
            "group_scales": None if self.group_scales is None else self.group_scales.data,
            "group_size": None if self.group_size is None else self.group_size.value.data,
            "token_scales": self.token_scales is not None,
            "rows": self.rows,
            "keys": self.keys,
            "heads": None if self.heads is None else self.heads.value.data,
        }
        fields.update(changes)
        return LinearOp(
            self.x, self.weight, self.bias, self.result.type, **fields  # type: ignore[arg-type]
        )

    def verify_(self) -> None:
        x, w, y = shape(self.x), shape(self.weight), shape(self.result)
        require_rank(self.name, "x", x, range(1, 8))
        require_rank(self.name, "weight", w, (2,))
        if not dims_agree(x[-1], w[0]):
            raise VerifyException(
                f"{self.name}: x's last dim {x[-1]} does not match weight [in, out] = {fmt(w)}"
            )
        for what, value in (("bias", self.bias), ("weight_scale", self.weight_scale)):
            if value is not None and not shapes_agree(shape(value), (w[1],)):
                raise VerifyException(
                    f"{self.name}: {what} must be [{w[1]}], got {fmt(shape(value))}"
                )
        if not shapes_agree(y, (*x[:-1], w[1])):
            raise VerifyException(
                f"{self.name}: result must be {fmt((*x[:-1], w[1]))}, got {fmt(y)}"
            )
        self._verify_quantization()
        self._verify_masks(x, w[1])

    def _verify_quantization(self) -> None:
        if self.token_scales is not None:
            if self.input_scale is not None:
                raise VerifyException(f"{self.name}: input_scale and token_scales are exclusive")
            if self.weight_scale is None:
                raise VerifyException(f"{self.name}: token_scales needs an INT8 weight_scale")
        elif (self.weight_scale is None) != (self.input_scale is None):
            raise VerifyException(f"{self.name}: weight_scale and input_scale go together")
        if self.input_scale is not None:
            require_positive(self, "input_scale", self.input_scale)
        if (self.group_scales is None) != (self.group_size is None):
            raise VerifyException(f"{self.name}: group scales and group size go together")
        if self.group_size is not None:
            if self.weight_scale is None:
                raise VerifyException(f"{self.name}: input groups need an INT8 weight")
            if self.group_size.value.data <= 0:
                raise VerifyException(f"{self.name}: group size must be positive")

    def _verify_masks(self, x: tuple[int, ...], width: int) -> None:
        if (self.keys is None) != (self.heads is None):
            raise VerifyException(f"{self.name}: keys and heads go together")
        if not self.is_masked:
            return
        if self.rows is not None and self.keys is not None:
            raise VerifyException(f"{self.name}: rows and keys masks are exclusive")
        if len(x) != 3:
            raise VerifyException(f"{self.name}: a masked linear needs x [B, L, in], got {fmt(x)}")
        self._verify_rows(x[0], x[1])
        if self.keys is not None and self.heads is not None:
            h = self.heads.value.data
            if h <= 0 or (width != DYNAMIC_INDEX and width % h):
                raise VerifyException(f"{self.name}: heads {h} does not divide out = {width}")
            require_mask(self, "keys (key mask)", self.keys, (x[0], h, x[1]), KEY_MASK_WIDTHS)


@irdl_op_definition
class AttentionOp(GemmOp):
    """Multi-head attention: softmax(Q_h K_h^T * scale + mask [+ causal]) V_h, heads merged;
    INT8 and masked forms (module doc).

    Q, K, V are the projected activations; the op splits the last axis of Q into `num_heads`
    heads and those of K and V into `kv_heads`, and merges the outputs back in head order.
    """

    name = "transformer.attention"

    q = operand_def(TensorType)
    """Queries [B, Lq, H * d]."""
    k = operand_def(TensorType)
    """Keys [B, Lk, KVH * d]."""
    v = operand_def(TensorType)
    """Values [B, Lk, KVH * dv]."""
    mask = opt_operand_def(TensorType)
    """Optional additive FP32 mask, broadcastable to the scores [B, num_heads, Lq, Lk]."""
    rows = opt_operand_def(TensorType)
    """Optional reuse map [B, L] (or [L]): reused query rows take their representative's row."""
    spa = opt_operand_def(TensorType)
    """Optional per-query key mask [B, H, Lq, Lk] (or [H, Lq, Lk])."""
    tokens = opt_operand_def(TensorType)
    """Optional token-keep mask [B, L] (or [L]): pruned tokens are no keys, their rows are 0."""
    head_mask = opt_operand_def(TensorType)
    """Optional head mask [B, H] (or [H]): pruned heads are not computed, their output is 0."""
    c2p_table = opt_operand_def(TensorType)
    """Optional content-to-position table [H, P, d] (FP32 weight; module doc)."""
    c2p_index = opt_operand_def(TensorType)
    """Its index table [Lq, Lk], integer, in [0, P)."""
    p2c_table = opt_operand_def(TensorType)
    """Optional position-to-content table [H, P, d] (FP32 weight; module doc)."""
    p2c_index = opt_operand_def(TensorType)
    """Its index table [Lq, Lk], integer, in [0, P)."""
    num_heads = prop_def(IntegerAttr[I64])
    """Number of query heads; divides D and Dv."""
    kv_heads = opt_prop_def(IntegerAttr[I64])
    """Number of key / value heads (grouped-query attention); divides num_heads."""
    scale = prop_def(FloatAttr[Float32Type])
    """Factor applied to Q_h K_h^T (1/sqrt(head_dim) in standard attention)."""
    causal = opt_prop_def(UnitAttr)
    """If present, key j is masked for query i when j > i + (Lk - Lq)."""
    q_scale = opt_prop_def(FloatAttr[Float32Type])
    """Per-tensor INT8 scale of Q."""
    k_scale = opt_prop_def(FloatAttr[Float32Type])
    """Per-tensor INT8 scale of K."""
    v_scale = opt_prop_def(FloatAttr[Float32Type])
    """Per-tensor INT8 scale of V."""
    p_scale = opt_prop_def(FloatAttr[Float32Type])
    """INT8 scale of the softmax probabilities (1/127 by default)."""
    p_row_scales = opt_prop_def(UnitAttr)
    """Probabilities quantized per query row, scale max_k p / 127 (replaces p_scale)."""
    c2p_scale = opt_prop_def(FloatAttr[Float32Type])
    """Per-tensor INT8 scale of the c2p table (quantized attention)."""
    p2c_scale = opt_prop_def(FloatAttr[Float32Type])
    """Per-tensor INT8 scale of the p2c table (quantized attention)."""

    POSITIONAL: ClassVar[tuple[str, ...]] = ("q", "k", "v")
    REQUIRED: ClassVar[int] = 3
    KEYWORDS: ClassVar[tuple[str, ...]] = (
        "mask", "rows", "spa", "tokens", "head_mask", "c2p_table", "c2p_index", "p2c_table",
        "p2c_index", "num_heads", "kv_heads", "scale", *ATTENTION_SCALES, "c2p_scale",
        "p2c_scale", "p_row_scales", "causal",
    )
    KIND: ClassVar[dict[str, type[Attribute]]] = {
        "num_heads": IntegerAttr, "kv_heads": IntegerAttr, "scale": FloatAttr,
        **dict.fromkeys((*ATTENTION_SCALES, "c2p_scale", "p2c_scale"), FloatAttr),
        "p_row_scales": UnitAttr, "causal": UnitAttr,
    }
    SPELLING: ClassVar[dict[str, str]] = {"num_heads": "heads"}
    BARE: ClassVar[frozenset[str]] = frozenset({"mask"})

    def __init__(
        self,
        q: SSAValue,
        k: SSAValue,
        v: SSAValue,
        mask: SSAValue | None,
        num_heads: int,
        scale: float,
        causal: bool,
        result_type: Attribute,
        *,
        kv_heads: int | None = None,
        scales: tuple[float, float, float, float | None] | None = None,
        rows: SSAValue | None = None,
        spa: SSAValue | None = None,
        tokens: SSAValue | None = None,
        head_mask: SSAValue | None = None,
        positions: dict[str, SSAValue | float | None] | None = None,
    ):
        """`scales`: (q, k, v, p), p None for per-row probability scales (`p_row_scales`).
        `positions`: the disentangled terms, keyed `<term>_table`, `<term>_index` (values)
        and `<term>_scale` (INT8 table scale) for each term of POSITION_TERMS present."""
        properties: dict[str, Attribute] = {
            "num_heads": IntegerAttr(num_heads, i64),
            "scale": f32_attr(scale),
        }
        positions = positions or {}
        for term in POSITION_TERMS:
            table_scale = positions.get(f"{term}_scale")
            if table_scale is not None:
                properties[f"{term}_scale"] = f32_attr(float(table_scale))  # type: ignore[arg-type]
        if kv_heads is not None and kv_heads != num_heads:
            properties["kv_heads"] = IntegerAttr(kv_heads, i64)
        if scales is not None:
            properties.update({n: f32_attr(s) if s is not None else UnitAttr() for n, s in
                               zip((*ATTENTION_SCALES[:3], "p_scale" if scales[3] is not None
                                    else "p_row_scales"), scales)})
        if causal:
            properties["causal"] = UnitAttr()
        position_operands = [positions.get(f"{term}_{part}") for term in POSITION_TERMS
                             for part in ("table", "index")]
        super().__init__(
            operands=[q, k, v, mask, rows, spa, tokens, head_mask, *position_operands],
            properties=properties, result_types=[result_type],
        )

    @property
    def is_quantized(self) -> bool:
        return self.q_scale is not None

    @property
    def heads(self) -> int:
        return self.num_heads.value.data

    @property
    def key_heads(self) -> int:
        """K / V heads: kv_heads, or num_heads when absent."""
        return self.heads if self.kv_heads is None else self.kv_heads.value.data

    @property
    def has_positions(self) -> bool:
        """Does the scores carry disentangled position terms (c2p / p2c)?"""
        return self.c2p_table is not None or self.p2c_table is not None

    def positions(self) -> dict[str, SSAValue | float | None]:
        """The disentangled terms as the constructor's `positions` argument."""
        found: dict[str, SSAValue | float | None] = {}
        for term in POSITION_TERMS:
            found[f"{term}_table"] = getattr(self, f"{term}_table")
            found[f"{term}_index"] = getattr(self, f"{term}_index")
            table_scale = getattr(self, f"{term}_scale")
            found[f"{term}_scale"] = None if table_scale is None else table_scale.value.data
        return found

    def int8_scales(self) -> tuple[float, float, float, float | None] | None:
        """(q, k, v, p) INT8 scales (p None: per-row probability scales), or None for FP32."""
        if not self.is_quantized:
            return None
        q, k, v = (getattr(self, n).value.data for n in ATTENTION_SCALES[:3])
        return q, k, v, None if self.p_scale is None else self.p_scale.value.data

    def with_operands_of(self, **changes: object) -> AttentionOp:
        """A copy of this op with `changes` applied to the constructor's keyword arguments."""
        fields: dict[str, object] = {
            "kv_heads": self.key_heads,
            "scales": self.int8_scales(),
            "rows": self.rows,
            "spa": self.spa,
            "tokens": self.tokens,
            "head_mask": self.head_mask,
            "positions": self.positions(),
        }
        fields.update(changes)
        return AttentionOp(
            self.q,
            self.k,
            self.v,
            self.mask,
            self.heads,
            self.scale.value.data,
            self.causal is not None,
            self.result.type,
            **fields,
        )  # type: ignore[arg-type]

    def verify_(self) -> None:
        q, k, v, y = shape(self.q), shape(self.k), shape(self.v), shape(self.result)
        for what, dims in (("q", q), ("k", k), ("v", v)):
            require_rank(self.name, what, dims, (3,))
        if not (dims_agree(q[0], k[0]) and dims_agree(q[0], v[0])):
            raise VerifyException(
                f"{self.name}: batch sizes differ: q {fmt(q)}, k {fmt(k)}, v {fmt(v)}"
            )
        if not dims_agree(k[1], v[1]):
            raise VerifyException(f"{self.name}: k and v lengths differ: {fmt(k)} vs {fmt(v)}")
        heads, kv_heads = self.heads, self.key_heads
        if heads <= 0:
            raise VerifyException(f"{self.name}: num_heads must be positive, got {heads}")
        if kv_heads <= 0 or heads % kv_heads:
            raise VerifyException(
                f"{self.name}: kv_heads {kv_heads} does not divide num_heads {heads}"
            )
        kv_name = "num_heads" if self.kv_heads is None else "kv_heads"
        for what, width, name, count in (
            ("D", q[2], "num_heads", heads),
            ("K width", k[2], kv_name, kv_heads),
            ("Dv", v[2], kv_name, kv_heads),
        ):
            if width != DYNAMIC_INDEX and width % count != 0:
                raise VerifyException(
                    f"{self.name}: {name} {count} does not divide {what} = {width}"
                )
        if not (
            q[2] == DYNAMIC_INDEX or k[2] == DYNAMIC_INDEX or q[2] // heads == k[2] // kv_heads
        ):
            what = "widths" if heads == kv_heads else "head widths"
            raise VerifyException(f"{self.name}: q and k {what} differ: {fmt(q)} vs {fmt(k)}")
        require_positive(self, "scale", self.scale)
        self._verify_scales(ATTENTION_SCALES[:3])
        if self.is_quantized != ((self.p_scale is None) != (self.p_row_scales is None)):
            raise VerifyException(f"{self.name}: a quantized attention has p_scale or "
                                  "p_row_scales (one), an FP32 one neither")
        if self.p_scale is not None:
            require_positive(self, "p_scale", self.p_scale)
        if self.causal is not None and DYNAMIC_INDEX not in (q[1], k[1]) and q[1] > k[1]:
            raise VerifyException(
                f"{self.name}: causal attention needs Lq <= Lk, got {q[1]} > {k[1]}"
            )
        self._verify_mask((q[0], heads, q[1], k[1]))
        width_v = v[2] if v[2] == DYNAMIC_INDEX else v[2] // kv_heads * heads
        if not shapes_agree(y, (q[0], q[1], width_v)):
            raise VerifyException(
                f"{self.name}: result must be {fmt((q[0], q[1], width_v))}, got {fmt(y)}"
            )
        if self.rows is not None:
            if not dims_agree(q[1], k[1]):
                raise VerifyException(
                    f"{self.name}: row reuse needs self-attention (Lq = Lk), "
                    f"got q {fmt(q)}, k {fmt(k)}"
                )
            self._verify_rows(q[0], q[1])
        self._verify_positions(q, k, heads)
        if self.spa is not None:
            require_mask(self, "spa", self.spa, (q[0], heads, q[1], k[1]), KEY_MASK_WIDTHS)
        self._verify_pruning(q, k, heads)

    def _verify_positions(self, q: tuple[int, ...], k: tuple[int, ...], heads: int) -> None:
        for term in POSITION_TERMS:
            table, index = getattr(self, f"{term}_table"), getattr(self, f"{term}_index")
            if (table is None) != (index is None):
                raise VerifyException(f"{self.name}: {term}_table and {term}_index go together")
            if table is None:
                if getattr(self, f"{term}_scale") is not None:
                    raise VerifyException(f"{self.name}: {term}_scale needs {term}_table")
                continue
            if self.is_quantized != (getattr(self, f"{term}_scale") is not None):
                raise VerifyException(f"{self.name}: a quantized attention's {term}_table needs "
                                      f"{term}_scale (and only then)")
            if getattr(self, f"{term}_scale") is not None:
                require_positive(self, f"{term}_scale", getattr(self, f"{term}_scale"))
            t = shape(table)
            require_rank(self.name, f"{term}_table", t, (3,))
            d = q[2] // heads if q[2] != DYNAMIC_INDEX else DYNAMIC_INDEX
            if not (dims_agree(t[0], heads) and dims_agree(t[2], d)):
                raise VerifyException(f"{self.name}: {term}_table must be [{heads}, P, {d}], "
                                      f"got {fmt(t)}")
            if not shapes_agree(shape(index), (q[1], k[1])) or not _is_integer(index, INDEX_WIDTHS):
                raise VerifyException(f"{self.name}: {term}_index must be [{q[1]}, {k[1]}] "
                                      f"i32 or i64, got {index.type}")
        if self.p2c_table is not None and self.key_heads != heads:
            raise VerifyException(f"{self.name}: p2c_table needs one K head per query head")

    def _verify_pruning(self, q: tuple[int, ...], k: tuple[int, ...], heads: int) -> None:
        if self.tokens is None and self.head_mask is None:
            return
        if self.spa is not None:
            raise VerifyException(f"{self.name}: tokens / head_mask exclude spa")
        if self.tokens is not None:
            if not dims_agree(q[1], k[1]):
                raise VerifyException(f"{self.name}: token pruning needs self-attention "
                                      f"(Lq = Lk), got q {fmt(q)}, k {fmt(k)}")
            require_mask(self, "tokens", self.tokens, (q[0], q[1]), KEY_MASK_WIDTHS)
        if self.head_mask is not None:
            require_mask(self, "head_mask", self.head_mask, (q[0], heads), KEY_MASK_WIDTHS)

    def _verify_mask(self, scores: tuple[int, int, int, int]) -> None:
        if self.mask is None:
            return
        m = shape(self.mask)
        require_rank(self.name, "mask", m, (2, 3, 4))
        for dim, target in zip(reversed(m), reversed(scores)):
            if dim != 1 and not dims_agree(dim, target):
                raise VerifyException(
                    f"{self.name}: mask {fmt(m)} does not broadcast to scores {fmt(scores)}"
                )
