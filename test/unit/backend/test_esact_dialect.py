"""The esact dialect is generated from the ISA table: one op per instruction with exactly its
fields, and any valid instruction survives op -> text -> parse -> instruction unchanged."""

from __future__ import annotations

from esact_cc.dialects.esact import ESACT, INSTRUCTION_OPS, InstructionOp
from esact_cc.runtime.isa import INSTRUCTION_SPECS, FieldKind, Instruction, bits_float, float_bits
from hypothesis import given, settings
from hypothesis import strategies as st
from xdsl.parser import Parser

from esact_cc.dialect_registry import make_context


def test_one_op_per_instruction_with_its_fields() -> None:
    assert set(INSTRUCTION_OPS) == set(INSTRUCTION_SPECS)
    for name, spec in INSTRUCTION_SPECS.items():
        op_class = INSTRUCTION_OPS[name]
        assert op_class.name == f"esact.{name}"
        assert set(op_class.get_irdl_definition().properties) == set(spec.field_names)
    assert {op.name for op in ESACT.operations} >= {f"esact.{n}" for n in INSTRUCTION_SPECS}


def _field_values(spec) -> st.SearchStrategy[dict[str, int]]:
    """Raw values every field accepts on its own (strides 0 = packed keep operands valid)."""
    parts = {}
    for f in spec.fields:
        if "stride" in f.name:
            parts[f.name] = st.just(0)
        elif f.kind is FieldKind.FLOAT32:
            parts[f.name] = st.floats(min_value=-1e6, max_value=1e6, width=32).map(float_bits)
        elif f.kind is FieldKind.ENUM:
            parts[f.name] = st.sampled_from([int(m) for m in f.enum])
        else:
            lo, hi = f.valid_range
            parts[f.name] = st.integers(lo, min(hi, 1 << 20))
    return st.fixed_dictionaries(parts)


@st.composite
def instructions(draw) -> Instruction:
    name = draw(st.sampled_from(sorted(INSTRUCTION_SPECS)))
    fields = draw(_field_values(INSTRUCTION_SPECS[name]))
    return Instruction(name, fields)


@settings(max_examples=300, deadline=None)
@given(instructions())
def test_instruction_round_trips_through_text(instr: Instruction) -> None:
    op = INSTRUCTION_OPS[instr.opcode_name]({
        k: bits_float(v) if INSTRUCTION_SPECS[instr.opcode_name].field(k).kind is FieldKind.FLOAT32 else v
        for k, v in instr.fields.items()
    })
    assert op.to_instruction() == instr
    parsed = Parser(make_context(), str(op)).parse_op()
    assert isinstance(parsed, InstructionOp)
    assert parsed.to_instruction() == instr
    assert str(parsed) == str(op)
