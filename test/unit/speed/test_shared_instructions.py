"""Equal instruction words decode to one shared Instruction (issue 16: BERT-base at 512 tokens
has 7,666 distinct words among 16,387), and the loader's per-instruction checks run once per
shared object while still naming the first position that fails."""

from __future__ import annotations

import pytest
from esact_cc.runtime.encoding import decode_instruction, decode_program, encode_program
from esact_cc.runtime.errors import ProgramError
from esact_cc.runtime.esb import Program, fitted_extents, validate_program
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.isa import INSTRUCTION_BYTES, Buffer, Instruction, buffer_elements

CFG = load_config()


def _quant(rows: int, src: int = 0) -> Instruction:
    return Instruction.make("quant", src_addr=src, dst_addr=0, rows=rows, cols=64, mult=0.5)


def test_equal_words_decode_to_one_object() -> None:
    words = [_quant(2), _quant(3), _quant(2), Instruction.make("halt"), _quant(3)]
    decoded = decode_program(encode_program(words))
    assert decoded == words
    assert decoded[0] is decoded[2] and decoded[1] is decoded[4] and decoded[0] is not decoded[1]
    text = encode_program(words)
    n = INSTRUCTION_BYTES
    assert [decode_instruction(text[i:i + n]) for i in range(0, len(text), n)] == decoded


def test_a_shared_bad_instruction_is_named_at_its_first_position() -> None:
    bad = Instruction("quant", {**_quant(2).fields, "rows": 0})  # rows must be >= 1
    program = Program([_quant(2), bad, _quant(2), bad, Instruction.make("halt")], CFG.hash)
    with pytest.raises(ProgramError, match=r"^instruction 1 \(quant\): field 'rows'"):
        validate_program(program)


def test_a_shared_operand_past_its_buffer_is_named_at_its_first_position() -> None:
    past = _quant(2, src=buffer_elements(CFG, Buffer.VBUF) - 64)  # row 2 ends past VBUF
    program = Program([_quant(2), past, _quant(2), past, Instruction.make("halt")], CFG.hash)
    with pytest.raises(ProgramError, match=r"^instruction 1 \(quant\): field 'src_addr'"):
        fitted_extents(program, CFG)
    same = _quant(2)
    _, extents = fitted_extents(Program([same, same, Instruction.make("halt")], CFG.hash), CFG)
    assert extents[0] is extents[1] and extents[0][0] == (Buffer.VBUF, 0, 128)
