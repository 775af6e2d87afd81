"""`transformer.select_rows`: the token rows of an activation that later ops still need.

    %y = transformer.select_rows %x rows [0] : (tensor<2x17x64xf32>) -> tensor<2x1x64xf32>

x [B, L, D] -> y [B, n, D], y[:, i] = x[:, rows[i]], `rows` static, strictly increasing, in
[0, L). `esact-dead-rows` (passes/dead_rows.py) inserts it where the ops downstream read fewer
rows than are computed (the last layer of a classifier reading token 0); the ops after it then
run on n rows. Semantics: `esact_cc.interpreter.interpret_transformer_ops`; lowering (a row
copy, DMA): `passes/lower_select_rows.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import DYNAMIC_INDEX, DenseArrayBase, TensorType, i64
from xdsl.ir import Attribute, SSAValue
from xdsl.irdl import IRDLOperation, irdl_op_definition, operand_def, prop_def, result_def, traits_def
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from esact_cc.dialects.shape_checks import fmt, require_rank, shape, shapes_agree


@irdl_op_definition
class SelectRowsOp(IRDLOperation):
    """x [B, L, D] -> x[:, rows, :] (rows static and increasing)."""

    name = "transformer.select_rows"

    x = operand_def(TensorType)
    """The activation [B, L, D] (token axis 1)."""
    rows = prop_def(DenseArrayBase)
    """Token rows kept, strictly increasing, each in [0, L)."""
    result = result_def(TensorType)
    """[B, len(rows), D]."""

    traits = traits_def(Pure())

    def __init__(self, x: SSAValue, rows: Sequence[int]):
        assert isinstance(x.type, TensorType)
        b, _, d = x.type.get_shape()
        super().__init__(operands=[x],
                         properties={"rows": DenseArrayBase.from_list(i64, list(rows))},
                         result_types=[TensorType(x.type.element_type, [b, len(rows), d])])

    @property
    def kept(self) -> tuple[int, ...]:
        return tuple(int(r) for r in self.rows.get_values())

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_operand(self.x)
        printer.print_string(f" rows [{', '.join(map(str, self.kept))}]")
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_function_type([self.x.type], [self.result.type])

    @classmethod
    def parse(cls, parser: Parser) -> SelectRowsOp:
        operand = parser.parse_unresolved_operand()
        parser.parse_keyword("rows")
        rows = parser.parse_comma_separated_list(parser.Delimiter.SQUARE, parser.parse_integer)
        attributes = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        func_type = parser.parse_function_type()
        if len(func_type.inputs.data) != 1 or len(func_type.outputs.data) != 1:
            parser.raise_error("transformer.select_rows takes one operand and gives one result")
        x = parser.resolve_operand(operand, func_type.inputs.data[0])
        op = cls.create(operands=[x], result_types=[func_type.outputs.data[0]],
                        properties={"rows": DenseArrayBase.from_list(i64, rows)},
                        attributes=attributes)
        return op

    def verify_(self) -> None:
        x, y = shape(self.x), shape(self.result)
        require_rank(self.name, "x", x, (3,))
        rows = self.kept
        if not rows:
            raise VerifyException(f"{self.name}: rows must not be empty")
        if any(b <= a for a, b in zip(rows, rows[1:])) or rows[0] < 0:
            raise VerifyException(f"{self.name}: rows must be strictly increasing and "
                                  f"non-negative, got {list(rows)}")
        if x[1] != DYNAMIC_INDEX and rows[-1] >= x[1]:
            raise VerifyException(f"{self.name}: row {rows[-1]} is out of range for "
                                  f"{x[1]} rows (x {fmt(x)})")
        if not shapes_agree(y, (x[0], len(rows), x[2])):
            raise VerifyException(f"{self.name}: result must be {fmt((x[0], len(rows), x[2]))}, "
                                  f"got {fmt(y)}")


def select_rows_type(x_type: Attribute, count: int) -> TensorType:
    """x's type with `count` token rows (axis 1)."""
    assert isinstance(x_type, TensorType)
    dims = list(x_type.get_shape())
    dims[1] = count
    return TensorType(x_type.element_type, dims)
