"""The .esb container: the `Program` value type, `write_esb` (atomic) and `read_esb`.

File layout (all integers little endian):

    header   64 bytes: magic b"ESACTBIN", u32 format version, u32 section count (4),
             32 bytes SHA-256 config hash, u64 total file size, u64 reserved (0)
    table    4 x 24 bytes: u32 section kind, u32 reserved (0), u64 offset, u64 size
    sections TEXT (instructions, INSTRUCTION_BYTES each), META (canonical UTF-8 JSON:
             I/O descriptors, DRAM image segment table, host segment bindings, debug map),
             DATA (concatenated DRAM image bytes), HOST (concatenated ONNX models)
    trailer  32 bytes: BLAKE3-256 of every byte before it (esb_checksum.py)

`read_esb` checks size, checksum, header, section table, every instruction (isa.validate_
instruction), every META field and bound, and the dependency tokens (no deadlock) before it
builds anything. `check_program_fits(program, config)` adds the config-dependent checks
(buffer bounds of every operand, DRAM capacity) that the functional model runs before it
allocates memory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomic_write import atomic_write
from .bounded_read import open_user_file, read_at_most
from .display import short_repr
from .encoding import decode_program, encode_program
from .errors import BinaryFormatError, ConfigError, ProgramError
from .esb_checksum import CHECKSUM_BYTES, checksum
from .host_model_check import check_host_model
from .isa import (
    DRAM_ADDR_BITS,
    Buffer,
    Extent,
    Instruction,
    Queue,
    buffer_elements,
    operand_extent,
    validate_instruction,
)

if TYPE_CHECKING:
    from .hw_config import HardwareConfig

MAGIC = b"ESACTBIN"
FORMAT_VERSION = 3  # 2: 320-bit instructions, chunked SIMILARITY; 3: BLAKE3 trailer
HEADER = struct.Struct("<8sII32sQQ")
SECTION_ENTRY = struct.Struct("<IIQQ")
SECTION_KINDS = {1: "text", 2: "meta", 3: "data", 4: "host"}
MAX_FILE_BYTES = 1 << 33
"""8 GiB: DATA fits the 4 GiB DRAM address space; the rest is host models and text."""

COMPONENTS = frozenset({"q", "k", "v", "qk", "pv", "o", "ffn1", "ffn2", "head", "proj",
                        "predict", "sfu", "host", "load", "store"})
DTYPES = frozenset({"float32", "float16", "float64", "int8", "uint8", "int16", "int32",
                    "int64", "bool"})
MAX_RANK = 8
MAX_DIM = 1 << 31
MAX_NAME = 4096
MAX_LAYER = 1 << 20
NAME_RULE = "is not printable text (names are valid UTF-8 without control characters)"
"""Names reach terminals and file names: no lone surrogates (JSON "\\ud800"), no controls."""
DRAM_LIMIT = 1 << DRAM_ADDR_BITS


@dataclass(frozen=True)
class TensorDesc:
    """A tensor in DRAM: name, shape, dtype name (numpy), byte address; row-major, packed."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    address: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class IODescriptor(TensorDesc):
    kind: str = "input"  # "input" | "output"


@dataclass(frozen=True)
class DataSegment:
    """Bytes placed in DRAM at `address` before the program runs (weights, scales, masks)."""

    name: str
    address: int
    data: bytes | memoryview  # loaded: a read-only view of the DATA section, not a copy


@dataclass(frozen=True)
class HostSegment:
    """An ONNX model the HOST instruction runs; its graph inputs/outputs bound to DRAM."""

    onnx: bytes
    inputs: tuple[TensorDesc, ...]
    outputs: tuple[TensorDesc, ...]
    # Loaded from a .esb whose checksum was verified: SHA-256 of that checksum and the
    # segment's index, naming these model bytes without hashing them (host_model_check.py).
    file_key: bytes | None = field(default=None, compare=False, repr=False)

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 of the model bytes, computed once: the key of the host-model memo and of
        the onnxruntime session cache (hashing a 92 MB embedding table costs 0.2 s)."""
        return hashlib.sha256(self.onnx).digest()


@dataclass(frozen=True)
class DebugEntry:
    node: str  # ONNX node name
    layer: int  # -1 when not in a layer
    component: str  # one of COMPONENTS


@dataclass
class Program:
    instructions: list[Instruction]
    config_hash: str  # hex SHA-256 of the hardware config (hw_config.config_hash)
    io: list[IODescriptor] = field(default_factory=list)
    data_segments: list[DataSegment] = field(default_factory=list)
    host_segments: list[HostSegment] = field(default_factory=list)
    debug: dict[int, DebugEntry] = field(default_factory=dict)

    @property
    def inputs(self) -> list[IODescriptor]:
        return [d for d in self.io if d.kind == "input"]

    @property
    def outputs(self) -> list[IODescriptor]:
        return [d for d in self.io if d.kind == "output"]


# ----------------------------------------------------------------------------- writing


def _tensor_json(t: TensorDesc) -> dict[str, Any]:
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "address": t.address}


def serialize_esb(program: Program) -> bytes:
    """The .esb bytes of a program (deterministic). Validates the program first."""
    return b"".join(esb_parts(program))


def esb_parts(program: Program) -> list[bytes | memoryview]:
    """The .esb bytes of a program as consecutive parts, the checksum last (validated first).
    Joined they are `serialize_esb`; `write_esb` writes them one by one, so a binary of
    hundreds of MB is never copied whole (it was four times: 0.7 GB of a BERT-base compile's
    peak memory)."""
    validate_program(program)
    text = encode_program(program.instructions)
    data_table = []
    offset = 0
    for seg in program.data_segments:
        data_table.append({"name": seg.name, "address": seg.address, "offset": offset,
                           "size": len(seg.data)})
        offset += len(seg.data)
    host_table = []
    offset = 0
    for hs in program.host_segments:
        host_table.append({"offset": offset, "size": len(hs.onnx),
                           "inputs": [_tensor_json(t) for t in hs.inputs],
                           "outputs": [_tensor_json(t) for t in hs.outputs]})
        offset += len(hs.onnx)
    meta = {
        "io": [dict(_tensor_json(d), kind=d.kind) for d in program.io],
        "data": data_table,
        "host": host_table,
        "debug": [[i, e.node, e.layer, e.component] for i, e in sorted(program.debug.items())],
    }
    meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":"),
                            ensure_ascii=True).encode()
    sections: list[tuple[int, list[bytes | memoryview]]] = [
        (1, [text]), (2, [meta_bytes]), (3, [seg.data for seg in program.data_segments]),
        (4, [hs.onnx for hs in program.host_segments])]
    offset = HEADER.size + SECTION_ENTRY.size * len(sections)
    table = b""
    for kind, payload in sections:
        size = sum(len(part) for part in payload)
        table += SECTION_ENTRY.pack(kind, 0, offset, size)
        offset += size
    total = offset + CHECKSUM_BYTES
    header = HEADER.pack(MAGIC, FORMAT_VERSION, len(sections), bytes.fromhex(program.config_hash),
                         total, 0)
    parts = [header, table, *(part for _, payload in sections for part in payload)]
    return parts + [checksum(parts)]


def write_esb(program: Program, path: str | Path) -> None:
    """Write a program atomically (temporary file beside `path`, then os.replace)."""
    parts = esb_parts(program)

    def write(handle):  # type: ignore[no-untyped-def]
        for part in parts:
            handle.write(part)

    atomic_write(path, write)


# ----------------------------------------------------------------------------- reading


def read_esb(path: str | Path) -> Program:
    """Read and fully validate a .esb file; raises BinaryFormatError/ProgramError.

    The header is read first: a file without the magic (e.g. /dev/zero) stops after 64 bytes,
    and no more than the size the header declares (at most MAX_FILE_BYTES) is ever read. A
    regular file of the declared size is read piece by piece (esb_reader.py: no copies);
    anything else whole, then parsed by `parse_esb`."""
    from .esb_reader import read_pieces

    path = Path(path)
    with open_user_file(path, "binary") as handle:
        head = read_at_most(handle, HEADER.size, path, "binary")
        if len(head) == HEADER.size:
            magic, *_, total, _reserved = HEADER.unpack(head)
            if magic != MAGIC:
                raise _fail(f"'{path}' is not an .esb file (bad magic)")
            if total > MAX_FILE_BYTES:
                raise _fail(f"'{path}': header declares {total} bytes, more than the "
                            f"{MAX_FILE_BYTES >> 30} GiB limit")
            pieces, head = read_pieces(handle, head, total, path)
            if pieces is not None:
                return program_from_sections(*pieces)
            # One byte past the declared size, so a longer file is reported as such.
            head += read_at_most(handle, total + 1 - len(head), path, "binary")
    return parse_esb(head)


def _fail(message: str) -> BinaryFormatError:
    return BinaryFormatError(message)


def parse_esb(data: bytes) -> Program:
    """Parse and validate .esb bytes (everything `read_esb` checks)."""
    minimum = HEADER.size + CHECKSUM_BYTES
    if len(data) < minimum:
        raise _fail(f"file is {len(data)} bytes, shorter than the {minimum}-byte minimum")
    if data[:8] != MAGIC:
        raise _fail("not an .esb file (bad magic)")
    _magic, version, count, config_hash, total, reserved = HEADER.unpack_from(data, 0)
    if version != FORMAT_VERSION:  # before the checksum: formats 1-2's trailer is SHA-256
        raise _fail(f"unsupported format version {version} (expected {FORMAT_VERSION}: "
                    f"compile the model again with this esact-cc)")
    # memoryview slices: a large binary is not copied while it is checked.
    body, trailer = memoryview(data)[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
    if checksum([body]) != trailer:
        raise _fail("checksum mismatch (file is corrupt or truncated)")
    if total != len(data):
        raise _fail(f"header says {total} bytes, file has {len(data)}")
    if reserved != 0:
        raise _fail("header reserved field is not zero")
    if count != len(SECTION_KINDS):
        raise _fail(f"expected {len(SECTION_KINDS)} sections, header says {count}")
    table_end = HEADER.size + SECTION_ENTRY.size * count
    if table_end > len(body):
        raise _fail("section table runs past the end of the file")
    sections: dict[str, memoryview] = {}
    expected_offset = table_end
    for i in range(count):
        kind, res, offset, size = SECTION_ENTRY.unpack_from(data, HEADER.size + i *
                                                            SECTION_ENTRY.size)
        name = SECTION_KINDS.get(kind)
        if name is None or name in sections:
            raise _fail(f"section {i}: bad or duplicate kind {kind}")
        if res != 0:
            raise _fail(f"section {i} ({name}): reserved field is not zero")
        # Sections are contiguous and in order: no gaps, no overlaps, nothing hidden.
        if offset != expected_offset or offset + size > len(body):
            raise _fail(f"section {i} ({name}): offset {offset} size {size} out of bounds")
        sections[name] = body[offset:offset + size]
        expected_offset = offset + size
    if expected_offset != len(body):
        raise _fail("trailing bytes after the last section")
    return program_from_sections(config_hash, sections["text"], sections["meta"],
                                 sections["data"], sections["host"], trailer)


def program_from_sections(config_hash: bytes, text: bytes | memoryview,
                          meta: bytes | memoryview, data: bytes | memoryview,
                          host: bytes | memoryview | Sequence[bytes],
                          trailer: bytes | None = None) -> Program:
    """The validated Program of a binary's checksummed sections: its data segments are
    read-only views of `data`; `host` is the HOST section, or its models one bytes object
    each (esb_reader.py; onnxruntime takes only bytes, so a section's models are copied).
    `trailer`, the file's verified checksum, gives each host segment its file_key."""
    instructions = decode_program(bytes(text))
    program = _program_from_meta(_parse_meta(bytes(meta)), instructions, config_hash.hex(),
                                 memoryview(data).toreadonly(), host, trailer)
    validate_program(program)
    return program


def _parse_meta(raw: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _fail("META section is not valid UTF-8 JSON") from None
    if not isinstance(meta, dict) or set(meta) != {"io", "data", "host", "debug"}:
        raise _fail("META section must be an object with keys io, data, host, debug")
    return meta


def _int(value: Any, where: str, lo: int = 0, hi: int = 1 << 62) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _fail(f"{where}: expected an integer in [{lo}, {hi}], got {short_repr(value)}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise _fail(f"{where}: expected a string of at most {MAX_NAME} characters")
    if not value.isprintable():
        raise _fail(f"{where}: {short_repr(value)} {NAME_RULE}")
    return value


def _obj(value: Any, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != keys:
        raise _fail(f"{where}: expected an object with keys {', '.join(sorted(keys))}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(f"{where}: expected a list")
    return value


def _tensor(value: Any, where: str, extra: set[str] | None = None) -> dict[str, Any]:
    obj = _obj(value, where, {"name", "shape", "dtype", "address"} | (extra or set()))
    _str(obj["name"], f"{where}.name")
    shape = _list(obj["shape"], f"{where}.shape")
    if len(shape) > MAX_RANK:
        raise _fail(f"{where}.shape: rank {len(shape)} > {MAX_RANK}")
    for d in shape:
        _int(d, f"{where}.shape", 0, MAX_DIM)
    if not isinstance(obj["dtype"], str) or obj["dtype"] not in DTYPES:
        raise _fail(f"{where}.dtype: {short_repr(obj['dtype'])} is not one of "
                    f"{', '.join(sorted(DTYPES))}")
    _int(obj["address"], f"{where}.address", 0, DRAM_LIMIT)
    return obj


def _tensor_desc(obj: dict[str, Any]) -> TensorDesc:
    return TensorDesc(obj["name"], tuple(obj["shape"]), obj["dtype"], obj["address"])


def _program_from_meta(meta: dict[str, Any], instructions: list[Instruction], config_hash: str,
                       data_blob: memoryview, host_blob: bytes | memoryview | Sequence[bytes],
                       trailer: bytes | None) -> Program:
    io = []
    for i, raw in enumerate(_list(meta["io"], "META io")):
        obj = _tensor(raw, f"META io[{i}]", {"kind"})
        if obj["kind"] not in ("input", "output"):
            raise _fail(f"META io[{i}].kind: expected input or output")
        t = _tensor_desc(obj)
        io.append(IODescriptor(t.name, t.shape, t.dtype, t.address, obj["kind"]))
    segments = []
    expected = 0
    for i, raw in enumerate(_list(meta["data"], "META data")):
        obj = _obj(raw, f"META data[{i}]", {"name", "address", "offset", "size"})
        name = _str(obj["name"], f"META data[{i}].name")
        address = _int(obj["address"], f"META data[{i}].address", 0, DRAM_LIMIT)
        offset = _int(obj["offset"], f"META data[{i}].offset")
        size = _int(obj["size"], f"META data[{i}].size")
        if offset != expected or offset + size > len(data_blob):
            raise _fail(f"META data[{i}]: offset {offset} size {size} outside the DATA section")
        expected = offset + size
        segments.append(DataSegment(name, address, data_blob[offset:offset + size]))
    if expected != len(data_blob):
        raise _fail("DATA section has bytes no segment describes")
    hosts = []
    expected = 0
    parts = None if isinstance(host_blob, (bytes, memoryview)) else host_blob
    host_size = len(host_blob) if parts is None else sum(map(len, parts))
    for i, raw in enumerate(_list(meta["host"], "META host")):
        obj = _obj(raw, f"META host[{i}]", {"offset", "size", "inputs", "outputs"})
        offset = _int(obj["offset"], f"META host[{i}].offset")
        size = _int(obj["size"], f"META host[{i}].size")
        if offset != expected or offset + size > host_size:
            raise _fail(f"META host[{i}]: offset {offset} size {size} outside the HOST section")
        expected = offset + size
        ins = tuple(_tensor_desc(_tensor(t, f"META host[{i}].inputs[{j}]"))
                    for j, t in enumerate(_list(obj["inputs"], f"META host[{i}].inputs")))
        outs = tuple(_tensor_desc(_tensor(t, f"META host[{i}].outputs[{j}]"))
                     for j, t in enumerate(_list(obj["outputs"], f"META host[{i}].outputs")))
        key = trailer and hashlib.sha256(bytes(trailer) + i.to_bytes(4, "little")).digest()
        hosts.append(HostSegment(bytes(host_blob[offset:offset + size]) if parts is None
                                 else parts[i], ins, outs, key or None))
    if expected != host_size:
        raise _fail("HOST section has bytes no segment describes")
    debug: dict[int, DebugEntry] = {}
    for i, raw in enumerate(_list(meta["debug"], "META debug")):
        entry = _list(raw, f"META debug[{i}]")
        if len(entry) != 4:
            raise _fail(f"META debug[{i}]: expected [index, node, layer, component]")
        index = _int(entry[0], f"META debug[{i}] index", 0, max(0, len(instructions) - 1))
        if index in debug:
            raise _fail(f"META debug[{i}]: duplicate instruction index {index}")
        node = _str(entry[1], f"META debug[{i}] node")
        layer = _int(entry[2], f"META debug[{i}] layer", -1, MAX_LAYER)
        if not isinstance(entry[3], str) or entry[3] not in COMPONENTS:
            raise _fail(f"META debug[{i}] component: {short_repr(entry[3])} is not one of "
                        f"{' '.join(sorted(COMPONENTS))}")
        debug[index] = DebugEntry(node, layer, entry[3])
    return Program(instructions, config_hash, io, segments, hosts, debug)


# ----------------------------------------------------------------------------- validation


def validate_program(program: Program) -> None:
    """Config-independent checks: instructions, halt placement, host segment references,
    DRAM regions (in range, data segments disjoint), unique I/O names, debug map, tokens."""
    if not isinstance(program.config_hash, str) or len(program.config_hash) != 64 or any(
            c not in "0123456789abcdef" for c in program.config_hash):
        raise ProgramError("config hash must be 64 lowercase hex digits")
    if not program.instructions:
        raise ProgramError("program has no instructions (needs at least halt)")
    validated: set[int] = set()  # a shared Instruction (decode_program) checked once
    for i, instr in enumerate(program.instructions):
        if id(instr) not in validated:
            validate_instruction(instr, i)
            validated.add(id(instr))
        if instr.opcode_name == "halt" and i != len(program.instructions) - 1:
            raise ProgramError(f"instruction {i} (halt): halt must be the last instruction")
        if instr.opcode_name == "host" and instr["segment"] >= len(program.host_segments):
            raise ProgramError(f"instruction {i} (host): field 'segment' = {instr['segment']} "
                               f"but the binary has {len(program.host_segments)} host segments")
    if program.instructions[-1].opcode_name != "halt":
        raise ProgramError(f"instruction {len(program.instructions) - 1}: the last instruction "
                           f"must be halt")
    names: set[str] = set()
    for d in program.io:
        if d.kind not in ("input", "output"):
            raise ProgramError(f"I/O {short_repr(d.name)}: kind must be input or output")
        if d.name in names:
            raise ProgramError(f"I/O name {short_repr(d.name)} appears twice")
        names.add(d.name)
        _check_tensor(d, f"I/O {short_repr(d.name)}")
    spans = []
    for seg in program.data_segments:
        _check_name(seg.name, "data segment")
        if seg.address < 0 or seg.address + len(seg.data) > DRAM_LIMIT:
            raise ProgramError(f"data segment {short_repr(seg.name)} ends past the DRAM address "
                               f"space")
        if seg.data:
            spans.append((seg.address, seg.address + len(seg.data), seg.name))
    spans.sort()
    for (_s0, e0, n0), (s1, _e1, n1) in itertools.pairwise(spans):
        if s1 < e0:
            raise ProgramError(f"data segments {short_repr(n0)} and {short_repr(n1)} overlap in "
                               f"DRAM")
    for k, hs in enumerate(program.host_segments):
        for t in (*hs.inputs, *hs.outputs):
            _check_tensor(t, f"host segment {k} tensor {short_repr(t.name)}")
        check_host_model(hs, k)
    for index, entry in program.debug.items():
        if not 0 <= index < len(program.instructions):
            raise ProgramError(f"debug map: instruction index {index} out of range")
        if entry.component not in COMPONENTS:
            raise ProgramError(f"debug map: instruction {index}: unknown component "
                               f"'{entry.component}'")
        _check_name(entry.node, f"debug map: instruction {index}: node")
        if not -1 <= entry.layer <= MAX_LAYER:
            raise ProgramError(f"debug map: instruction {index}: layer {entry.layer} outside "
                               f"[-1, {MAX_LAYER}]")
    check_tokens(program.instructions)


def _check_name(name: object, where: str) -> None:
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise ProgramError(f"{where}: name must be a string of at most {MAX_NAME} characters")
    if not name.isprintable():
        raise ProgramError(f"{where}: name {short_repr(name)} {NAME_RULE}")


def _check_tensor(t: TensorDesc, where: str) -> None:
    _check_name(t.name, where)
    if len(t.shape) > MAX_RANK or any(not isinstance(d, int) or d > MAX_DIM for d in t.shape):
        raise ProgramError(f"{where}: shape {t.shape} exceeds rank {MAX_RANK} or dimension "
                           f"{MAX_DIM}")
    if t.dtype not in DTYPES:
        raise ProgramError(f"{where}: unsupported dtype '{t.dtype}'")
    if any(not isinstance(d, int) or d < 0 for d in t.shape):
        raise ProgramError(f"{where}: bad shape {t.shape}")
    if t.address < 0 or t.address + t.nbytes > DRAM_LIMIT:
        raise ProgramError(f"{where}: DRAM region [{t.address}, {t.address + t.nbytes}) "
                           f"outside the address space")


def check_tokens(instructions: Sequence[Instruction]) -> None:
    """Reject programs whose dependency-token pops cannot all be satisfied.

    Abstract execution of the in-order queues over token counts per channel (src -> dst):
    a queue's head runs when every channel it pops holds a token. If no head can run while
    instructions remain, the earliest stuck head is reported.
    """
    n_queues = len(Queue)
    queues: list[list[int]] = [[] for _ in range(n_queues)]
    for i, instr in enumerate(instructions):
        queues[instr.spec.queue].append(i)
    bits = [[q for q in range(n_queues) if mask >> q & 1] for mask in range(1 << n_queues)]
    heads = [0] * n_queues
    tokens = [[0] * n_queues for _ in range(n_queues)]  # tokens[src][dst]
    remaining = len(instructions)
    while remaining:
        progressed = False
        for q in range(n_queues):
            order = queues[q]
            while heads[q] < len(order):
                instr = instructions[order[heads[q]]]
                pops = bits[instr["pop"]]
                if any(tokens[s][q] == 0 for s in pops):
                    break
                for s in pops:
                    tokens[s][q] -= 1
                for d in bits[instr["push"]]:
                    tokens[q][d] += 1
                heads[q] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            stuck = min(queues[q][heads[q]] for q in range(n_queues)
                        if heads[q] < len(queues[q]))
            instr = instructions[stuck]
            q = instr.spec.queue
            missing = [Queue(s).name.lower() for s in bits[instr["pop"]] if tokens[s][q] == 0]
            raise ProgramError(f"instruction {stuck} ({instr.opcode_name}): field 'pop': token "
                               f"from {', '.join(missing)} can never arrive (deadlock)")


def _declared_extent(program: Program) -> int:
    """The end of the highest DRAM region the program declares outside its instructions:
    data segments, inputs and outputs, host segment bindings."""
    end = 0
    for seg in program.data_segments:
        end = max(end, seg.address + len(seg.data))
    for t in (*program.io, *(t for hs in program.host_segments
                             for t in (*hs.inputs, *hs.outputs))):
        end = max(end, t.address + t.nbytes)
    return end


def check_program_fits(program: Program, config: HardwareConfig, check_hash: bool = True) -> int:
    """Config-dependent checks before anything is allocated: config hash, every operand inside
    its buffer, every DRAM region inside the config's capacity. Returns the DRAM extent."""
    return fitted_extents(program, config, check_hash)[0]


def fitted_extents(program: Program, config: HardwareConfig, check_hash: bool = True
                   ) -> tuple[int, list[tuple[Extent | None, ...]]]:
    """`check_program_fits`, and the operand extents it computed (the functional model's)."""
    if check_hash and program.config_hash != config.hash:
        raise ConfigError(f"binary was compiled for config {program.config_hash[:12]}..., "
                          f"running under {config.hash[:12]}... ({config.name})")
    sizes: Mapping[Buffer, int] = {b: buffer_elements(config, b) for b in Buffer}
    extent = _declared_extent(program)  # and every DRAM operand's end, below
    known: dict[int, tuple[Extent | None, ...]] = {}  # shared Instructions: checked once
    table = []
    for i, instr in enumerate(program.instructions):
        extents = known.get(id(instr))
        if extents is None:
            extents = known[id(instr)] = tuple(operand_extent(instr, op)
                                               for op in instr.spec.operands)
            for op, operand in zip(instr.spec.operands, extents):
                if operand is None:
                    continue
                buf, start, end = operand
                limit = config.dram_capacity_bytes if buf is None else sizes[buf]
                if end > limit:
                    where = "DRAM" if buf is None else buf.name
                    raise ProgramError(f"instruction {i} ({instr.opcode_name}): field "
                                       f"'{op.addr}' = {start}: operand [{start}, {end}) "
                                       f"exceeds {where} size {limit}")
                extent = max(extent, end) if buf is None else extent
        table.append(extents)
    if extent > config.dram_capacity_bytes:
        raise ProgramError(f"program needs {extent} bytes of DRAM, config has "
                           f"{config.dram_capacity_bytes}")
    return extent, table

