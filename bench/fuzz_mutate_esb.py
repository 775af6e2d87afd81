"""Mutations of an .esb binary for the input fuzz (bench/fuzz_inputs.py).

`mutate_binary(data, rng, secret)` splits a valid binary into its sections with the layout
constants of runtime/esb.py (HEADER, SECTION_ENTRY, CHECKSUM_BYTES, SECTION_KINDS), applies
1-2 mutations, reassembles it (section table, total size) and recomputes the SHA-256 trailer
the way esb's writer does, so the mutation reaches the checks behind the checksum. Families:

- `text`: bit fields of instructions set to zero, all ones or random; instructions dropped,
  duplicated or swapped;
- `meta`: one JSON value anywhere in META replaced by a hostile one (negative, huge, float,
  string, null, deep nesting, control characters), a key dropped or added; raw META bytes;
- `data`: DRAM image bytes flipped, cut or extended;
- `host`: a host segment's ONNX model mutated with bench/fuzz_mutate_onnx.py (including
  external data pointing at the sentinel), or its bytes flipped;
- `header`: version, section count, config hash, declared size, reserved fields, section
  table entries; `size`: the file cut or extended (then resealed).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from esact_cc.runtime.esb import CHECKSUM_BYTES, HEADER, SECTION_ENTRY, SECTION_KINDS
from esact_cc.runtime.esb_checksum import checksum
from esact_cc.runtime.isa import INSTRUCTION_BYTES
from fuzz_mutate_onnx import mutate_model
from onnx import ModelProto

HOSTILE_JSON: list[Any] = [-1, 0, 1 << 62, 1 << 64, 2.5, float("nan"), "x", "", "\u0007\ud800",
                           None, True, [], {}, [[[[[[[[[[[]]]]]]]]]]], "a" * 5000]


def split(data: bytes) -> tuple[bytes, list[list[int]], dict[str, bytearray]]:
    """(header, section table rows [kind, reserved, offset, size], sections by name)."""
    header = data[:HEADER.size]
    count = HEADER.unpack(header)[2]
    rows, sections = [], {}
    for i in range(count):
        row = list(SECTION_ENTRY.unpack_from(data, HEADER.size + i * SECTION_ENTRY.size))
        rows.append(row)
        sections[SECTION_KINDS[row[0]]] = bytearray(data[row[2]:row[2] + row[3]])
    return header, rows, sections


def assemble(header: bytes, rows: list[list[int]], sections: dict[str, bytearray],
             keep_table: bool = False, keep_total: bool = False) -> bytes:
    """The binary with sections re-laid out contiguously and a recomputed checksum."""
    offset = HEADER.size + SECTION_ENTRY.size * len(rows)
    table = b""
    payload = b""
    for row in rows:
        section = sections[SECTION_KINDS[row[0]]] if row[0] in SECTION_KINDS else b""
        if not keep_table:
            row[2], row[3] = offset, len(section)
        table += SECTION_ENTRY.pack(*row)
        payload += section
        offset += len(section)
    fields = list(HEADER.unpack(header))
    if not keep_total:
        fields[4] = offset + CHECKSUM_BYTES
    body = HEADER.pack(*fields) + table + payload
    return reseal(body)


def reseal(body: bytes) -> bytes:
    """`body` followed by its SHA-256, the trailer esb's writer appends."""
    return body + checksum([body])


def _mutate_text(text: bytearray, rng: random.Random) -> str:
    count = len(text) // INSTRUCTION_BYTES
    if not count:
        return "text: empty, unchanged"
    index = rng.randrange(count)
    start = index * INSTRUCTION_BYTES
    choice = rng.randrange(4)
    if choice == 0:
        del text[start:start + INSTRUCTION_BYTES]
        return f"text: instruction {index} dropped"
    if choice == 1:
        text[start:start] = text[start:start + INSTRUCTION_BYTES]
        return f"text: instruction {index} duplicated"
    if choice == 2 and count > 1:
        other = (index + rng.randrange(1, count)) % count * INSTRUCTION_BYTES
        a, b = bytes(text[start:start + INSTRUCTION_BYTES]), bytes(text[other:other +
                                                                         INSTRUCTION_BYTES])
        text[start:start + INSTRUCTION_BYTES], text[other:other + INSTRUCTION_BYTES] = b, a
        return f"text: instructions {index} and {other // INSTRUCTION_BYTES} swapped"
    word = int.from_bytes(text[start:start + INSTRUCTION_BYTES], "little")
    width = rng.choice([1, 4, 8, 16, 32])
    bit = rng.randrange(INSTRUCTION_BYTES * 8 - width + 1)
    value = rng.choice([0, (1 << width) - 1, rng.getrandbits(width)])
    mask = ((1 << width) - 1) << bit
    word = (word & ~mask) | (value << bit)
    text[start:start + INSTRUCTION_BYTES] = word.to_bytes(INSTRUCTION_BYTES, "little")
    return f"text: instruction {index} bits {bit}..{bit + width - 1} = {value:#x}"


def _json_paths(value: Any, path: tuple = ()) -> list[tuple]:
    paths = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _json_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:50]):
            paths += _json_paths(item, (*path, index))
    return paths


def _mutate_meta(meta: bytearray, rng: random.Random) -> str:
    if rng.random() < 0.1:
        at = rng.randrange(max(1, len(meta)))
        meta[at:at + 1] = bytes([rng.randrange(256)])
        return f"meta: byte {at} replaced"
    try:
        tree = json.loads(meta)
    except ValueError:  # an earlier mutation broke the JSON
        return _flip(meta, rng, "meta")
    paths = _json_paths(tree)[1:]
    if not paths:
        return _flip(meta, rng, "meta")
    path = rng.choice(paths)
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if isinstance(parent, dict) and rng.random() < 0.15:
        del parent[last]
        change = "removed"
    elif isinstance(parent, dict) and rng.random() < 0.1:
        parent["extra"] = 1
        change = "sibling key 'extra' added"
    else:
        old = parent[last]
        new = rng.choice(HOSTILE_JSON)
        if isinstance(old, int) and not isinstance(old, bool) and rng.random() < 0.5:
            new = old + rng.choice([-1, 1, -old - 1, 1 << 32, old])
        parent[last] = new
        change = f"= {json.dumps(new)[:40]}"
    meta[:] = json.dumps(tree).encode()
    return f"meta: {'.'.join(map(str, path))} {change}"


def _host_models(meta: dict) -> list[tuple[int, int]]:
    return [(h["offset"], h["size"]) for h in meta.get("host", [])]


def _mutate_host(sections: dict[str, bytearray], rng: random.Random, secret: Path) -> str:
    host = sections["host"]
    if not host:  # a binary without host segments: mutate what describes them instead
        return _mutate_meta(sections["meta"], rng)
    try:
        meta = json.loads(sections["meta"])
        models = _host_models(meta)
        index = rng.randrange(len(models))
        offset, size = models[index]
        model = ModelProto.FromString(bytes(host[offset:offset + size]))
    except Exception:  # noqa: BLE001 - earlier mutations broke META or the model: raw bytes
        return _flip(host, rng, "host")
    if rng.random() < 0.2:
        return _flip(host, rng, "host", offset, offset + size)
    mutated, files, changes = mutate_model(model, rng, secret)
    new = mutated.SerializeToString()
    host[offset:offset + size] = new
    delta = len(new) - size
    meta["host"][index]["size"] = len(new)
    for later in meta["host"][index + 1:]:
        if isinstance(later, dict) and isinstance(later.get("offset"), int):
            later["offset"] += delta  # (an earlier META mutation may have broken it)
    sections["meta"][:] = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    extra = " (its files are not shipped)" if files.data or files.symlinks or files.fifos else ""
    return f"host: segment {index}: " + "; ".join(changes) + extra


def _flip(blob: bytearray, rng: random.Random, what: str, lo: int = 0, hi: int | None = None
          ) -> str:
    hi = len(blob) if hi is None else hi
    if hi <= lo:
        return f"{what}: empty, unchanged"
    positions = sorted(rng.randrange(lo, hi) for _ in range(rng.choice([1, 2, 8])))
    for at in positions:
        blob[at] ^= 1 << rng.randrange(8)
    return f"{what}: bits flipped at bytes {positions}"


def _mutate_data(data: bytearray, rng: random.Random) -> str:
    if rng.random() < 0.8:
        return _flip(data, rng, "data")
    cut = rng.randrange(len(data) + 1)
    data[cut:] = rng.randbytes(rng.choice([0, 1, 7]))
    return f"data: cut at {cut} (+ junk)"


def _mutate_header(header: bytes, rows: list[list[int]], rng: random.Random
                   ) -> tuple[bytes, bool, bool, str]:
    """(header, keep_table, keep_total, description)."""
    fields = list(HEADER.unpack(header))
    choice = rng.randrange(6)
    if choice == 0:
        fields[1] = rng.choice([0, 1, 3, 0xFFFFFFFF])
        return HEADER.pack(*fields), False, False, f"header: version = {fields[1]}"
    if choice == 1:
        fields[2] = rng.choice([0, 3, 5, 0xFFFFFFFF])
        return HEADER.pack(*fields), False, False, f"header: section count = {fields[2]}"
    if choice == 2:
        fields[3] = rng.randbytes(32)
        return HEADER.pack(*fields), False, False, "header: config hash randomized"
    if choice == 3:
        fields[4] = rng.choice([0, 1, 1 << 40, (1 << 64) - 1])
        return HEADER.pack(*fields), False, True, f"header: total size = {fields[4]}"
    if choice == 4:
        fields[5] = 1
        return HEADER.pack(*fields), False, False, "header: reserved = 1"
    row = rng.choice(rows)
    column = rng.randrange(4)
    row[column] = rng.choice([0, 1, 5, 0xFFFFFFFF] if column < 2 else
                             [0, 1, row[column] + 1, (1 << 64) - 1, 1 << 40])
    return HEADER.pack(*fields), True, False, f"table: entry kind {row[0]} field {column} changed"


def mutate_binary(data: bytes, rng: random.Random, secret: Path) -> tuple[bytes, list[str]]:
    """A mutated, resealed copy of the .esb bytes `data`, and what was changed."""
    header, rows, sections = split(data)
    keep_table = keep_total = False
    changes = []
    for _ in range(rng.choice([1, 1, 2])):
        family = rng.choice(["text", "text", "meta", "meta", "data", "host", "host", "header",
                             "size"])
        if family == "text":
            changes.append(_mutate_text(sections["text"], rng))
        elif family == "meta":
            changes.append(_mutate_meta(sections["meta"], rng))
        elif family == "data":
            changes.append(_mutate_data(sections["data"], rng))
        elif family == "host":
            changes.append(_mutate_host(sections, rng, secret))
        elif family == "header":
            header, table, total, change = _mutate_header(header, rows, rng)
            keep_table, keep_total = keep_table or table, keep_total or total
            changes.append(change)
        else:
            changes.append("size: resized after the other changes")
            binary = assemble(header, rows, sections, keep_table, keep_total)
            body = binary[:-CHECKSUM_BYTES]
            cut = rng.randrange(len(body))
            body = body[:cut] if rng.random() < 0.5 else body + rng.randbytes(rng.choice([1, 64]))
            if len(body) >= HEADER.size and rng.random() < 0.5:  # the header agrees: go deeper
                fields = list(HEADER.unpack_from(body))
                fields[4] = len(body) + CHECKSUM_BYTES
                body = HEADER.pack(*fields) + body[HEADER.size:]
                changes.append("size: header total updated")
            return reseal(body), changes
    try:
        return assemble(header, rows, sections, keep_table, keep_total), changes
    except (ValueError, KeyError, OverflowError) as exc:  # an unpackable table value
        return reseal(data[:-CHECKSUM_BYTES]), changes + [f"(unassemblable: {exc}; original)"]

