"""Binary encoding of ESACT instructions, derived from the table in isa.py.

An instruction is `INSTRUCTION_BYTES` little-endian bytes holding one integer: opcode in the
low `OPCODE_BITS`, then every field of the instruction's spec (pop, push first) in table
order, LSB first; the remaining high bits must be zero. Signed fields are two's complement.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType

from .errors import BinaryFormatError, ProgramError
from .isa_extension import register_installed
from .isa import (
    INSTRUCTION_BYTES,
    INSTRUCTION_SPECS,
    OPCODE_BITS,
    SPECS_BY_OPCODE,
    Instruction,
)


def encode_instruction(instr: Instruction, index: int = 0) -> bytes:
    """Encode one instruction; raises ProgramError if a field does not fit its width."""
    spec = INSTRUCTION_SPECS.get(instr.opcode_name)
    if spec is None:
        raise ProgramError(f"instruction {index}: unknown opcode '{instr.opcode_name}'")
    word = spec.opcode
    shift = OPCODE_BITS
    for f in spec.fields:
        if f.name not in instr.fields:
            raise ProgramError(f"instruction {index} ({spec.name}): missing field '{f.name}'")
        value = instr.fields[f.name]
        lo, hi = f.encodable_range
        if not lo <= value <= hi:
            raise ProgramError(f"instruction {index} ({spec.name}): field '{f.name}' = {value} "
                               f"does not fit {f.bits} {'signed ' if f.signed else ''}bits")
        word |= (value & ((1 << f.bits) - 1)) << shift
        shift += f.bits
    extra = set(instr.fields) - set(spec.field_names)
    if extra:
        raise ProgramError(f"instruction {index} ({spec.name}): unknown field(s) "
                           f"{', '.join(sorted(extra))}")
    return word.to_bytes(INSTRUCTION_BYTES, "little")


def decode_instruction(data: bytes, index: int = 0) -> Instruction:
    """Decode one instruction; raises BinaryFormatError naming the index on bad bits."""
    if len(data) != INSTRUCTION_BYTES:
        raise BinaryFormatError(f"instruction {index}: expected {INSTRUCTION_BYTES} bytes, "
                                f"got {len(data)}")
    word = int.from_bytes(data, "little")
    opcode = word & ((1 << OPCODE_BITS) - 1)
    spec = SPECS_BY_OPCODE.get(opcode)
    if spec is None and register_installed():  # an installed plugin's instruction
        spec = SPECS_BY_OPCODE.get(opcode)
    if spec is None:
        raise BinaryFormatError(f"instruction {index}: unknown opcode 0x{opcode:02x}")
    if word >> spec.used_bits:
        raise BinaryFormatError(f"instruction {index} ({spec.name}): nonzero padding bits")
    values: dict[str, int] = {}
    for name, shift, mask, sign in spec.field_layout:
        raw = (word >> shift) & mask
        values[name] = raw - (raw & sign) * 2  # two's complement: the sign bit counts -2^(b-1)
    return Instruction(spec.name, MappingProxyType(values))


def encode_program(instructions: Iterable[Instruction]) -> bytes:
    # A shared Instruction (decode_program, the compiler's emission) is encoded once; each is
    # kept beside its word, so its id is not reused by another while the dict lives.
    words: dict[int, tuple[Instruction, bytes]] = {}
    parts = []
    for i, instr in enumerate(instructions):
        known = words.get(id(instr))
        if known is None:
            known = words[id(instr)] = (instr, encode_instruction(instr, i))
        parts.append(known[1])
    return b"".join(parts)


def decode_program(data: bytes) -> list[Instruction]:
    if len(data) % INSTRUCTION_BYTES:
        raise BinaryFormatError(f"text section of {len(data)} bytes is not a multiple of "
                                f"{INSTRUCTION_BYTES}")
    # Equal words decode to one shared (immutable) Instruction: BERT-base at 512 tokens has
    # 7,666 distinct words among 16,387 instructions, and the loader's per-instruction checks
    # (esb.validate_program, esb.fitted_extents) then run once per distinct instruction.
    decoded: dict[bytes, Instruction] = {}
    program = []
    for i in range(0, len(data), INSTRUCTION_BYTES):
        word = data[i:i + INSTRUCTION_BYTES]
        instr = decoded.get(word)
        if instr is None:
            instr = decoded[word] = decode_instruction(word, i // INSTRUCTION_BYTES)
        program.append(instr)
    return program
