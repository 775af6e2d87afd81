"""The `onnx` dialect: one op per ONNX node, imported 1:1 by the frontend.

Every ONNX op type in `ONNX_OP_TYPES` becomes an op `onnx.<OpType>` (the
ONNX-MLIR spelling) with variadic operands and results; the node's ONNX attributes
are kept as op attributes under their ONNX names (ints as i64, floats as f32,
lists as dense arrays, strings as strings, tensors as dense elements). Empty optional
ONNX inputs (outputs) are dropped; when that leaves a gap, the `onnx_input_positions`
(`onnx_output_positions`) dense i64 array records the ONNX position of each operand
(result). Attributes starting with `onnx_` are such bookkeeping, not ONNX attributes.

Weights never appear as literals: `onnx.weight` is a handle naming a tensor in
the compiler's weight store (`esact_cc.weight_store`). Small constants (shape
vectors, scalars) are inline `onnx.Constant` ops with a `value` dense attribute.
The ONNX node name is the op's location: `loc("/encoder/layer.0/.../MatMul")`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from xdsl.dialects.builtin import DenseArrayBase, DenseIntOrFPElementsAttr, StringAttr, TensorType
from xdsl.ir import Dialect
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    prop_def,
    result_def,
    var_operand_def,
    var_result_def,
)
from xdsl.utils.exceptions import VerifyException

from esact_cc.dialects.onnx_host_op_types import HOST_ONLY_OP_TYPES

# The ONNX op types the importer accepts: the set real Transformer exports use.
ONNX_OP_TYPES: tuple[str, ...] = (
    "Abs", "Add", "And", "ArgMax", "Cast", "Ceil", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "Cos", "CumSum", "Div", "Dropout", "Einsum", "Equal", "Erf",
    "Exp", "Expand", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm",
    "Greater", "GreaterOrEqual", "Identity", "IsNaN", "LayerNormalization", "Less",
    "LessOrEqual", "Log", "MatMul", "Max", "Min", "Mod", "Mul", "Neg", "Not", "Or", "Pad",
    "Pow", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "ScatterND", "Shape", "Sigmoid", "Sign", "Sin", "Size",
    "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Tile", "Transpose",
    "Trilu", "Unsqueeze", "Where", "Xor",
)


class OnnxOperation(IRDLOperation):
    """Base of every `onnx.<OpType>` op: any operands, any results, ONNX attributes."""

    onnx_operands = var_operand_def()
    onnx_results = var_result_def()

    assembly_format = "$onnx_operands attr-dict `:` functional-type($onnx_operands, $onnx_results)"

    @property
    def op_type(self) -> str:
        return self.name.removeprefix("onnx.")

    def verify_(self) -> None:
        for attr_name, count in (("onnx_input_positions", len(self.operands)),
                                 ("onnx_output_positions", len(self.results))):
            attr = self.attributes.get(attr_name)
            if attr is None:
                continue
            if not isinstance(attr, DenseArrayBase):
                raise VerifyException(f"{attr_name} must be a dense i64 array")
            positions = list(attr.get_values())
            if len(positions) != count:
                raise VerifyException(f"{attr_name} has {len(positions)} entries for {count} values")
            if any(b <= a for a, b in zip(positions, positions[1:])) or any(p < 0 for p in positions):
                raise VerifyException(f"{attr_name} must be strictly increasing and non-negative")
        if self.op_type == "Constant":
            value = self.attributes.get("value")
            if not isinstance(value, DenseIntOrFPElementsAttr):
                raise VerifyException("onnx.Constant needs a dense `value` attribute")
            if len(self.results) != 1 or self.results[0].type != value.type:
                raise VerifyException(
                    f"onnx.Constant value has type {value.type}, result must have the same type"
                )


def _define_op(op_type: str) -> type[OnnxOperation]:
    cls = type(op_type + "Op", (OnnxOperation,), {"name": f"onnx.{op_type}", "__module__": __name__})
    return irdl_op_definition(cls)


class _OpClasses(Mapping[str, type[OnnxOperation]]):
    """Each op type's class, defined by IRDL on first use: defining all 178 cost every compile
    0.12 s CPU at import, and a model uses a few dozen (BERT-base: 19)."""

    def __init__(self, op_types: tuple[str, ...]) -> None:
        self._types = op_types
        self._known = frozenset(op_types)
        self._defined: dict[str, type[OnnxOperation]] = {}

    def __getitem__(self, op_type: str) -> type[OnnxOperation]:
        cls = self._defined.get(op_type)
        if cls is None:
            if op_type not in self._known:
                raise KeyError(op_type)
            cls = self._defined[op_type] = _define_op(op_type)
        return cls

    def __contains__(self, op_type: object) -> bool:
        return op_type in self._known

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)


# One class per ONNX op type, e.g. OP_CLASSES["MatMul"] is `onnx.MatMul`.
OP_CLASSES: Mapping[str, type[OnnxOperation]] = _OpClasses(ONNX_OP_TYPES + HOST_ONLY_OP_TYPES)


@irdl_op_definition
class WeightOp(IRDLOperation):
    """A handle to a tensor in the weight store; the IR never holds its values."""

    name = "onnx.weight"

    weight_name = prop_def(StringAttr)
    """Key of the tensor in the weight store (the ONNX initializer name)."""
    result = result_def(TensorType)

    assembly_format = "$weight_name attr-dict `:` type($result)"

    def __init__(self, weight_name: str, result_type: TensorType):
        super().__init__(properties={"weight_name": StringAttr(weight_name)}, result_types=[result_type])


class _DialectOps(Sequence[type[IRDLOperation]]):
    """The dialect's op classes, every one defined when a context first loads the dialect
    (to parse or print `onnx` IR), not when the module is imported."""

    def _all(self) -> list[type[IRDLOperation]]:
        return [WeightOp, *OP_CLASSES.values()]

    def __getitem__(self, index):  # type: ignore[no-untyped-def, override]
        return self._all()[index]

    def __iter__(self) -> Iterator[type[IRDLOperation]]:
        return iter(self._all())

    def __len__(self) -> int:
        return 1 + len(OP_CLASSES)


ONNX = Dialect("onnx", _DialectOps(), [])  # type: ignore[arg-type]
