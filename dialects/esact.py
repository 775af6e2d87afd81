"""The `esact` dialect: one op per ESACT instruction, generated from runtime/isa.py's table,
plus the declarations a program needs besides its instructions.

Instruction ops (`esact.<mnemonic>`, one class per `INSTRUCTION_SPECS` entry, never listed by
hand) hold every ISA field as a property: integers (addresses, sizes, flags, buffer and mode
enums) as i64, float immediates as f32, the dependency-token masks `pop`/`push` as i64. Their
syntax lists the fields in table order, enums by name and token masks as queue lists:

    esact.load pop [] push [compute] buf = WBUF, sram_addr = 0, dram_addr = 4096, rows = 64,
        cols = 32, sram_stride = 0, dram_stride = 0 {component = "q", layer = 0 : i64}

Fields left out when parsing are 0 (as in `isa.Instruction.make`). Optional attributes:
`layer` (i64) and `component` (one of the debug-map components); the op's location is the
ONNX node it comes from. Program order is the order of the ops in the module body.

Declaration ops (no instruction, no runtime effect):
- `esact.data "<weight>" at <dram address>`: a weight-store tensor placed in the DRAM image;
- `esact.io "input"|"output" "<name>" at <address> : <tensor type>`: a model input or output;
- `esact.host_tensor <segment> "input"|"output" "<name>" at <address> : <tensor type>`: a DRAM
  tensor host segment <segment> reads or writes (its ONNX graph input/output name);
- `esact.host_segment <segment> "<weight>"`: the ONNX bytes of host segment <segment>, a
  uint8 tensor in the weight store.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from enum import IntEnum
from typing import ClassVar

from esact_cc.dialects.integer_attr import i64_attr
from esact_cc.dialects.leaf_op import init_leaf_op
from esact_cc.runtime.errors import ProgramError
from esact_cc.runtime.esb import COMPONENTS
from esact_cc.runtime.isa import (
    INSTRUCTION_SPECS,
    FieldKind,
    FieldSpec,
    Instruction,
    InstructionSpec,
    Queue,
    bits_float,
    float_bits,
    validate_instruction,
)
from xdsl.dialects.builtin import (
    I64,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    LocationAttr,
    StringAttr,
    TensorType,
    i64,
)
from xdsl.ir import Attribute, Dialect
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    irdl_to_attr_constraint,
    opt_attr_def,
    prop_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

QUEUE_NAMES: tuple[str, ...] = tuple(q.name.lower() for q in Queue)
TOKEN_FIELDS = ("pop", "push")


def _mask_text(mask: int) -> str:
    return "[" + ", ".join(QUEUE_NAMES[q] for q in range(len(QUEUE_NAMES)) if mask >> q & 1) + "]"


class InstructionOp(IRDLOperation):
    """Base of every instruction op: the ISA fields are the op's properties."""

    ZERO_FIELDS: ClassVar[dict[str, Attribute]]
    """Every field at 0, in table order (attributes are immutable: shared by the ops)."""
    FLOAT_FIELDS: ClassVar[frozenset[str]]
    """The float32 immediate fields."""

    @classmethod
    def isa_spec(cls) -> InstructionSpec:
        """The ISA table entry this op class was generated from."""
        return cls.__isa_spec__

    layer = opt_attr_def(IntegerAttr[I64])
    """Transformer layer index of the instruction (debug map), absent outside layers."""
    component = opt_attr_def(StringAttr)
    """Debug-map component (runtime.esb.COMPONENTS; a linear's comes from its role)."""

    def __init__(self, fields: Mapping[str, int | float], attributes: Mapping[str, Attribute] | None = None,
                 location: LocationAttr | None = None):
        spec = self.isa_spec()
        if not spec.field_name_set.issuperset(fields):
            unknown = set(fields) - spec.field_name_set
            raise ValueError(f"{spec.name}: unknown field(s) {', '.join(sorted(unknown))}")
        properties = dict(self.ZERO_FIELDS)  # in table order; the given ones replace theirs
        floats = self.FLOAT_FIELDS
        for name, value in fields.items():
            if name not in floats:  # what _field_attr does, without looking the field up
                properties[name] = i64_attr(value if type(value) is int else int(value))
            else:
                properties[name] = _field_attr(spec.field(name), value)
        # An instruction has no operands, results, regions or successors: set up as a leaf op
        # (dialects/leaf_op.py), not by IRDL's builder or Operation's constructor.
        init_leaf_op(self, properties, {
            name: attr for name, attr in (attributes or {}).items() if attr is not None}, location)

    # --- access ---------------------------------------------------------------------------
    def field_value(self, name: str) -> int:
        """Raw ISA value of a field (float immediates as their float32 bit pattern)."""
        return _raw_value(self.properties[name])

    def set_field(self, name: str, value: float) -> None:
        if name not in self.FLOAT_FIELDS and name in self.ZERO_FIELDS:  # as in __init__
            self.properties[name] = i64_attr(value if type(value) is int else int(value))
        else:
            self.properties[name] = _field_attr(self.isa_spec().field(name), value)

    def to_instruction(self) -> Instruction:
        spec, properties = self.isa_spec(), self.properties
        # IntegerAttr's value inline (most fields; a call per field was a third of the cost).
        return Instruction(spec.name, {
            name: attr.value.data if type(attr := properties[name]) is IntegerAttr
            else _raw_value(attr) for name in spec.field_names})

    # --- syntax ---------------------------------------------------------------------------
    def print(self, printer: Printer) -> None:
        printer.print_string(f" pop {_mask_text(self.field_value('pop'))}")
        printer.print_string(f" push {_mask_text(self.field_value('push'))}")
        own = [f for f in self.isa_spec().fields if f.name not in TOKEN_FIELDS]
        for i, f in enumerate(own):
            printer.print_string(("," if i else "") + f" {f.name} = {_field_text(f, self.properties[f.name])}")
        printer.print_op_attributes(self.attributes)

    @classmethod
    def parse(cls, parser: Parser) -> InstructionOp:
        values: dict[str, int | float] = {}
        for name in TOKEN_FIELDS:
            parser.parse_keyword(name)
            queues = parser.parse_comma_separated_list(
                parser.Delimiter.SQUARE, lambda: parser.parse_identifier()
            )
            mask = 0
            for q in queues:
                if q not in QUEUE_NAMES:
                    parser.raise_error(f"unknown queue '{q}' (expected one of {', '.join(QUEUE_NAMES)})")
                mask |= 1 << QUEUE_NAMES.index(q)
            values[name] = mask
        names = {f.name: f for f in cls.isa_spec().fields if f.name not in TOKEN_FIELDS}
        # `name = value` pairs separated by commas; the first is optional (halt has no fields),
        # and a trailing `loc(...)` or attribute dictionary is not a field.
        name = parser.parse_optional_keyword_in(names)
        while name is not None:
            parser.parse_punctuation("=")
            values[name] = _parse_field_value(parser, names[name])
            if parser.parse_optional_punctuation(",") is None:
                break
            name = parser.parse_identifier(context_msg=" (a field name)")
            if name not in names:
                parser.raise_error(f"{cls.isa_spec().name} has no field '{name}'")
        attributes = parser.parse_optional_attr_dict()
        return cls(values, attributes)

    def verify_(self) -> None:
        if not self._well_typed():  # IRDL's verifier names what is wrong
            self.get_irdl_definition().verify(self)
        if _FIELDS_CHECKED_AT_EMISSION.get():
            return
        try:
            validate_instruction(self.to_instruction(), 0)
        except ProgramError as e:  # report it as an IR verification error
            detail = str(e).removeprefix(f"instruction 0 ({self.isa_spec().name}): ")
            raise VerifyException(f"{self.name}: {detail}") from None
        if self.component is not None and self.component.data not in COMPONENTS:
            raise VerifyException(
                f"{self.name}: component '{self.component.data}' is not one of {' '.join(sorted(COMPONENTS))}"
            )


    def _well_typed(self) -> bool:
        """What IRDL's verifier checks, for the one shape an instruction op has (a quarter of
        a BERT-base compile's verification time in IRDL's generic walk)."""
        properties = self.properties
        if self.operands or self.results or self.regions or self.successors \
                or properties.keys() != self.ZERO_FIELDS.keys():
            return False
        floats = self.FLOAT_FIELDS
        for name, attr in properties.items():
            if type(attr) is IntegerAttr and attr.type is i64 and name not in floats:
                continue  # the common case: the shared i64 type (integer_attr.i64_attr)
            if name in floats:
                if not (type(attr) is FloatAttr and attr.type == _F32):
                    return False
            elif not (type(attr) is IntegerAttr and attr.type == i64):
                return False
        layer, component = self.attributes.get("layer"), self.attributes.get("component")
        return (layer is None or type(layer) is IntegerAttr and layer.type == i64) and \
            (component is None or type(component) is StringAttr)


_F32 = Float32Type()

_FIELDS_CHECKED_AT_EMISSION: ContextVar[bool] = ContextVar("fields_checked_at_emission",
                                                           default=False)


@contextmanager
def fields_checked_at_emission() -> Iterator[None]:
    """Inside, verifying an instruction op checks its shape and types but not its ISA fields
    and component: for a compile whose module is emitted next, where serialization checks
    every instruction and the debug map (runtime.esb.validate_program) before a byte is
    written, so that each instruction is validated once."""
    token = _FIELDS_CHECKED_AT_EMISSION.set(True)
    try:
        yield
    finally:
        _FIELDS_CHECKED_AT_EMISSION.reset(token)


def _raw_value(attr: Attribute) -> int:
    if type(attr) is IntegerAttr:  # first, and not isinstance: the generic ABC check is slow
        return attr.value.data
    if isinstance(attr, FloatAttr):
        return float_bits(attr.value.data)
    assert isinstance(attr, IntegerAttr)
    return attr.value.data


def _field_attr(spec: FieldSpec, value: float) -> Attribute:
    if spec.kind is FieldKind.FLOAT32:
        if isinstance(value, int):
            value = bits_float(value)
        return FloatAttr(float(value), Float32Type())
    return i64_attr(int(value))


def _field_text(spec: FieldSpec, attr: Attribute) -> str:
    if isinstance(attr, FloatAttr):
        return repr(float(attr.value.data))
    assert isinstance(attr, IntegerAttr)
    value = attr.value.data
    if spec.kind is FieldKind.ENUM and spec.enum is not None:
        try:
            return spec.enum(value).name
        except ValueError:
            return str(value)
    if spec.kind is FieldKind.QUEUE_MASK:
        return _mask_text(value)
    return str(value)


def _parse_field_value(parser: Parser, spec: FieldSpec) -> int | float:
    if spec.kind is FieldKind.FLOAT32:
        return float(parser.parse_number())
    if spec.kind is FieldKind.ENUM and spec.enum is not None:
        ident = parser.parse_optional_identifier()
        if ident is not None:
            enum: type[IntEnum] = spec.enum
            if ident not in enum.__members__:
                parser.raise_error(
                    f"field '{spec.name}': '{ident}' is not one of {', '.join(enum.__members__)}"
                )
            return int(enum[ident])
    return parser.parse_integer(allow_boolean=False)


_FIELD_CONSTRAINTS = {True: irdl_to_attr_constraint(FloatAttr[Float32Type]),
                      False: irdl_to_attr_constraint(IntegerAttr[I64])}
"""An instruction field's IRDL constraint (FLOAT32 or not), built once: IRDL converted the
generic alias again for each of the ~500 fields, 0.1-0.2 s of every process's import."""


def _define_instruction_op(spec: InstructionSpec) -> type[InstructionOp]:
    body: dict[str, object] = {"name": f"esact.{spec.name}", "__isa_spec__": spec, "__module__": __name__,
                               "__doc__": spec.semantics}
    for f in spec.fields:
        body[f.name] = prop_def(_FIELD_CONSTRAINTS[f.kind is FieldKind.FLOAT32])
    cls = type("".join(p.capitalize() for p in spec.name.split("_")) + "Op", (InstructionOp,), body)
    op_class = irdl_op_definition(cls)
    assert not list(op_class.get_irdl_definition().traits)  # IRDL's verifier would check them
    op_class.verify_ = InstructionOp.verify_  # not IRDL's wrapper: it checks _well_typed first
    # Set after IRDL's definition, which accepts no class constants it was not told about.
    op_class.ZERO_FIELDS = {f.name: _field_attr(f, 0) for f in spec.fields}
    op_class.FLOAT_FIELDS = frozenset(f.name for f in spec.fields if f.kind is FieldKind.FLOAT32)
    return op_class


INSTRUCTION_OPS: dict[str, type[InstructionOp]] = {
    name: _define_instruction_op(spec) for name, spec in INSTRUCTION_SPECS.items()
}
"""One op class per ISA instruction, by mnemonic: INSTRUCTION_OPS["gemm"] is `esact.gemm`."""


def instruction_op(name: str, attributes: Mapping[str, Attribute] | None = None, *,
                   location: LocationAttr | None = None, **fields: float) -> InstructionOp:
    """Build `esact.<name>` with the given fields (others 0) at `location` (None: unknown)."""
    if name not in INSTRUCTION_OPS and name in INSTRUCTION_SPECS:  # registered after this import
        INSTRUCTION_OPS[name] = _define_instruction_op(INSTRUCTION_SPECS[name])
    return INSTRUCTION_OPS[name](fields, attributes, location)


# ----------------------------------------------------------------------------- declarations

IO_KINDS = ("input", "output")


def _check_kind(op_name: str, kind: StringAttr) -> None:
    if kind.data not in IO_KINDS:
        raise VerifyException(f"{op_name}: kind must be input or output, got '{kind.data}'")


def _check_address(op_name: str, address: IntegerAttr) -> None:
    if address.value.data < 0:
        raise VerifyException(f"{op_name}: address must be non-negative")


@irdl_op_definition
class DataOp(IRDLOperation):
    """A weight-store tensor placed in the program's DRAM image (its bytes, row-major)."""

    name = "esact.data"

    weight = prop_def(StringAttr)
    """Weight-store key of the tensor."""
    address = prop_def(IntegerAttr[I64])
    """DRAM byte address."""

    assembly_format = "$weight `at` $address attr-dict"

    def __init__(self, weight: str, address: int):
        super().__init__(properties={"weight": StringAttr(weight), "address": IntegerAttr(address, i64)})

    def verify_(self) -> None:
        _check_address(self.name, self.address)


@irdl_op_definition
class IoOp(IRDLOperation):
    """A model input or output: a named DRAM tensor the caller fills or reads."""

    name = "esact.io"

    kind = prop_def(StringAttr)
    """"input" or "output"."""
    tensor_name = prop_def(StringAttr)
    """The ONNX graph input/output name."""
    address = prop_def(IntegerAttr[I64])
    """DRAM byte address (row-major, packed)."""
    tensor_type = prop_def(TensorType)
    """Shape and element type."""

    assembly_format = "$kind $tensor_name `at` $address `:` $tensor_type attr-dict"

    def __init__(self, kind: str, tensor_name: str, address: int, tensor_type: TensorType):
        super().__init__(properties={
            "kind": StringAttr(kind), "tensor_name": StringAttr(tensor_name),
            "address": IntegerAttr(address, i64), "tensor_type": tensor_type,
        })

    def verify_(self) -> None:
        _check_kind(self.name, self.kind)
        _check_address(self.name, self.address)


@irdl_op_definition
class HostSegmentOp(IRDLOperation):
    """Host segment `segment`: an ONNX model (uint8 bytes in the weight store)."""

    name = "esact.host_segment"

    segment = prop_def(IntegerAttr[I64])
    """Index the HOST instruction's `segment` field refers to."""
    onnx = prop_def(StringAttr)
    """Weight-store key of the serialized ONNX model (uint8 [size])."""

    assembly_format = "$segment $onnx attr-dict"

    def __init__(self, segment: int, onnx: str):
        super().__init__(properties={"segment": IntegerAttr(segment, i64), "onnx": StringAttr(onnx)})


@irdl_op_definition
class HostTensorOp(IRDLOperation):
    """A DRAM tensor bound to an input or output of host segment `segment`."""

    name = "esact.host_tensor"

    segment = prop_def(IntegerAttr[I64])
    """The host segment."""
    kind = prop_def(StringAttr)
    """"input" (read by the segment) or "output" (written by it)."""
    tensor_name = prop_def(StringAttr)
    """Name of the segment's ONNX graph input/output."""
    address = prop_def(IntegerAttr[I64])
    """DRAM byte address (row-major, packed)."""
    tensor_type = prop_def(TensorType)
    """Shape and element type."""

    assembly_format = "$segment $kind $tensor_name `at` $address `:` $tensor_type attr-dict"

    def __init__(self, segment: int, kind: str, tensor_name: str, address: int, tensor_type: TensorType):
        super().__init__(properties={
            "segment": IntegerAttr(segment, i64), "kind": StringAttr(kind),
            "tensor_name": StringAttr(tensor_name), "address": IntegerAttr(address, i64),
            "tensor_type": tensor_type,
        })

    def verify_(self) -> None:
        _check_kind(self.name, self.kind)
        _check_address(self.name, self.address)


DECLARATION_OPS = (DataOp, IoOp, HostSegmentOp, HostTensorOp)

ESACT = Dialect("esact", [*INSTRUCTION_OPS.values(), *DECLARATION_OPS], [])
