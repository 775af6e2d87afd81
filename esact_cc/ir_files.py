"""IR text with its weights: read any stage's IR file, write IR with the weights inline.

MLIR keeps data that does not belong in op syntax in a file-metadata section after the module:

    {-# dialect_resources: { builtin: { "w": "0x40000000934e554d5059..." } } #-}

each blob a hex string of a 4-byte little-endian alignment, then the bytes. Here a blob is the
`.npy` serialization of one weight (header + data, so it states its dtype and shape) under its
weight-store name; mlir-opt parses and reprints such a section unchanged. xdsl 0.75 parses the
section only with identifier keys, into a process-wide table of the builtin dialect, so this
module splits it off before xdsl sees the text and parses it here.

Which form is written (docs/design.md section 10): IR on stdout carries its weights inline (a
pipe has no "beside"); an IR file gets the `.npz` beside it (`esact.weight_store`,
weight_store.py). A reader takes either, never both; esact-cc and `api.load_ir` refuse a module naming a weight
that neither provides (a dangling handle is an error naming the weight, never an empty
tensor); esact-opt reads such IR as mlir-opt reads IR with elided resources, and a pass that
reads a missing weight names it (WeightStore).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.utils.exceptions import VerifyException

from esact_cc.runtime.errors import CompileError
from esact_cc.weight_store import WEIGHT_STORE_ATTR, WeightStore, load_store_named_by
from esact_cc.weight_store_archive import MAX_WEIGHT_STORE_BYTES

BLOB_ALIGNMENT = 64
"""numpy pads a `.npy` header to a multiple of 64 bytes, so the data is 64-byte aligned."""
MAX_IR_TEXT_BYTES = 1 << 30
"""Cap on IR text read whole, inline weights included (two hex digits a byte: about 400 MiB
of weights): a file that holds more keeps its weights in the `.npz` beside it."""
STDIN = "-"

_SECTION = re.compile(r"\{-#(?P<body>.*?)#-\}\s*\Z", re.DOTALL)
_RESOURCES = re.compile(r"\s*dialect_resources\s*:\s*\{\s*builtin\s*:\s*\{(?P<entries>.*)\}"
                        r"\s*\}\s*\Z", re.DOTALL)
_ENTRY = re.compile(r'\s*(?P<key>"(?:[^"\\]|\\.)*"|[A-Za-z_][\w$.\-]*)\s*:\s*'
                    r'"0x(?P<hex>[0-9A-Fa-f]*)"\s*(?:,|\Z)', re.DOTALL)


def _quote(name: str) -> str:
    """An MLIR string literal: `\\` and `"` escaped, other non-printables as `\\XX`."""
    out = []
    for ch in name:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable() and ord(ch) < 0x7F:
            out.append(ch)
        else:
            out.extend(f"\\{b:02X}" for b in ch.encode())
    return '"' + "".join(out) + '"'


def _unquote(literal: str) -> str:
    if not literal.startswith('"'):
        return literal
    raw = bytearray()
    body, k = literal[1:-1], 0
    while k < len(body):
        if body[k] == "\\" and body[k + 1:k + 2] in ('"', "\\"):
            raw += body[k + 1].encode()
            k += 2
        elif body[k] == "\\":
            raw.append(int(body[k + 1:k + 3], 16))
            k += 3
        else:
            raw += body[k].encode()
            k += 1
    return raw.decode()


def weights_section(store: WeightStore) -> str:
    """The `{-# dialect_resources ... #-}` section holding every weight of `store`."""
    align = BLOB_ALIGNMENT.to_bytes(4, "little").hex()
    entries = []
    for name in store:
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.ascontiguousarray(store[name]), allow_pickle=False)
        entries.append(f'      {_quote(name)}: "0x{align}{buffer.getvalue().hex().upper()}"')
    return ("\n{-#\n  dialect_resources: {\n    builtin: {\n" + ",\n".join(entries)
            + "\n    }\n  }\n#-}\n")


def ir_text_with_weights(module: ModuleOp, store: WeightStore) -> str:
    """The module's IR (as `api.ir_text`) followed by its weights inline; the module's
    `esact.weight_store` reference is left out of the text (the weights are here)."""
    from esact_cc.api import ir_text

    reference = module.attributes.pop(WEIGHT_STORE_ATTR, None)
    try:
        text = ir_text(module)
    finally:
        if reference is not None:
            module.attributes[WEIGHT_STORE_ATTR] = reference
    return text + weights_section(store) if len(store) else text


def split_weights_section(text: str, where: str) -> tuple[str, WeightStore | None]:
    """The IR text without its trailing resources section, and the weights the section holds
    (None without a section). Blobs are read by npy_files (numeric dtypes only, sizes checked
    against the bytes), at most MAX_WEIGHT_STORE_BYTES in all."""
    from esact_cc.runtime.npy_files import read_npy_stream

    section = _SECTION.search(text)
    if section is None:
        return text, None
    resources = _RESOURCES.match(section["body"])
    if resources is None:
        raise CompileError(f"{where}: its {{-# ... #-}} section is not 'dialect_resources: "
                           "{ builtin: { ... } }' (the only resources esact-cc reads)")
    store, total, entries, position = WeightStore(), 0, resources["entries"], 0
    while entries[position:].strip():
        entry = _ENTRY.match(entries, position)
        if entry is None:
            raise CompileError(f"{where}: dialect_resources entry at '{entries[position:][:40].strip()}"
                               "' is not KEY: \"0x<hex>\"")
        name, position = _unquote(entry["key"]), entry.end()
        blob = bytes.fromhex(entry["hex"]) if len(entry["hex"]) % 2 == 0 else b""
        if len(blob) < 4:
            raise CompileError(f"{where}: resource '{name}' is not an alignment and data")
        total += len(blob) - 4
        if total > MAX_WEIGHT_STORE_BYTES:
            raise CompileError(f"{where}: inline weights exceed the {MAX_WEIGHT_STORE_BYTES} "
                               "bytes a weight store may hold")
        if name in store:
            raise CompileError(f"{where}: resource '{name}' is given twice")
        stream = io.BytesIO(blob[4:])
        store.add(name, read_npy_stream(stream, f"{where}: resource '{name}'",
                                        MAX_WEIGHT_STORE_BYTES, available=len(blob) - 4))
    return text[:section.start()].rstrip("\n") + "\n", store  # the blank line before it


def referenced_weights(module: ModuleOp) -> Iterator[tuple[str, str]]:
    """(weight name, op name) of every weight handle in the module."""
    from esact_cc.dialects.esact import DataOp
    from esact_cc.dialects.gemm_ops import LinearOp
    from esact_cc.dialects.onnx import WeightOp

    for op in module.walk():
        if isinstance(op, WeightOp):
            yield op.weight_name.data, op.name
        elif isinstance(op, DataOp):
            yield op.weight.data, op.name
        elif isinstance(op, LinearOp) and op.group_scales is not None:
            yield op.group_scales.data, op.name


def check_no_dangling_weights(module: ModuleOp, store: WeightStore, where: str) -> None:
    for name, op_name in referenced_weights(module):
        if name not in store:
            source = ("its weight store" if WEIGHT_STORE_ATTR in module.attributes
                      else "its dialect_resources section")
            raise CompileError(f"{where}: {op_name} names weight '{name}', which {source} "
                               "does not hold (IR without its weights?)")


def read_ir(path: str | os.PathLike[str]) -> tuple[ModuleOp, WeightStore]:
    """Parse an IR file (or `-`, stdin) with its weights: inline, or the `.npz` its
    `esact.weight_store` names (inside the file's directory; the current one for stdin)."""
    from esact_cc.api import parse_ir
    from esact_cc.runtime.bounded_read import read_bounded_text

    where = "IR on stdin" if str(path) == STDIN else f"IR file '{path}'"
    source = "/dev/stdin" if str(path) == STDIN else path
    text, inline = split_weights_section(read_bounded_text(source, MAX_IR_TEXT_BYTES, "IR file"),
                                         where)
    module = parse_ir(text, str(path))
    try:
        module.verify()  # the input's fault (a failure after a pass is a bug), as in esact-opt
    except VerifyException as e:
        raise CompileError(f"{path}: invalid IR: {' '.join(str(e).split())}") from None
    return module, weights_of_parsed(module, inline, Path(path).parent, where)


def weights_of_parsed(module: ModuleOp, inline: WeightStore | None, ir_dir: Path,
                      where: str, complete: bool = True) -> WeightStore:
    """The weights of a parsed IR text: its inline section or the `.npz` it names (resolved
    in `ir_dir`), checked to hold every weight the module names when `complete` (a compile to
    a binary needs them all; esact-opt, like mlir-opt with elided resources, also handles IR
    written without them, and a pass that reads a missing weight names it)."""
    if inline is not None and WEIGHT_STORE_ATTR in module.attributes:
        raise CompileError(f"{where} has inline weights and names a weight store "
                           f"({WEIGHT_STORE_ATTR}): give one of them")
    store = inline if inline is not None else load_store_named_by(module, ir_dir)
    if complete:
        check_no_dangling_weights(module, store, where)
    return store


def detect_stage(module: ModuleOp) -> str:
    """The pipeline stage (pipeline.STAGES) whose output the module is, from its ops.

    `quantized` and `sparsity` with the dense scheme are the same IR: such a module counts as
    `quantized` (running the dense sparsity stage on it changes nothing)."""
    from esact_cc.dialects.gemm_ops import LinearOp

    dialects = {op.name.split(".", 1)[0] for op in module.walk()}
    if "esact" in dialects:
        return "esact"
    if "spls" in dialects:
        return "sparsity"
    if any(isinstance(op, LinearOp) and op.weight_scale is not None for op in module.walk()):
        return "quantized"
    return "transformer" if "transformer" in dialects else "onnx"
