"""Round trips for every opcode: encode/decode, disassemble/assemble, esact-as of esact-objdump."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from esact_cc.runtime.assembly import assemble, disassemble, format_instruction, parse_instruction
from esact_cc.runtime.cli.esact_as_main import main as as_main
from esact_cc.runtime.cli.esact_objdump_main import main as objdump_main
from esact_cc.runtime.encoding import decode_instruction, encode_instruction
from esact_cc.runtime.esb import parse_esb, serialize_esb
from esact_cc.runtime.isa import INSTRUCTION_BYTES, INSTRUCTION_SPECS, validate_instruction
from esact_programs import encodable_instructions, valid_instructions, valid_programs

OPCODES = sorted(INSTRUCTION_SPECS)
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.mark.parametrize("name", OPCODES)
@FAST
@given(data=st.data())
def test_encode_decode_roundtrip(name: str, data: st.DataObject) -> None:
    instr = data.draw(encodable_instructions(INSTRUCTION_SPECS[name]))
    raw = encode_instruction(instr)
    assert len(raw) == INSTRUCTION_BYTES
    assert raw[0] == INSTRUCTION_SPECS[name].opcode
    assert decode_instruction(raw) == instr


@pytest.mark.parametrize("name", OPCODES)
@FAST
@given(data=st.data())
def test_disassemble_assemble_roundtrip(name: str, data: st.DataObject) -> None:
    instr = data.draw(encodable_instructions(INSTRUCTION_SPECS[name]))
    parsed, debug = parse_instruction(format_instruction(instr))
    assert parsed == instr and debug is None


@pytest.mark.parametrize("name", OPCODES)
@FAST
@given(data=st.data())
def test_valid_instruction_generator_passes_validation(name: str, data: st.DataObject) -> None:
    validate_instruction(data.draw(valid_instructions(INSTRUCTION_SPECS[name])), 0)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=valid_programs())
def test_program_text_roundtrip_is_byte_identical(program) -> None:
    binary = serialize_esb(program)
    reread = parse_esb(binary)
    assert serialize_esb(assemble(disassemble(reread))) == binary
    assert reread.instructions == program.instructions
    assert reread.debug == program.debug


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=valid_programs())
def test_cli_as_of_objdump_is_byte_identical(program, tmp_path_factory) -> None:
    work = tmp_path_factory.mktemp("cli")
    original = work / "a.esb"
    original.write_bytes(serialize_esb(program))
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert objdump_main(["-d", str(original)]) == 0
    (work / "a.s").write_text(text.getvalue())
    assert as_main([str(work / "a.s"), "-o", str(work / "b.esb")]) == 0
    assert (work / "b.esb").read_bytes() == original.read_bytes()


def test_wrong_padding_and_unknown_opcode_are_rejected() -> None:
    from esact_cc.runtime.errors import BinaryFormatError
    from esact_cc.runtime.isa import Instruction

    raw = bytearray(encode_instruction(Instruction.make("halt")))
    raw[-1] = 1
    with pytest.raises(BinaryFormatError, match="padding"):
        decode_instruction(bytes(raw), 7)
    with pytest.raises(BinaryFormatError, match="instruction 3: unknown opcode"):
        decode_instruction(bytes(INSTRUCTION_BYTES), 3)
