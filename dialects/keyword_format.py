"""Custom assembly format for ops with several optional operands (linear, attention).

xDSL's declarative format cannot print `functional-type(operands, results)` when more than one
operand is optional, so these ops spell their IR as

    <op> %a, %b[, %c] kw(%operand) kw(1.5) kw("name") kw(4) flag {attrs} : (types) -> type

positional operands first (the last of them may be optional), then one `keyword(value)`
clause per present optional operand or property (a unit property is the bare keyword), in the
order of `KEYWORDS` (every property of the op is one of them); the function type lists operand
types in definition order, as the generic form does.
"""

from __future__ import annotations

from typing import ClassVar

from xdsl.dialects.builtin import Float32Type, FloatAttr, IntegerAttr, StringAttr, UnitAttr, i64
from xdsl.ir import Attribute
from xdsl.irdl import IRDLOperation
from xdsl.parser import Parser, UnresolvedOperand
from xdsl.printer import Printer

class KeywordFormat(IRDLOperation):
    """Mixin: `parse` / `print` of the format above for the subclass's fields."""

    POSITIONAL: ClassVar[tuple[str, ...]] = ()
    """Operands printed by position (comma separated); those after REQUIRED may be absent."""
    REQUIRED: ClassVar[int] = 0
    """How many of POSITIONAL are always present."""
    KEYWORDS: ClassVar[tuple[str, ...]] = ()
    """Optional operands and properties printed as `name(value)` (units: `name`)."""
    KIND: ClassVar[dict[str, type[Attribute]]] = {}
    """Property name -> FloatAttr (f32), IntegerAttr (i64), StringAttr or UnitAttr."""
    SPELLING: ClassVar[dict[str, str]] = {}
    """Field name -> its keyword, where they differ."""
    BARE: ClassVar[frozenset[str]] = frozenset()
    """Optional operands spelled `keyword %value` (no parentheses)."""

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        present = [getattr(self, n) for n in self.POSITIONAL if getattr(self, n) is not None]
        printer.print_list(present, printer.print_operand)
        for name in self.KEYWORDS:
            value = getattr(self, name)
            if value is None:
                continue
            printer.print_string(f" {self.SPELLING.get(name, name)}")
            if isinstance(value, UnitAttr):
                continue
            if name in self.BARE:
                printer.print_string(" ")
                printer.print_operand(value)
                continue
            with printer.in_parens():
                if isinstance(value, FloatAttr):
                    printer.print_float(value.value.data, Float32Type())
                elif isinstance(value, IntegerAttr):
                    printer.print_string(str(value.value.data))
                elif isinstance(value, StringAttr):
                    printer.print_string_literal(value.data)
                else:
                    printer.print_operand(value)
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_function_type([o.type for o in self.operands], [r.type for r in self.results])

    @classmethod
    def parse(cls, parser: Parser) -> KeywordFormat:
        unresolved: dict[str, UnresolvedOperand] = {}
        for index, name in enumerate(cls.POSITIONAL):
            if index and not parser.parse_optional_punctuation(","):
                break
            if index >= cls.REQUIRED:
                operand = parser.parse_optional_unresolved_operand()
                if operand is None:
                    break
            else:
                operand = parser.parse_unresolved_operand()
            unresolved[name] = operand
        properties: dict[str, Attribute] = {}
        fields = {cls.SPELLING.get(name, name): name for name in cls.KEYWORDS}
        while (spelled := parser.parse_optional_keyword_in(fields)) is not None:
            keyword = fields[spelled]
            kind = cls.KIND.get(keyword)
            if kind is UnitAttr:
                properties[keyword] = UnitAttr()
                continue
            if keyword in cls.BARE:
                unresolved[keyword] = parser.parse_unresolved_operand()
                continue
            with parser.in_parens():
                if kind is None:
                    unresolved[keyword] = parser.parse_unresolved_operand()
                elif kind is FloatAttr:
                    properties[keyword] = FloatAttr(parser.parse_float(), Float32Type())
                elif kind is IntegerAttr:
                    properties[keyword] = IntegerAttr(parser.parse_integer(), i64)
                else:
                    properties[keyword] = StringAttr(parser.parse_str_literal())
        attributes = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        pos = parser.pos
        function = parser.parse_function_type()
        names = [name for name, _ in cls.get_irdl_definition().operands if name in unresolved]
        operands = parser.resolve_operands(
            [unresolved[n] for n in names], function.inputs.data, pos
        )
        by_name = dict(zip(names, operands))
        op = cls.build(
            operands=[by_name.get(name) for name, _ in cls.get_irdl_definition().operands],
            result_types=list(function.outputs.data),
            properties=properties,
            attributes=attributes,
        )
        return op
