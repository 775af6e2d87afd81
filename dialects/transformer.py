"""The `transformer` dialect: the Transformer-level ops the ESACT accelerator understands.

`lift-transformer` rewrites `onnx` dialect graphs into these ops:

- `transformer.linear`      y = x @ W (+ b), W a weight handle laid out [in, out]
- `transformer.attention`   multi-head scaled dot-product attention on projected Q, K, V
                            ([B, L, D] each), optional additive mask, optional causal mask
- `transformer.layer_norm`  normalisation over the last axis with gamma / beta
- `transformer.gelu`        exact (erf) or tanh-approximated GELU
- `transformer.softmax`     softmax over the last axis
- `transformer.add`         residual (same-shape) addition
- `transformer.host`        a region of `onnx` ops the accelerator does not run (embedding
                            gather, mask preprocessing, pooling, heads); it is isolated from
                            above (values enter as operands, leave through `transformer.yield`)
                            so a later pass can hand each region to onnxruntime as one subgraph.

Verifiers check shapes wherever dimensions are static; element types are not constrained so
that quantized variants of the same ops can reuse them. Semantics (numpy) live in
`esact_cc.interpret_transformer_ops`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from io import StringIO

from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    I64,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    UnitAttr,
    i64,
)
from xdsl.ir import Attribute, Block, Dialect, Region, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    lazy_traits_def,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.printer import Printer
from xdsl.traits import HasParent, IsolatedFromAbove, IsTerminator, Pure
from xdsl.utils.exceptions import VerifyException

# Values of `transformer.gelu`'s `approximate` property (the ONNX Gelu spelling).
GELU_APPROXIMATIONS: tuple[str, ...] = ("none", "tanh")


def _shape(value: SSAValue | Attribute) -> tuple[int, ...]:
    """The shape of a tensor value's type (dynamic dims are DYNAMIC_INDEX)."""
    typ = value.type if isinstance(value, SSAValue) else value
    assert isinstance(typ, TensorType)
    return tuple(typ.get_shape())


def _dims_agree(a: int, b: int) -> bool:
    """Two dimensions agree unless both are static and different."""
    return a == DYNAMIC_INDEX or b == DYNAMIC_INDEX or a == b


def _shapes_agree(a: Sequence[int], b: Sequence[int]) -> bool:
    return len(a) == len(b) and all(_dims_agree(x, y) for x, y in zip(a, b))


def _fmt(shape: Sequence[int]) -> str:
    return "x".join("?" if d == DYNAMIC_INDEX else str(d) for d in shape) or "scalar"


def _types(types: Sequence[Attribute]) -> str:
    """Types as IR text: `tensor<1x8xf32>, tensor<8xf32>`."""
    stream = StringIO()
    printer = Printer(stream=stream)
    printer.print_list(types, printer.print_attribute)
    return f"({stream.getvalue()})"


def _require_rank(op_name: str, what: str, shape: Sequence[int], ranks: Sequence[int]) -> None:
    if len(shape) not in ranks:
        if isinstance(ranks, range) and ranks.stop > ranks.start + 1:
            expected = f"rank >= {ranks.start}"
        else:
            expected = "rank " + " or ".join(str(r) for r in ranks)
        raise VerifyException(f"{op_name}: {what} must have {expected}, got {_fmt(shape)}")


@irdl_op_definition
class LinearOp(IRDLOperation):
    """y = x @ weight (+ bias), over the last axis of x."""

    name = "transformer.linear"

    x = operand_def(TensorType)
    """Activations [..., in]."""
    weight = operand_def(TensorType)
    """Weight handle [in, out] (an `onnx.weight` in the weight store, never transposed)."""
    bias = opt_operand_def(TensorType)
    """Optional bias [out], added to every row."""
    result = result_def(TensorType)
    """Output [..., out]."""

    traits = traits_def(Pure())

    assembly_format = (
        "$x `,` $weight (`,` $bias^)? attr-dict `:` functional-type(operands, results)"
    )

    def __init__(
        self, x: SSAValue, weight: SSAValue, bias: SSAValue | None, result_type: Attribute
    ):
        super().__init__(operands=[x, weight, bias], result_types=[result_type])

    def verify_(self) -> None:
        x, w, y = _shape(self.x), _shape(self.weight), _shape(self.result)
        _require_rank(self.name, "x", x, range(1, 8))
        _require_rank(self.name, "weight", w, (2,))
        if not _dims_agree(x[-1], w[0]):
            raise VerifyException(
                f"{self.name}: x's last dim {x[-1]} does not match weight [in, out] = {_fmt(w)}"
            )
        if self.bias is not None:
            b = _shape(self.bias)
            if not _shapes_agree(b, (w[1],)):
                raise VerifyException(f"{self.name}: bias must be [{w[1]}], got {_fmt(b)}")
        if not _shapes_agree(y, (*x[:-1], w[1])):
            raise VerifyException(
                f"{self.name}: result must be {_fmt((*x[:-1], w[1]))}, got {_fmt(y)}"
            )


@irdl_op_definition
class AttentionOp(IRDLOperation):
    """Multi-head attention: softmax(Q_h K_h^T * scale + mask [+ causal]) V_h, heads merged.

    Q, K, V are the projected activations; the op splits the last axis into `num_heads` heads
    of D / num_heads, and merges them back in head order.
    """

    name = "transformer.attention"

    q = operand_def(TensorType)
    """Queries [B, Lq, D]."""
    k = operand_def(TensorType)
    """Keys [B, Lk, D]."""
    v = operand_def(TensorType)
    """Values [B, Lk, Dv]."""
    mask = opt_operand_def(TensorType)
    """Optional additive mask, broadcastable to the scores [B, num_heads, Lq, Lk]."""
    num_heads = prop_def(IntegerAttr[I64])
    """Number of heads; divides D and Dv."""
    scale = prop_def(FloatAttr[Float32Type])
    """Factor applied to Q_h K_h^T (1/sqrt(head_dim) in standard attention)."""
    causal = opt_prop_def(UnitAttr)
    """If present, key j is masked for query i when j > i + (Lk - Lq)."""
    result = result_def(TensorType)
    """Heads merged: [B, Lq, Dv]."""

    traits = traits_def(Pure())

    assembly_format = (
        "$q `,` $k `,` $v (`mask` $mask^)? `heads` `(` $num_heads `)` `scale` `(` $scale `)`"
        " (`causal` $causal^)? attr-dict `:` functional-type(operands, results)"
    )

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
    ):
        properties: dict[str, Attribute] = {
            "num_heads": IntegerAttr(num_heads, i64),
            "scale": FloatAttr(scale, Float32Type()),
        }
        if causal:
            properties["causal"] = UnitAttr()
        super().__init__(
            operands=[q, k, v, mask], properties=properties, result_types=[result_type]
        )

    def verify_(self) -> None:
        q, k, v, y = _shape(self.q), _shape(self.k), _shape(self.v), _shape(self.result)
        for what, shape in (("q", q), ("k", k), ("v", v)):
            _require_rank(self.name, what, shape, (3,))
        if not (_dims_agree(q[0], k[0]) and _dims_agree(q[0], v[0])):
            raise VerifyException(
                f"{self.name}: batch sizes differ: q {_fmt(q)}, k {_fmt(k)}, v {_fmt(v)}"
            )
        if not _dims_agree(q[2], k[2]):
            raise VerifyException(f"{self.name}: q and k widths differ: {_fmt(q)} vs {_fmt(k)}")
        if not _dims_agree(k[1], v[1]):
            raise VerifyException(f"{self.name}: k and v lengths differ: {_fmt(k)} vs {_fmt(v)}")
        heads = self.num_heads.value.data
        if heads <= 0:
            raise VerifyException(f"{self.name}: num_heads must be positive, got {heads}")
        for what, width in (("D", q[2]), ("Dv", v[2])):
            if width != DYNAMIC_INDEX and width % heads != 0:
                raise VerifyException(
                    f"{self.name}: num_heads {heads} does not divide {what} = {width}"
                )
        scale = self.scale.value.data
        if not (math.isfinite(scale) and scale > 0):
            raise VerifyException(f"{self.name}: scale must be finite and positive, got {scale}")
        if (
            self.causal is not None
            and q[1] != DYNAMIC_INDEX
            and k[1] != DYNAMIC_INDEX
            and q[1] > k[1]
        ):
            raise VerifyException(
                f"{self.name}: causal attention needs Lq <= Lk, got {q[1]} > {k[1]}"
            )
        if self.mask is not None:
            m = _shape(self.mask)
            scores = (q[0], heads, q[1], k[1])
            _require_rank(self.name, "mask", m, (2, 3, 4))
            for dim, target in zip(reversed(m), reversed(scores)):
                if dim != 1 and not _dims_agree(dim, target):
                    raise VerifyException(
                        f"{self.name}: mask {_fmt(m)} does not broadcast to scores {_fmt(scores)}"
                    )
        if not _shapes_agree(y, (q[0], q[1], v[2])):
            raise VerifyException(
                f"{self.name}: result must be {_fmt((q[0], q[1], v[2]))}, got {_fmt(y)}"
            )


@irdl_op_definition
class LayerNormOp(IRDLOperation):
    """(x - mean) / sqrt(var + epsilon) * gamma (+ beta), statistics over the last axis."""

    name = "transformer.layer_norm"

    x = operand_def(TensorType)
    """Activations [..., N]."""
    gamma = operand_def(TensorType)
    """Scale handle [N]."""
    beta = opt_operand_def(TensorType)
    """Optional shift handle [N]."""
    epsilon = prop_def(FloatAttr[Float32Type])
    """Added to the variance before the square root."""
    result = result_def(TensorType)
    """Same shape as x."""

    traits = traits_def(Pure())

    assembly_format = (
        "$x `,` $gamma (`,` $beta^)? `eps` `(` $epsilon `)` attr-dict"
        " `:` functional-type(operands, results)"
    )

    def __init__(
        self,
        x: SSAValue,
        gamma: SSAValue,
        beta: SSAValue | None,
        epsilon: float,
        result_type: Attribute,
    ):
        super().__init__(
            operands=[x, gamma, beta],
            properties={"epsilon": FloatAttr(epsilon, Float32Type())},
            result_types=[result_type],
        )

    def verify_(self) -> None:
        x, g, y = _shape(self.x), _shape(self.gamma), _shape(self.result)
        _require_rank(self.name, "x", x, range(1, 8))
        for what, shape in (("gamma", g), *((("beta", _shape(self.beta)),) if self.beta else ())):
            if not _shapes_agree(shape, (x[-1],)):
                raise VerifyException(f"{self.name}: {what} must be [{x[-1]}], got {_fmt(shape)}")
        eps = self.epsilon.value.data
        if not (math.isfinite(eps) and eps > 0):
            raise VerifyException(f"{self.name}: epsilon must be finite and positive, got {eps}")
        if not _shapes_agree(y, x):
            raise VerifyException(f"{self.name}: result must be {_fmt(x)}, got {_fmt(y)}")


class _ElementwiseUnaryOp(IRDLOperation):
    """Base of single-input ops whose result has the input's shape."""

    x = operand_def(TensorType)
    """Input tensor."""
    result = result_def(TensorType)
    """Same shape as x."""

    traits = traits_def(Pure())

    def verify_(self) -> None:
        x, y = _shape(self.x), _shape(self.result)
        if not _shapes_agree(y, x):
            raise VerifyException(f"{self.name}: result must be {_fmt(x)}, got {_fmt(y)}")


@irdl_op_definition
class GeluOp(_ElementwiseUnaryOp):
    """GELU: x * Phi(x) (approximate = "none") or its tanh approximation ("tanh")."""

    name = "transformer.gelu"

    approximate = prop_def(StringAttr)
    """"none" (erf) or "tanh"."""

    assembly_format = (
        "$x `approximate` `(` $approximate `)` attr-dict `:` functional-type(operands, results)"
    )

    def __init__(self, x: SSAValue, approximate: str, result_type: Attribute):
        super().__init__(
            operands=[x],
            properties={"approximate": StringAttr(approximate)},
            result_types=[result_type],
        )

    def verify_(self) -> None:
        super().verify_()
        if self.approximate.data not in GELU_APPROXIMATIONS:
            raise VerifyException(
                f"{self.name}: approximate must be one of {', '.join(GELU_APPROXIMATIONS)}, "
                f"got {self.approximate.data!r}"
            )


@irdl_op_definition
class SoftmaxOp(_ElementwiseUnaryOp):
    """Softmax over the last axis."""

    name = "transformer.softmax"

    assembly_format = "$x attr-dict `:` functional-type(operands, results)"

    def __init__(self, x: SSAValue, result_type: Attribute):
        super().__init__(operands=[x], result_types=[result_type])


@irdl_op_definition
class AddOp(IRDLOperation):
    """Residual addition of two same-shape tensors."""

    name = "transformer.add"

    lhs = operand_def(TensorType)
    """First summand."""
    rhs = operand_def(TensorType)
    """Second summand, same shape as lhs."""
    result = result_def(TensorType)
    """lhs + rhs."""

    traits = traits_def(Pure())

    assembly_format = "$lhs `,` $rhs attr-dict `:` functional-type(operands, results)"

    def __init__(self, lhs: SSAValue, rhs: SSAValue, result_type: Attribute):
        super().__init__(operands=[lhs, rhs], result_types=[result_type])

    def verify_(self) -> None:
        a, b, y = _shape(self.lhs), _shape(self.rhs), _shape(self.result)
        if not (_shapes_agree(a, b) and _shapes_agree(y, a)):
            raise VerifyException(
                f"{self.name}: operands and result must have one shape, "
                f"got {_fmt(a)}, {_fmt(b)} -> {_fmt(y)}"
            )


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Terminator of a `transformer.host` region: its operands are the region's results."""

    name = "transformer.yield"

    values = var_operand_def()
    """The values the host region returns, in result order."""

    traits = lazy_traits_def(lambda: (IsTerminator(), HasParent(HostOp)))

    assembly_format = "attr-dict ($values^ `:` type($values))?"

    def __init__(self, values: Sequence[SSAValue]):
        super().__init__(operands=[list(values)])


@irdl_op_definition
class HostOp(IRDLOperation):
    """A connected group of `onnx` ops that runs on the host CPU (through onnxruntime).

    The region is isolated from above: its one block's arguments are the op's operands, in
    order, and `transformer.yield` returns the op's results.
    """

    name = "transformer.host"

    inputs = var_operand_def()
    """Values the host subgraph reads, bound to the block arguments."""
    outputs = var_result_def()
    """Values the host subgraph produces, from `transformer.yield`."""
    body = region_def("single_block")
    """One block of `onnx` ops ending in `transformer.yield`."""

    traits = traits_def(IsolatedFromAbove())

    assembly_format = "`(` $inputs `)` attr-dict `:` functional-type($inputs, $outputs) $body"

    def __init__(self, inputs: Sequence[SSAValue], output_types: Sequence[Attribute], body: Region):
        super().__init__(operands=[list(inputs)], result_types=[list(output_types)], regions=[body])

    @staticmethod
    def empty_body(input_types: Sequence[Attribute]) -> Region:
        """A region with one block whose arguments have `input_types` (no ops yet)."""
        return Region(Block(arg_types=input_types))

    def verify_(self) -> None:
        block = self.body.block
        arg_types = [a.type for a in block.args]
        in_types = [v.type for v in self.inputs]
        if arg_types != in_types:
            raise VerifyException(
                f"{self.name}: block argument types {_types(arg_types)} differ from operand "
                f"types {_types(in_types)}"
            )
        term = block.last_op
        if not isinstance(term, YieldOp):
            raise VerifyException(f"{self.name}: region must end in transformer.yield")
        yield_types = [v.type for v in term.values]
        out_types = [r.type for r in self.outputs]
        if yield_types != out_types:
            raise VerifyException(
                f"{self.name}: yielded types {_types(yield_types)} differ from result types "
                f"{_types(out_types)}"
            )


TRANSFORMER = Dialect(
    "transformer",
    [LinearOp, AttentionOp, LayerNormOp, GeluOp, SoftmaxOp, AddOp, HostOp, YieldOp],
    [],
)
