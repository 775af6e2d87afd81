"""The .esb container: atomic write, validation of every field, token deadlock, CLI errors."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest
from in_process_tool import run_in_process
from esact_cc.runtime.errors import BinaryFormatError, ConfigError, ProgramError
from esact_cc.runtime.esb import (
    CHECKSUM_BYTES,
    FORMAT_VERSION,
    HEADER,
    SECTION_ENTRY,
    DataSegment,
    DebugEntry,
    IODescriptor,
    Program,
    check_program_fits,
    check_tokens,
    parse_esb,
    read_esb,
    serialize_esb,
    write_esb,
)
from esact_cc.runtime.esb_checksum import checksum
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.isa import Instruction, Queue

CFG = load_config()


def sample_program() -> Program:
    return Program(
        [Instruction.make("load", buf=1, rows=2, cols=4, push=1 << Queue.COMPUTE),
         Instruction.make("gemm", m=2, k=4, n=4, pop=1 << Queue.LOAD),
         Instruction.make("halt")],
        CFG.hash,
        io=[IODescriptor("x", (2, 4), "int8", 0, "input"),
            IODescriptor("y", (2, 4), "int32", 64, "output")],
        data_segments=[DataSegment("w", 128, bytes(range(16)))],
        debug={1: DebugEntry("/encoder/layer.0/MatMul", 0, "q")})


def reseal(body: bytes) -> bytes:
    """Recompute the checksum of an edited file (to reach the checks behind it)."""
    return body + checksum([body])


def sections(data: bytes) -> list[tuple[int, int, int]]:
    return [SECTION_ENTRY.unpack_from(data, HEADER.size + i * SECTION_ENTRY.size)[::2] + (
        SECTION_ENTRY.unpack_from(data, HEADER.size + i * SECTION_ENTRY.size)[3],)
        for i in range(4)]


def rebuild(program_bytes: bytes, meta_edit) -> bytes:
    """Replace the META JSON and fix offsets, sizes and checksum."""
    entries = [SECTION_ENTRY.unpack_from(program_bytes, HEADER.size + i * SECTION_ENTRY.size)
               for i in range(4)]
    payloads = [program_bytes[o:o + s] for _k, _r, o, s in entries]
    meta = json.loads(payloads[1])
    payloads[1] = json.dumps(meta_edit(meta)).encode()
    offset = HEADER.size + 4 * SECTION_ENTRY.size
    table = b""
    for (kind, _r, _o, _s), payload in zip(entries, payloads):
        table += SECTION_ENTRY.pack(kind, 0, offset, len(payload))
        offset += len(payload)
    header = bytearray(program_bytes[:HEADER.size])
    struct.pack_into("<Q", header, 48, offset + CHECKSUM_BYTES)
    return reseal(bytes(header) + table + b"".join(payloads))


def test_write_read_roundtrip_atomic(tmp_path: Path) -> None:
    path = tmp_path / "p.esb"
    write_esb(sample_program(), path)
    assert [p.name for p in tmp_path.iterdir()] == ["p.esb"]  # no temp file left
    program = read_esb(path)
    assert program.instructions == sample_program().instructions
    assert program.debug == sample_program().debug
    assert program.data_segments == sample_program().data_segments
    assert program.io == sample_program().io
    assert path.read_bytes() == serialize_esb(program)


def test_invalid_program_is_not_written(tmp_path: Path) -> None:
    bad = sample_program()
    bad.instructions.pop()  # no halt
    with pytest.raises(ProgramError, match="halt"):
        write_esb(bad, tmp_path / "bad.esb")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("edit, message", [
    (lambda d: d[:50], "shorter than"),
    (lambda d: b"XXXXXXXX" + d[8:], "bad magic"),
    (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "checksum"),
    (lambda d: d[:100] + bytes([d[100] ^ 0x10]) + d[101:], "checksum"),
    (lambda d: reseal(d[:8] + struct.pack("<I", FORMAT_VERSION + 1) + d[12:-32]), "version"),
    (lambda d: reseal(d[:12] + struct.pack("<I", 3) + d[16:-32]), "sections"),
    (lambda d: reseal(d[:48] + struct.pack("<Q", 5) + d[56:-32]), "header says"),
    (lambda d: reseal(d[:-32] + b"\0"), "header says"),
])
def test_corrupt_headers_rejected(edit, message: str) -> None:
    with pytest.raises(BinaryFormatError, match=message):
        parse_esb(edit(serialize_esb(sample_program())))


def test_trailer_is_blake3_and_older_formats_are_named(tmp_path: Path) -> None:
    """The trailer is BLAKE3-256 (the official test vector of b"abc"); a format-2 file, sealed
    with SHA-256 as format 2 was, is refused by its version, not as a corrupt file."""
    import hashlib

    assert checksum([b"a", memoryview(b"bc")]).hex() == (
        "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85")
    data = serialize_esb(sample_program())
    assert data[-CHECKSUM_BYTES:] == checksum([data[:-CHECKSUM_BYTES]])
    old = data[:8] + struct.pack("<I", 2) + data[12:-CHECKSUM_BYTES]
    (tmp_path / "old.esb").write_bytes(old + hashlib.sha256(old).digest())
    with pytest.raises(BinaryFormatError, match="unsupported format version 2 .*compile the "
                       "model again"):
        read_esb(tmp_path / "old.esb")


@pytest.mark.parametrize("edit, error, message", [
    (lambda m: dict(m, io=[dict(m["io"][0], dtype="complex64")]), BinaryFormatError, "dtype"),
    (lambda m: dict(m, io=[dict(m["io"][0], shape=[2, -1])]), BinaryFormatError, "shape"),
    (lambda m: dict(m, io=[dict(m["io"][0], address=True)]), BinaryFormatError, "address"),
    (lambda m: dict(m, io=m["io"] * 2), ProgramError, "appears twice"),
    (lambda m: dict(m, debug=[[7, "n", 0, "q"]]), BinaryFormatError, "index"),
    (lambda m: dict(m, debug=[[1, "n", 0, "attention"]]), BinaryFormatError, "component"),
    (lambda m: dict(m, data=[dict(m["data"][0], size=17)]), BinaryFormatError, "outside"),
    (lambda m: dict(m, data=[dict(m["data"][0], size=8)]), BinaryFormatError, "no segment"),
    (lambda m: dict(m, extra=1), BinaryFormatError, "keys"),
    (lambda m: dict(m, host=[{"offset": 0, "size": 0, "inputs": [], "outputs": []}]),
     ProgramError, "invalid ONNX"),
    (lambda m: dict(m, io=m["io"][:1]), None, None),
])
def test_meta_fields_validated(edit, error, message) -> None:
    data = rebuild(serialize_esb(sample_program()), edit)
    if error is None:  # a well-formed edit: accepted
        parse_esb(data)
        return
    with pytest.raises(error, match=message):
        parse_esb(data)


def test_deeply_nested_json_is_a_format_error() -> None:
    data = rebuild(serialize_esb(sample_program()), lambda m: m)
    nested = b"[" * 100000 + b"]" * 100000
    entries = [SECTION_ENTRY.unpack_from(data, HEADER.size + i * SECTION_ENTRY.size)
               for i in range(4)]
    payloads = [data[o:o + s] for _k, _r, o, s in entries]
    payloads[1] = nested
    offset = HEADER.size + 4 * SECTION_ENTRY.size
    table = b""
    for (kind, _r, _o, _s), payload in zip(entries, payloads):
        table += SECTION_ENTRY.pack(kind, 0, offset, len(payload))
        offset += len(payload)
    header = bytearray(data[:HEADER.size])
    struct.pack_into("<Q", header, 48, offset + CHECKSUM_BYTES)
    with pytest.raises(BinaryFormatError, match="META"):
        parse_esb(reseal(bytes(header) + table + b"".join(payloads)))


def test_token_deadlock_names_instruction() -> None:
    ok = [Instruction.make("load", rows=1, cols=1, push=1 << Queue.COMPUTE),
          Instruction.make("gemm", m=1, k=1, n=1, pop=1 << Queue.LOAD, push=1 << Queue.SFU),
          Instruction.make("quant", rows=1, cols=1, pop=1 << Queue.COMPUTE),
          Instruction.make("halt")]
    check_tokens(ok)
    # The store waits for a token the SFU queue never sends.
    stuck = ok[:3] + [Instruction.make("store", rows=1, cols=1, pop=1 << Queue.SFU)] + ok[3:]
    with pytest.raises(ProgramError, match=r"instruction 3 \(store\): field 'pop'.*sfu"):
        check_tokens(stuck)
    # A cycle: load waits for compute, compute waits for load.
    cycle = [Instruction.make("load", rows=1, cols=1, pop=1 << Queue.COMPUTE,
                              push=1 << Queue.COMPUTE),
             Instruction.make("gemm", m=1, k=1, n=1, pop=1 << Queue.LOAD,
                              push=1 << Queue.LOAD), Instruction.make("halt")]
    with pytest.raises(ProgramError, match=r"instruction 0 \(load\).*deadlock"):
        check_tokens(cycle)
    # A pop satisfied by a later push of another queue is fine (queues run concurrently).
    check_tokens([Instruction.make("gemm", m=1, k=1, n=1, pop=1 << Queue.LOAD),
                  Instruction.make("load", rows=1, cols=1, push=1 << Queue.COMPUTE),
                  Instruction.make("halt")])


def test_config_checks() -> None:
    program = sample_program()
    assert check_program_fits(program, CFG) >= 144
    other = Program(program.instructions, "00" * 32)
    with pytest.raises(ConfigError, match="compiled for config"):
        check_program_fits(other, CFG)
    far = Program([Instruction.make("load", buf=1, rows=1, cols=4,
                                    dram_addr=CFG.dram_capacity_bytes - 2),
                   Instruction.make("halt")], CFG.hash)
    with pytest.raises(ProgramError, match=r"instruction 0 \(load\): field 'dram_addr'"):
        check_program_fits(far, CFG)


@pytest.mark.parametrize("instr, message", [
    (Instruction.make("gemm", m=0, k=1, n=1), "field 'm' = 0"),
    (Instruction.make("gemm", m=4, k=4, n=4, a_stride=3), "field 'a_stride'"),
    (Instruction.make("topk", src_buf=2, rows=1, cols=2, k=3), "field 'k'"),
    (Instruction.make("hlog", rows=1, cols=1, bits=8, dst_buf=1, scale=1.0), "field 'bits'"),
    (Instruction.make("hlog", rows=1, cols=1, bits=4, dst_buf=1, scale=0.0), "field 'scale'"),
    (Instruction.make("softmax", rows=1, cols=1, scale=float("inf")), "field 'scale'"),
    (Instruction.make("load", buf=6, rows=1, cols=1), "field 'buf'"),
    (Instruction.make("topk", src_buf=1, rows=1, cols=1, k=1), "field 'src_buf' = ABUF"),
    (Instruction.make("similarity", heads=1, length=1, keys=1, k=1, mode=1), "has_prob"),
    (Instruction.make("host", segment=0), "host segments"),
])
def test_field_validation_names_index_and_field(instr: Instruction, message: str) -> None:
    program = Program([Instruction.make("halt")], CFG.hash)
    program.instructions.insert(0, instr)
    with pytest.raises(ProgramError, match=rf"instruction 0 \({instr.opcode_name}\).*{message}"):
        serialize_esb(program)


def text_result(done: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(),
                                       done.stderr.decode())


def objdump(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """In process: the listing and the error line are the subject (esact-objdump as a whole
    process: test_cli_conventions.py, test/hostile/test_hostile_runtime.py)."""
    return text_result(run_in_process("esact-objdump", *args, cwd=cwd))


def test_objdump_on_corrupt_file_prints_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.esb"
    data = serialize_esb(sample_program())
    for corrupt in (data[:len(data) // 2], b"", b"ESACTBIN" + bytes(200)):
        path.write_bytes(corrupt)
        result = objdump("-d", path, cwd=tmp_path)
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.startswith("esact-objdump: error: ")
        assert result.stderr.count("\n") == 1
        assert "Traceback" not in result.stderr
    missing = objdump(tmp_path / "nope.esb", cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1


def test_objdump_shows_debug_node(tmp_path: Path) -> None:
    path = tmp_path / "p.esb"
    write_esb(sample_program(), path)
    listing = objdump("-d", path, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    listing = listing.stdout
    gemm_line = next(line for line in listing.splitlines() if " gemm " in line)
    assert gemm_line.endswith('[node="/encoder/layer.0/MatMul" layer=0 component=q]')


def test_as_error_leaves_no_output(tmp_path: Path) -> None:
    src = tmp_path / "bad.s"
    src.write_text(".text\ngemm m=1 k=1 n=1 bogus=3\nhalt\n")
    out = tmp_path / "out.esb"
    result = text_result(run_in_process("esact-as", src, "-o", out, cwd=tmp_path))
    assert result.returncode == 1
    assert result.stderr == "esact-as: error: line 2: gemm has no field 'bogus'\n"
    assert not out.exists()
