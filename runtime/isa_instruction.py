"""A decoded ESACT instruction (`Instruction`: mnemonic + raw field values) and
`validate_instruction`, the config-independent field checks the loader and assembler apply,
both read from the ISA table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .errors import ProgramError
from .isa_fields import Buffer, FieldKind, SimilarityMode, bits_float, float_bits
from .isa_spec import InstructionSpec, Operand
from .isa_table import ALLOWED_BUFFERS, INSTRUCTION_SPECS, MAX_INT8_HLOG_BITS, similarity_rows


@dataclass(frozen=True)
class Instruction:
    """A decoded instruction: mnemonic and every field's raw value (floats as bit patterns).

    Build one with `Instruction.make("gemm", m=4, ...)`: omitted fields are 0 and float
    fields accept Python floats.
    """

    opcode_name: str
    fields: Mapping[str, int]

    @property
    def spec(self) -> InstructionSpec:
        return INSTRUCTION_SPECS[self.opcode_name]

    @staticmethod
    def make(opcode_name: str, **values: float) -> Instruction:
        if opcode_name not in INSTRUCTION_SPECS:
            raise ProgramError(f"unknown instruction '{opcode_name}'")
        spec = INSTRUCTION_SPECS[opcode_name]
        unknown = set(values) - set(spec.field_names)
        if unknown:
            raise ProgramError(f"{opcode_name}: unknown field(s) {', '.join(sorted(unknown))}")
        raw: dict[str, int] = {}
        for f in spec.fields:
            value = values.get(f.name, 0)
            if f.kind is FieldKind.FLOAT32 and isinstance(value, float):
                value = float_bits(value)
            raw[f.name] = int(value)
        return Instruction(opcode_name, MappingProxyType(raw))

    def float_field(self, name: str) -> float:
        return bits_float(self.fields[name])

    def __getitem__(self, name: str) -> int:
        return self.fields[name]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Instruction) and self.opcode_name == other.opcode_name
                and dict(self.fields) == dict(other.fields))

    def __hash__(self) -> int:
        return hash((self.opcode_name, tuple(sorted(self.fields.items()))))

    def __repr__(self) -> str:
        return f"Instruction({self.opcode_name!r}, {dict(self.fields)!r})"


def validate_instruction(instr: Instruction, index: int) -> None:
    """Field-level checks (independent of the config): value ranges, enum members, the
    buffers an operand may name, HLog bits for int8 buffers. Raises ProgramError naming the
    instruction index and the field."""
    spec = INSTRUCTION_SPECS.get(instr.opcode_name)
    if spec is None:
        raise ProgramError(f"instruction {index}: unknown opcode '{instr.opcode_name}'")
    fields = instr.fields
    if fields.keys() != spec.field_name_set:
        raise ProgramError(f"instruction {index} ({spec.name}): fields do not match the ISA table")
    checks, strided = _field_checks(spec)
    for name, lo, hi, enum, is_float in checks:
        value = fields[name]
        if not isinstance(value, int) or not lo <= value <= hi:
            raise ProgramError(f"instruction {index} ({spec.name}): field '{name}' = {value} "
                               f"outside [{lo}, {hi}]")
        if enum is not None:
            _check_member(spec, name, enum, value, index)
        elif is_float and value & _FLOAT_EXPONENT == _FLOAT_EXPONENT:  # inf or NaN
            raise ProgramError(f"instruction {index} ({spec.name}): field '{name}' is not a "
                               f"finite float")
    for op in strided:
        stride = fields[op.stride]
        cols = op.cols(fields)
        if stride != 0 and stride < cols:
            raise ProgramError(f"instruction {index} ({spec.name}): field '{op.stride}' = "
                               f"{stride} < row length {cols}")
    _check_special_rules(spec, instr, index)


_FLOAT_EXPONENT = 0x7F800000
"""A float32 bit pattern is inf or NaN exactly when its exponent bits are all ones."""


_Checks = tuple[tuple[tuple[str, int, int, Any, bool], ...], tuple[Operand, ...]]


def _field_checks(spec: InstructionSpec) -> _Checks:
    """(name, lo, hi, enum or None, is a float) of each field and the operands with a row
    stride, worked out once per spec: validating BERT-base's 16,771 instructions field by
    field, with their attributes looked up each time, cost 0.11 s (issue 16)."""
    cached = _FIELD_CHECKS.get(spec.name)
    if cached is None or cached[0] is not spec:  # a spec registered again: its own checks
        cached = _FIELD_CHECKS[spec.name] = (spec, (
            tuple((f.name, *f.valid_range, f.enum, f.kind is FieldKind.FLOAT32)
                  for f in spec.fields),
            tuple(op for op in spec.operands if op.stride is not None)))
    return cached[1]


_FIELD_CHECKS: dict[str, tuple[InstructionSpec, _Checks]] = {}


def _check_member(spec: InstructionSpec, name: str, enum: Any, value: int, index: int) -> None:
    where = f"instruction {index} ({spec.name})"
    member = enum._value2member_map_.get(value)
    if member is None:
        raise ProgramError(f"{where}: field '{name}' = {value} is not a valid {enum.__name__}")
    allowed = ALLOWED_BUFFERS.get((spec.name, name))
    if allowed is not None and member not in allowed:
        raise ProgramError(f"{where}: field '{name}' = {member.name} not allowed here"
                           f" (allowed: {', '.join(sorted(b.name for b in allowed))})")


def _check_special_rules(spec: InstructionSpec, instr: Instruction, index: int) -> None:
    """The rules of single instructions beyond their fields' ranges."""
    where = f"instruction {index} ({spec.name})"
    if spec.name == "hlog" and Buffer(instr["dst_buf"]) is not Buffer.ACC \
            and instr["bits"] > MAX_INT8_HLOG_BITS:
        raise ProgramError(f"{where}: field 'bits' = {instr['bits']} needs dst_buf ACC "
                           f"(int8 buffers hold at most {MAX_INT8_HLOG_BITS}-bit HLog levels)")
    if spec.name == "hlog" and not instr["dynamic"] and not bits_float(instr["scale"]) > 0:
        raise ProgramError(f"{where}: field 'scale' must be positive")
    if spec.name == "similarity" and instr["mode"] == SimilarityMode.COSPROB \
            and not instr["has_prob"]:
        raise ProgramError(f"{where}: field 'has_prob' must be 1 for mode COSPROB")
    if spec.name == "similarity" and not (instr["first_row"] < instr["length"] and
                                          instr["first_row"] + similarity_rows(instr.fields)
                                          <= instr["length"]):
        raise ProgramError(f"{where}: fields 'first_row' = {instr['first_row']}, 'row_count' = "
                           f"{instr['row_count']} leave the {instr['length']} rows")
    if spec.name in ("topk", "pam_scores", "bpu_scores") and instr["k"] > instr["cols"]:
        raise ProgramError(f"{where}: field 'k' = {instr['k']} > cols {instr['cols']}")

