"""read_esb maps a well-formed binary (runtime/esb_reader.py): the same Program as parse_esb,
its data segments views of the mapped file, each host model its own bytes; and
every malformed file gives parse_esb's error, whichever path it takes."""

from __future__ import annotations

import mmap
import os
import struct
import threading
from pathlib import Path

import pytest
from esact_cc.runtime import esb_reader
from esact_cc.runtime.errors import BinaryFormatError, EsactError
from esact_cc.runtime.esb import (
    HEADER,
    DataSegment,
    HostSegment,
    IODescriptor,
    Program,
    TensorDesc,
    parse_esb,
    read_esb,
    serialize_esb,
)
from esact_cc.runtime.esb_checksum import checksum
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.isa import Instruction
from onnx import TensorProto, helper

CFG = load_config()


def identity_model(name: str) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Identity", [f"{name}_in"], [f"{name}_out"], name=name)], name,
        [helper.make_tensor_value_info(f"{name}_in", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def program() -> Program:
    hosts = [HostSegment(identity_model(n), (TensorDesc(f"{n}_in", (2, 3), "float32", a),),
                         (TensorDesc(f"{n}_out", (2, 3), "float32", a + 32),))
             for n, a in (("a", 256), ("b", 320))]
    return Program(
        [Instruction.make("host", segment=0), Instruction.make("host", segment=1),
         Instruction.make("halt")], CFG.hash,
        io=[IODescriptor("x", (2, 3), "float32", 256, "input"),
            IODescriptor("y", (2, 3), "float32", 352, "output")],
        data_segments=[DataSegment("w", 0, bytes(range(100))),
                       DataSegment("s", 128, bytes(range(7, 57)))],
        host_segments=hosts)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # host-model memo


def test_pieces_give_the_parsed_program_without_copies(tmp_path: Path) -> None:
    data = serialize_esb(program())
    path = tmp_path / "p.esb"
    path.write_bytes(data)
    loaded = read_esb(path)
    assert loaded == parse_esb(data) == program()
    first, second = (seg.data for seg in loaded.data_segments)
    assert isinstance(first, memoryview) and first.readonly
    assert first.obj is second.obj and isinstance(first.obj, mmap.mmap)  # the mapped file
    assert bytes(first) == bytes(range(100)) and bytes(second) == bytes(range(7, 57))
    assert [type(hs.onnx) for hs in loaded.host_segments] == [bytes, bytes]
    assert [hs.onnx for hs in loaded.host_segments] == [identity_model("a"), identity_model("b")]


def _resealed(data: bytes, at: int, value: bytes) -> bytes:
    """`data` with `value` written at `at` and a valid checksum: reaches the checks behind it."""
    body = data[:at] + value + data[at + len(value):-32]
    return body + checksum([body])


def _meta_offset(data: bytes) -> int:
    return struct.unpack_from("<Q", data, HEADER.size + 24 + 8)[0]


@pytest.mark.parametrize("edit", [
    lambda d: d[:-1] + bytes([d[-1] ^ 1]),  # checksum
    lambda d: d[:_meta_offset(d) + 5] + b"#" + d[_meta_offset(d) + 6:],  # META, not resealed
    lambda d: d[:400] + bytes([d[400] ^ 0x10]) + d[401:],  # a payload byte
    lambda d: _resealed(d, 8, struct.pack("<I", 1)),  # format version
    lambda d: _resealed(d, HEADER.size, struct.pack("<I", 2)),  # section kinds out of order
    lambda d: _resealed(d, _meta_offset(d), b"[" + b" " * 8),  # META not an object
    lambda d: d + b"\0",  # longer than declared
])
def test_every_malformed_file_gives_parse_esbs_error(tmp_path: Path, edit) -> None:
    data = edit(serialize_esb(program()))
    path = tmp_path / "bad.esb"
    path.write_bytes(data)
    with pytest.raises(EsactError) as parsed:
        parse_esb(data)
    with pytest.raises(type(parsed.value)) as read:
        read_esb(path)
    assert str(read.value) == str(parsed.value)


def _with_meta(data: bytes, edit) -> bytes:
    """`data` with its META JSON edited, the section table, size and checksum made consistent
    (a file only a crafted binary has: it reaches the META checks)."""
    import json

    entries = [struct.unpack_from("<IIQQ", data, HEADER.size + 24 * i) for i in range(4)]
    payloads = [data[offset:offset + size] for _kind, _res, offset, size in entries]
    payloads[1] = json.dumps(edit(json.loads(payloads[1]))).encode()
    offset, table = HEADER.size + 4 * 24, b""
    for (kind, *_rest), payload in zip(entries, payloads):
        table += struct.pack("<IIQQ", kind, 0, offset, len(payload))
        offset += len(payload)
    header = data[:48] + struct.pack("<Q", offset + 32) + data[56:HEADER.size]
    body = header + table + b"".join(payloads)
    return body + checksum([body])


def _swap_host_sizes(meta: dict) -> dict:
    first, second = meta["host"]
    first["size"], second["size"] = second["size"], first["size"] + 1
    return meta


@pytest.mark.parametrize("edit", [
    _swap_host_sizes,  # the host table does not tile its section
    lambda m: dict(m, data=m["data"][:1]),  # nor the data table
    lambda m: dict(m, host=[dict(m["host"][0], offset=-1), m["host"][1]]),
    lambda m: dict(m, data="none"),
])
def test_a_crafted_meta_gives_parse_esbs_error(tmp_path: Path, edit) -> None:
    data = _with_meta(serialize_esb(program()), edit)
    path = tmp_path / "crafted.esb"
    path.write_bytes(data)
    with pytest.raises(EsactError) as parsed:
        parse_esb(data)
    with pytest.raises(type(parsed.value)) as read:
        read_esb(path)
    assert str(read.value) == str(parsed.value)


def test_a_fifo_is_read_whole_and_parsed(tmp_path: Path) -> None:
    data = serialize_esb(program())
    fifo = tmp_path / "p.esb"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as handle:
            handle.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        assert read_esb(fifo) == program()
    finally:
        writer.join()


def test_a_file_that_shrinks_while_read_is_an_error(tmp_path: Path, monkeypatch) -> None:
    data = serialize_esb(program())
    path = tmp_path / "p.esb"
    path.write_bytes(data[:-40])  # as if cut after fstat measured the declared size
    real_fstat = os.fstat

    def measured_whole(fd: int) -> os.stat_result:
        status = list(real_fstat(fd))
        status[6] = len(data)  # st_size
        return os.stat_result(status)

    monkeypatch.setattr(esb_reader.os, "fstat", measured_whole)
    with pytest.raises(BinaryFormatError, match="shorter than its header says"):
        read_esb(path)


def test_a_header_declaring_less_than_its_section_table_gives_parse_esbs_error(
        tmp_path: Path) -> None:
    data = bytearray(serialize_esb(program())[:HEADER.size + 40])
    struct.pack_into("<Q", data, 48, len(data))  # total: the file's size, short of the table
    path = tmp_path / "short.esb"
    path.write_bytes(data)
    with pytest.raises(EsactError) as parsed:
        parse_esb(bytes(data))
    with pytest.raises(EsactError) as read:
        read_esb(path)
    assert str(read.value) == str(parsed.value)
