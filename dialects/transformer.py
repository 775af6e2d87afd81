"""The `transformer` dialect: the Transformer-level ops the ESACT accelerator understands.

`lift-transformer` rewrites `onnx` dialect graphs into these ops:

- `transformer.linear`      y = x @ W (+ b), W a weight handle laid out [in, out]; INT8 and
                            masked forms are the same op (`dialects/gemm_ops.py`)
- `transformer.attention`   multi-head scaled dot-product attention on projected Q, K, V
                            ([B, L, D] each), optional additive mask, optional causal mask,
                            grouped K / V heads, INT8 and masked forms (`dialects/gemm_ops.py`)
- `transformer.layer_norm`  normalisation over the last axis with gamma / beta
- `transformer.rms_norm`    RMSNorm (LLaMA, T5): x / sqrt(mean(x^2) + eps) * gamma
- `transformer.gelu`        exact (erf) or tanh-approximated GELU
- `transformer.silu`        SiLU (swish): x * sigmoid(x)
- `transformer.relu`        max(x, 0) (T5, OPT FFNs)
- `transformer.softmax`     softmax over the last axis
- `transformer.add`         residual (same-shape) addition
- `transformer.mul`         elementwise product of two same-shape activations (the gate of a
                            gated FFN: SwiGLU, GeGLU)
- `transformer.rotary`      rotary position embedding of Q or K before the head split, full
                            or partial (`dialects/rotary_op.py`)
- `transformer.select_rows` the token rows later ops still read (`esact-dead-rows`;
                            `dialects/select_rows_op.py`)
- `transformer.host`        a region of `onnx` ops the accelerator does not run (embedding
                            gather, mask preprocessing, pooling, heads); it is isolated from
                            above (values enter as operands, leave through `transformer.yield`)
                            so a later pass can hand each region to onnxruntime as one subgraph.

Verifiers check shapes wherever dimensions are static; activation element types are not
constrained. Semantics (numpy) live in
`esact_cc.interpreter.interpret_transformer_ops`.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import Float32Type, FloatAttr, StringAttr, TensorType
from xdsl.ir import Attribute, Block, Dialect, Region, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    lazy_traits_def,
    operand_def,
    opt_operand_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import HasParent, IsolatedFromAbove, IsTerminator, Pure
from xdsl.utils.exceptions import VerifyException

from esact_cc.dialects.gemm_ops import AttentionOp, LinearOp
from esact_cc.dialects.rotary_op import RotaryOp
from esact_cc.dialects.select_rows_op import SelectRowsOp
from esact_cc.dialects.shape_checks import fmt as _fmt
from esact_cc.dialects.shape_checks import require_positive, require_rank, shape as _shape, shapes_agree as _shapes_agree
from esact_cc.dialects.shape_checks import types_text as _types

# Values of `transformer.gelu`'s `approximate` property (the ONNX Gelu spelling).
GELU_APPROXIMATIONS: tuple[str, ...] = ("none", "tanh")


class NormOp(IRDLOperation):
    """Base of the row-wise normalizations over the last axis of `x` (layer norm, RMSNorm): the
    op-kind tests of the passes (role "norm" in layer_roles.py, row-wise in dead_rows.py, the
    layer walk of insert_spls.py, the lift summary) check this class, so a new norm op
    subclasses it (or `ScaledNormOp`, which also declares its operands and syntax)."""

    epsilon = prop_def(FloatAttr[Float32Type])
    """Added under the square root (to the variance, the mean square, ...)."""
    result = result_def(TensorType)
    """Same shape as x."""

    traits = traits_def(Pure())

    def gamma_shape(self, width: int) -> tuple[int, ...]:
        """The shape of the scale operands for x [..., width]: one scale per channel."""
        return (width,)

    def verify_(self) -> None:
        x, y = _shape(self.operands[0]), _shape(self.result)
        require_rank(self.name, "x", x, range(1, 8))
        names = [name for name, _ in type(self).get_irdl_definition().operands][1:]
        for name in names:
            value, expected = getattr(self, name), self.gamma_shape(x[-1])
            if value is not None and not _shapes_agree(_shape(value), expected):
                raise VerifyException(f"{self.name}: {name} must be [{_fmt(expected)}], got "
                                      f"{_fmt(_shape(value))}")
        require_positive(self, "epsilon", self.epsilon)
        if not _shapes_agree(y, x):
            raise VerifyException(f"{self.name}: result must be {_fmt(x)}, got {_fmt(y)}")


class ScaledNormOp(NormOp):
    """A norm of `x` with one scale handle `gamma` and `epsilon`; a subclass is its name, its
    definition and, if gamma is not [N], its `gamma_shape`."""

    x = operand_def(TensorType)
    """Activations [..., N]."""
    gamma = operand_def(TensorType)
    """Scale handle (`gamma_shape`: [N] unless the op says otherwise)."""

    assembly_format = (
        "$x `,` $gamma `eps` `(` $epsilon `)` attr-dict `:` functional-type(operands, results)"
    )

    def __init__(self, x: SSAValue, gamma: SSAValue, epsilon: float, result_type: Attribute):
        super().__init__(
            operands=[x, gamma],
            properties={"epsilon": FloatAttr(epsilon, Float32Type())},
            result_types=[result_type],
        )


@irdl_op_definition
class LayerNormOp(NormOp):
    """(x - mean) / sqrt(var + epsilon) * gamma (+ beta), statistics over the last axis."""

    name = "transformer.layer_norm"

    x = operand_def(TensorType)
    """Activations [..., N]."""
    gamma = operand_def(TensorType)
    """Scale handle [N]."""
    beta = opt_operand_def(TensorType)
    """Optional shift handle [N]."""

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


@irdl_op_definition
class RmsNormOp(ScaledNormOp):
    """x / sqrt(mean(x^2) + epsilon) * gamma, the mean over the last axis (no centring, no
    shift: LLaMA, Mistral, Qwen2, T5)."""

    name = "transformer.rms_norm"


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
class SiluOp(_ElementwiseUnaryOp):
    """SiLU (swish): x * sigmoid(x), the activation of SwiGLU FFNs."""

    name = "transformer.silu"

    assembly_format = "$x attr-dict `:` functional-type(operands, results)"

    def __init__(self, x: SSAValue, result_type: Attribute):
        super().__init__(operands=[x], result_types=[result_type])


@irdl_op_definition
class ReluOp(_ElementwiseUnaryOp):
    """max(x, 0), the activation of T5's and OPT's FFNs."""

    name = "transformer.relu"

    assembly_format = "$x attr-dict `:` functional-type(operands, results)"

    def __init__(self, x: SSAValue, result_type: Attribute):
        super().__init__(operands=[x], result_types=[result_type])


@irdl_op_definition
class SoftmaxOp(_ElementwiseUnaryOp):
    """Softmax over the last axis."""

    name = "transformer.softmax"

    assembly_format = "$x attr-dict `:` functional-type(operands, results)"

    def __init__(self, x: SSAValue, result_type: Attribute):
        super().__init__(operands=[x], result_types=[result_type])


class _ElementwiseBinaryOp(IRDLOperation):
    """Base of two-input ops on same-shape tensors (no broadcasting)."""

    lhs = operand_def(TensorType)
    """First operand."""
    rhs = operand_def(TensorType)
    """Second operand, same shape as lhs."""
    result = result_def(TensorType)
    """Same shape as the operands."""

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
class AddOp(_ElementwiseBinaryOp):
    """Residual addition of two same-shape tensors."""

    name = "transformer.add"


@irdl_op_definition
class MulOp(_ElementwiseBinaryOp):
    """Elementwise product of two same-shape activations: a gated FFN's act(x W_gate) *
    (x W_up)."""

    name = "transformer.mul"


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
    [LinearOp, AttentionOp, LayerNormOp, RmsNormOp, GeluOp, SiluOp, ReluOp, SoftmaxOp, AddOp, MulOp,
     RotaryOp, SelectRowsOp, HostOp, YieldOp],
    [],
)
