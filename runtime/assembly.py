"""ESACT assembly text: the disassembler's output and the assembler that parses it back.

The text is complete: `assemble(disassemble(p))` rebuilds a program whose .esb bytes are
identical to p's. Syntax (one item per line; full-line comments start with ';'):

    .config hash=<64 hex digits>
    .io kind=input name="x" dtype=float32 shape=[4,16] address=4096
    .data name="w0" address=0 size=1024
    .bytes 00ff...                       (hex, appended to the last .data or .host)
    .host size=2048                      (host segments in order: segment 0, 1, ...)
    .hostio kind=output name="y" dtype=float32 shape=[4] address=8192
    .text
         0: gemm pop=load push=sfu acc_addr=0 ... [node="/MatMul" layer=0 component=q]

Instruction fields are `name=value` in any order (omitted fields are 0): unsigned and signed
integers in decimal or 0x-hex, floats as the shortest float32 decimal (or 0x bits for
inf/NaN), enums by member name, token masks as queue names joined by '|' ('-' = none).
Names and node strings are JSON string literals.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from .errors import ProgramError
from .esb import (
    DataSegment,
    DebugEntry,
    HostSegment,
    IODescriptor,
    Program,
    TensorDesc,
    validate_program,
)
from .isa import (
    INSTRUCTION_SPECS,
    FieldKind,
    FieldSpec,
    Instruction,
    Queue,
    bits_float,
    float_bits,
)

BYTES_PER_LINE = 64
_TOKEN = re.compile(
    r'\s*(?:(\w+)=("(?:[^"\\]|\\.)*"|\[[^\]\s]*\]|[^\s\]]+)|(\[)|(\])|([^\s=\[\]]+))')


# ----------------------------------------------------------------------------- printing


def format_field(spec: FieldSpec, value: int) -> str:
    if spec.kind is FieldKind.FLOAT32:
        f = np.float32(bits_float(value))
        if not math.isfinite(f):
            return f"0x{value:08x}"
        text = str(f)
        return text if float_bits(float(text)) == value else f"0x{value:08x}"
    if spec.kind is FieldKind.ENUM and spec.enum is not None:
        try:
            return spec.enum(value).name
        except ValueError:
            return str(value)
    if spec.kind is FieldKind.QUEUE_MASK:
        names = [q.name.lower() for q in Queue if value >> q & 1]
        return "|".join(names) if names else "-"
    return str(value)


def format_instruction(instr: Instruction, debug: DebugEntry | None = None) -> str:
    parts = [instr.opcode_name]
    for spec in instr.spec.fields:
        parts.append(f"{spec.name}={format_field(spec, instr.fields[spec.name])}")
    if debug is not None:
        parts.append(f"[node={json.dumps(debug.node)} layer={debug.layer} "
                     f"component={debug.component}]")
    return " ".join(parts)


def _tensor_text(t: TensorDesc) -> str:
    return (f"name={json.dumps(t.name)} dtype={t.dtype} "
            f"shape={json.dumps(list(t.shape), separators=(',', ':'))} address={t.address}")


def _hex_lines(data: bytes) -> Iterator[str]:
    for i in range(0, len(data), BYTES_PER_LINE):
        yield ".bytes " + data[i:i + BYTES_PER_LINE].hex()


def disassemble(program: Program, with_data: bool = True) -> str:
    """The program as assembly text (complete when `with_data`; else data bytes elided)."""
    lines = [f".config hash={program.config_hash}"]
    for d in program.io:
        lines.append(f".io kind={d.kind} {_tensor_text(d)}")
    for seg in program.data_segments:
        lines.append(f".data name={json.dumps(seg.name)} address={seg.address} "
                     f"size={len(seg.data)}")
        if with_data:
            lines.extend(_hex_lines(seg.data))
        else:
            lines.append(f"; {len(seg.data)} bytes not shown")
    for k, hs in enumerate(program.host_segments):
        lines.append(f".host size={len(hs.onnx)}  ; segment {k}")
        for t in hs.inputs:
            lines.append(f".hostio kind=input {_tensor_text(t)}")
        for t in hs.outputs:
            lines.append(f".hostio kind=output {_tensor_text(t)}")
        if with_data:
            lines.extend(_hex_lines(hs.onnx))
    lines.append(".text")
    width = len(str(max(0, len(program.instructions) - 1)))
    for i, instr in enumerate(program.instructions):
        lines.append(f"{i:>{width}}: {format_instruction(instr, program.debug.get(i))}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- parsing


class _Line:
    """Tokens of one line: positional words, key=value pairs, an optional [...] group."""

    def __init__(self, text: str, number: int) -> None:
        self.number = number
        self.words: list[str] = []
        self.pairs: dict[str, str] = {}
        self.group: dict[str, str] | None = None
        target = self.pairs
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise self.error(f"cannot parse at column {pos + 1}")
            pos = m.end()
            key, value, open_, close, word = m.groups()
            if key is not None:
                if key in target:
                    raise self.error(f"'{key}' given twice")
                target[key] = value
            elif open_:
                if self.group is not None:
                    raise self.error("more than one [...] group")
                self.group = {}
                target = self.group
            elif close:
                if target is self.pairs:
                    raise self.error("unmatched ']'")
                target = self.pairs
            elif word is not None:
                if word.startswith(";"):
                    break  # trailing comment
                if self.pairs or self.group is not None:
                    raise self.error(f"unexpected word '{word}' after fields")
                self.words.append(word)
        if target is not self.pairs:
            raise self.error("unclosed '['")

    def error(self, message: str) -> ProgramError:
        return ProgramError(f"line {self.number}: {message}")

    def take(self, pairs: dict[str, str], key: str) -> str:
        if key not in pairs:
            raise self.error(f"missing '{key}='")
        return pairs.pop(key)

    def done(self, pairs: dict[str, str]) -> None:
        if pairs:
            raise self.error(f"unknown key(s) {', '.join(sorted(pairs))}")


def _int(line: _Line, text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise line.error(f"{what}: expected an integer, got '{text}'") from None


def _string(line: _Line, text: str, what: str) -> str:
    try:
        value = json.loads(text) if text.startswith('"') else None
    except ValueError:
        value = None
    if not isinstance(value, str):
        raise line.error(f"{what}: expected a quoted string, got '{text}'")
    return value


def parse_field(spec: FieldSpec, text: str, line: _Line) -> int:
    what = f"field '{spec.name}'"
    if spec.kind is FieldKind.QUEUE_MASK:
        if text == "-":
            return 0
        if text[0].isdigit():
            return _int(line, text, what)
        mask = 0
        for name in text.split("|"):
            try:
                mask |= 1 << Queue[name.upper()]
            except KeyError:
                raise line.error(f"{what}: unknown queue '{name}'") from None
        return mask
    if spec.kind is FieldKind.ENUM and spec.enum is not None and not text[0].isdigit():
        try:
            return int(spec.enum[text.upper()])
        except KeyError:
            raise line.error(f"{what}: '{text}' is not a {spec.enum.__name__}") from None
    if spec.kind is FieldKind.FLOAT32 and not text.lower().startswith("0x"):
        try:
            value = float(text)
        except ValueError:
            raise line.error(f"{what}: expected a float, got '{text}'") from None
        return float_bits(value)
    return _int(line, text, what)


def _parse_tensor(line: _Line, pairs: dict[str, str]) -> TensorDesc:
    name = _string(line, line.take(pairs, "name"), "name")
    dtype = line.take(pairs, "dtype")
    try:
        shape = json.loads(line.take(pairs, "shape"))
    except ValueError:
        shape = None
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                              for d in shape):
        raise line.error("shape: expected a list of integers like [4,16]")
    address = _int(line, line.take(pairs, "address"), "address")
    return TensorDesc(name, tuple(shape), dtype, address)


@dataclass
class _Builder:
    config_hash: str | None = None
    io: list[IODescriptor] = field(default_factory=list)
    data: list[tuple[str, int, int, bytearray]] = field(default_factory=list)
    hosts: list[tuple[int, list[TensorDesc], list[TensorDesc], bytearray]] = \
        field(default_factory=list)
    instructions: list[Instruction] = field(default_factory=list)
    debug: dict[int, DebugEntry] = field(default_factory=dict)
    bytes_target: bytearray | None = None
    in_text: bool = False


def _directive(b: _Builder, line: _Line) -> None:
    name = line.words[0]
    pairs = dict(line.pairs)
    if name == ".text":
        b.in_text = True
        b.bytes_target = None
    elif name == ".config":
        b.config_hash = line.take(pairs, "hash").lower()
    elif name == ".io":
        kind = line.take(pairs, "kind")
        t = _parse_tensor(line, pairs)
        b.io.append(IODescriptor(t.name, t.shape, t.dtype, t.address, kind))
    elif name == ".data":
        seg_name = _string(line, line.take(pairs, "name"), "name")
        address = _int(line, line.take(pairs, "address"), "address")
        size = _int(line, line.take(pairs, "size"), "size")
        b.data.append((seg_name, address, size, bytearray()))
        b.bytes_target = b.data[-1][3]
    elif name == ".host":
        size = _int(line, line.take(pairs, "size"), "size")
        b.hosts.append((size, [], [], bytearray()))
        b.bytes_target = b.hosts[-1][3]
    elif name == ".hostio":
        if not b.hosts:
            raise line.error(".hostio before any .host")
        kind = line.take(pairs, "kind")
        if kind not in ("input", "output"):
            raise line.error("kind: expected input or output")
        (b.hosts[-1][1] if kind == "input" else b.hosts[-1][2]).append(
            _parse_tensor(line, pairs))
    elif name == ".bytes":
        if b.bytes_target is None or len(line.words) != 2:
            raise line.error(".bytes needs one hex word after a .data or .host")
        try:
            b.bytes_target.extend(bytes.fromhex(line.words[1]))
        except ValueError:
            raise line.error(".bytes: not a hex string") from None
    else:
        raise line.error(f"unknown directive '{name}'")
    line.done(pairs)


def _parse_instruction_line(line: _Line, expected_index: int | None
                            ) -> tuple[Instruction, DebugEntry | None]:
    words = list(line.words)
    if words and words[0].endswith(":"):
        index = _int(line, words.pop(0)[:-1], "instruction index")
        if expected_index is not None and index != expected_index:
            raise line.error(f"instruction index {index}, expected {expected_index}")
    if len(words) != 1:
        raise line.error("expected '[index:] mnemonic field=value ...'")
    mnemonic = words[0].lower()
    spec = INSTRUCTION_SPECS.get(mnemonic)
    if spec is None:
        raise line.error(f"unknown instruction '{words[0]}'")
    values: dict[str, int] = {f.name: 0 for f in spec.fields}
    for key, text in line.pairs.items():
        if key not in values:
            raise line.error(f"{mnemonic} has no field '{key}'")
        values[key] = parse_field(spec.field(key), text, line)
    for f in spec.fields:
        lo, hi = f.encodable_range
        if not lo <= values[f.name] <= hi:
            raise line.error(f"field '{f.name}' = {values[f.name]} does not fit {f.bits} bits")
    debug = None
    if line.group is not None:
        group = dict(line.group)
        node = _string(line, line.take(group, "node"), "node")
        layer = _int(line, line.take(group, "layer"), "layer")
        component = line.take(group, "component")
        line.done(group)
        debug = DebugEntry(node, layer, component)
    return Instruction(mnemonic, MappingProxyType(values)), debug


def parse_instruction(text: str) -> tuple[Instruction, DebugEntry | None]:
    """Parse one instruction line (`[index:] mnemonic field=value ... [node=...]`)."""
    return _parse_instruction_line(_Line(text.strip(), 1), None)


def _instruction(b: _Builder, line: _Line) -> None:
    instr, debug = _parse_instruction_line(line, len(b.instructions))
    if debug is not None:
        b.debug[len(b.instructions)] = debug
    b.instructions.append(instr)


def assemble(text: str, config_hash: str | None = None) -> Program:
    """Parse assembly text into a Program (validated). `config_hash` is used when the text
    has no .config line."""
    b = _Builder()
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith(";"):
            continue
        line = _Line(stripped, number)
        if not line.words:
            raise line.error("expected a directive or an instruction")
        if line.words[0].startswith("."):
            if b.in_text and line.words[0] != ".text":
                raise line.error("directives must come before .text")
            _directive(b, line)
        elif not b.in_text:
            raise line.error("instruction before .text")
        else:
            _instruction(b, line)
    hash_ = b.config_hash or config_hash
    if hash_ is None:
        raise ProgramError("no .config line and no config hash given")
    for name, _address, size, data in b.data:
        if len(data) != size:
            raise ProgramError(f".data {json.dumps(name)}: size={size} but {len(data)} bytes "
                               f"given")
    for k, (size, _i, _o, data) in enumerate(b.hosts):
        if len(data) != size:
            raise ProgramError(f".host segment {k}: size={size} but {len(data)} bytes given")
    program = Program(
        instructions=b.instructions, config_hash=hash_, io=b.io,
        data_segments=[DataSegment(n, a, bytes(d)) for n, a, _s, d in b.data],
        host_segments=[HostSegment(bytes(d), tuple(i), tuple(o)) for _s, i, o, d in b.hosts],
        debug=b.debug)
    validate_program(program)
    return program
