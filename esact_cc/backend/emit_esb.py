"""esact-dialect module + weight store -> runtime `Program` -> `.esb` bytes.

The module is what `lower-to-esact` + `schedule` produce: declarations (`esact.data`,
`esact.io`, `esact.host_segment`, `esact.host_tensor`) and instruction ops in program order.
Everything is taken in IR order and serialized by `runtime.esb` (sorted-key JSON, fixed
layout), so the same module gives byte-identical files. The debug map gets, per instruction,
its location (the ONNX node), its `layer` (-1 outside layers) and its `component`.
Serializing validates the program (`runtime.esb.validate_program`), which refuses a host
segment whose ONNX model refers to external data: a binary never depends on another file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp, NameLoc, StringAttr, TensorType

from esact_cc import tensor_types
from esact_cc.collector_pause import collector_paused
from esact_cc.dialects import esact
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.esb import (
    DataSegment,
    DebugEntry,
    HostSegment,
    IODescriptor,
    Program,
    TensorDesc,
    serialize_esb,
    write_esb,
)
from esact_cc.runtime.isa import Instruction
from esact_cc.weight_store import WeightStore

CONFIG_HASH_ATTR = "esact.config_hash"


def _dtype_name(typ: TensorType) -> str:
    return tensor_types.numpy_dtype_of(typ).name


def _desc(name: str, address: int, typ: TensorType) -> TensorDesc:
    return TensorDesc(name, tuple(typ.get_shape()), _dtype_name(typ), address)


def _bytes(array: np.ndarray) -> memoryview:
    """The array's little-endian bytes: a view when they are in memory as they are (the
    weights and host models of a BERT-base binary are 200 MB, each copy 0.1 s)."""
    array = np.asarray(array)
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return memoryview(array.reshape(-1).view(np.uint8))


def _host_model_bytes(array: np.ndarray) -> bytes:
    """A host segment's ONNX bytes: the serialized model the lowering stored, not a copy, if
    the store's array is a view of it (the host-model check wants bytes)."""
    if isinstance(array.base, bytes) and array.dtype == np.uint8 and array.ndim == 1 \
            and len(array.base) == array.size:
        return array.base
    return bytes(_bytes(array))


def program_from_module(module: ModuleOp, store: WeightStore) -> Program:
    """The runtime Program an esact-dialect module describes."""
    config_hash = module.attributes.get(CONFIG_HASH_ATTR)
    if not isinstance(config_hash, StringAttr):
        raise CompileError(f"esact module has no '{CONFIG_HASH_ATTR}' attribute (run lower-to-esact)")
    instructions = []
    debug: dict[int, DebugEntry] = {}
    io: list[IODescriptor] = []
    data: list[DataSegment] = []
    segments: dict[int, str] = {}
    bindings: dict[int, tuple[list[TensorDesc], list[TensorDesc]]] = {}
    # Equal instructions share one (immutable) Instruction, as decode_program's do: about half
    # of a BERT-base program repeats an earlier one, and serialization validates and encodes
    # each shared Instruction once.
    shared: dict[tuple[str, tuple[int, ...]], Instruction] = {}
    for op in module.body.block.ops:
        if isinstance(op, esact.InstructionOp):
            index = len(instructions)
            instr = op.to_instruction()
            instructions.append(shared.setdefault((instr.opcode_name, tuple(instr.fields.values())),
                                                  instr))
            if op.component is not None:
                loc = op.location
                node = loc.desc.data if isinstance(loc, NameLoc) else ""
                layer = op.layer.value.data if op.layer is not None else -1
                debug[index] = DebugEntry(node, layer, op.component.data)
        elif isinstance(op, esact.DataOp):
            data.append(DataSegment(op.weight.data, op.address.value.data, _bytes(store[op.weight.data])))
        elif isinstance(op, esact.IoOp):
            typ = op.tensor_type
            assert isinstance(typ, TensorType)
            d = _desc(op.tensor_name.data, op.address.value.data, typ)
            io.append(IODescriptor(d.name, d.shape, d.dtype, d.address, op.kind.data))
        elif isinstance(op, esact.HostSegmentOp):
            segments[op.segment.value.data] = op.onnx.data
        elif isinstance(op, esact.HostTensorOp):
            typ = op.tensor_type
            assert isinstance(typ, TensorType)
            ins, outs = bindings.setdefault(op.segment.value.data, ([], []))
            (ins if op.kind.data == "input" else outs).append(
                _desc(op.tensor_name.data, op.address.value.data, typ)
            )
    if sorted(segments) != list(range(len(segments))):
        raise CompileError(f"host segments must be numbered 0..{len(segments) - 1}, got {sorted(segments)}")
    hosts = []
    for k in range(len(segments)):
        ins, outs = bindings.get(k, ([], []))
        hosts.append(HostSegment(_host_model_bytes(store[segments[k]]), tuple(ins), tuple(outs)))
    return Program(instructions, config_hash.data, io, data, hosts, debug)


def esb_bytes(module: ModuleOp, store: WeightStore) -> bytes:
    return serialize_esb(program_from_module(module, store))


@collector_paused()  # esact_cc/collector_pause.py: full collections walk the whole IR
def emit_esb(module: ModuleOp, path: str | Path, store: WeightStore) -> Program:
    """Write the module's program to `path` atomically; returns the Program."""
    program = program_from_module(module, store)
    write_esb(program, path)
    return program
