"""Mutations of an ONNX model for the input fuzz (bench/fuzz_inputs.py).

`mutate_model(model, rng, secret)` applies 1-3 random mutations to a copy of `model` and
returns it with one description line per mutation (the reproducer). Families:

- `attribute`: a node attribute gets an extreme value, another type, or is dropped; an
  unknown attribute is added;
- `tensor`: an initializer's dims, data type, raw bytes or typed-data field is changed;
- `dims` / `dtype`: a graph input's, output's or value info's shape or element type;
- `external`: a tensor is moved to external data, legitimately beside the model
  (`weights.bin`) or pointing outside the model's directory (the sentinel `secret` by a
  relative path, an absolute path or a symlink inside the directory, /dev/zero, a FIFO), or
  with hostile offset/length fields;
- `wiring`: node inputs/outputs renamed to other values (cycles), to missing or empty names,
  dropped, duplicated; op types and domains swapped; the opset changed.

External-data mutations write what they point at (weights.bin, the symlink, the FIFO) into
the model's directory through `ModelFiles`.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from onnx import AttributeProto, ModelProto, TensorProto, helper, numpy_helper

EXTREME_INTS = [0, -1, 1, 2, 3, -(2**31), 2**31 - 1, 2**31, 2**62, -(2**63), 2**63 - 1, 7, 1000]
EXTREME_FLOATS = [0.0, -0.0, -1.0, 1e-45, 1e38, float("inf"), float("-inf"), float("nan")]
EXTREME_DIMS = [0, 1, -1, -7, 2, 3, 1 << 20, 1 << 31, 1 << 40, (1 << 63) - 1]
DATA_TYPES = list(range(0, 26)) + [99, -1]
OP_TYPES = ["Add", "MatMul", "Reshape", "Transpose", "Softmax", "Gather", "Concat", "Slice",
            "LayerNormalization", "Gemm", "Split", "Where", "Unknown", "Loop", "If"]


@dataclass
class ModelFiles:
    """Files an external-data mutation needs beside the model (written by the case runner)."""

    data: dict[str, bytes] = field(default_factory=dict)
    """Name in the model directory -> bytes."""
    symlinks: dict[str, str] = field(default_factory=dict)
    """Name in the model directory -> link target."""
    fifos: list[str] = field(default_factory=list)

    def write(self, model_dir: Path) -> None:
        for name, payload in self.data.items():
            (model_dir / name).write_bytes(payload)
        for name, target in self.symlinks.items():
            os.symlink(target, model_dir / name)
        for name in self.fifos:
            os.mkfifo(model_dir / name)


def _all_tensors(model: ModelProto) -> list[TensorProto]:
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors += [a.t for a in node.attribute if a.type == AttributeProto.TENSOR]
    return tensors


def _value_names(model: ModelProto) -> list[str]:
    names = [i.name for i in model.graph.input] + [t.name for t in model.graph.initializer]
    for node in model.graph.node:
        names += list(node.output)
    return names


def _mutate_attribute(model: ModelProto, rng: random.Random) -> str:
    nodes = [n for n in model.graph.node if n.attribute] or list(model.graph.node)
    node = rng.choice(nodes)
    if not node.attribute or rng.random() < 0.1:
        node.attribute.append(helper.make_attribute(rng.choice(["axis", "perm", "zz"]),
                                                    rng.choice(EXTREME_INTS)))
        return f"attribute: node {node.name!r} ({node.op_type}) gets an extra attribute"
    attr = rng.choice(list(node.attribute))
    where = f"node {node.name!r} ({node.op_type}) attribute {attr.name!r}"
    choice = rng.randrange(6)
    if choice == 0:
        node.attribute.remove(attr)
        return f"attribute: {where} removed"
    if choice == 1 and attr.type == AttributeProto.INT:
        # Half the time a nearby value the ONNX checker accepts (an axis, a flag).
        # (clamped to int64: an attribute already at an extreme must not overflow the field)
        attr.i = rng.choice(EXTREME_INTS) if rng.random() < 0.5 else max(
            -2**63, min(2**63 - 1, attr.i + rng.choice([-2, -1, 1, 2])))
        return f"attribute: {where} = {attr.i}"
    if choice == 2 and attr.type == AttributeProto.FLOAT:
        attr.f = rng.choice(EXTREME_FLOATS)
        return f"attribute: {where} = {attr.f}"
    if choice == 3 and attr.type == AttributeProto.INTS:
        values = [rng.choice(EXTREME_INTS) for _ in range(rng.randrange(0, 6))]
        if attr.ints and rng.random() < 0.5:  # a permutation of the same values (perm)
            values = list(attr.ints)
            rng.shuffle(values)
        del attr.ints[:]
        attr.ints.extend(values)
        return f"attribute: {where} = {values}"
    if choice == 4 and attr.type == AttributeProto.TENSOR:
        return "attribute: " + _mutate_tensor_fields(attr.t, rng, where)
    new_type = rng.choice([AttributeProto.INT, AttributeProto.FLOAT, AttributeProto.STRING,
                           AttributeProto.INTS, AttributeProto.GRAPH, AttributeProto.TENSORS])
    attr.type = new_type
    return f"attribute: {where} type set to {new_type}"


def _mutate_small_int_tensor(tensor: TensorProto, rng: random.Random, where: str) -> str:
    """One element of a shape vector, axes list or index tensor gets another small value:
    the model still passes the ONNX checker, the shapes it implies change."""
    values = numpy_helper.to_array(tensor).copy()
    flat = values.reshape(-1)
    at = rng.randrange(flat.size)
    value = rng.choice([-2, -1, 0, 1, 2, 3, 7, 16, 1 << 40])
    flat[at] = value if value <= np.iinfo(flat.dtype).max else -1
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    return f"{where}: element {at} = {flat[at]}"


def _mutate_tensor_fields(tensor: TensorProto, rng: random.Random, where: str) -> str:
    small_int = (tensor.data_type in (TensorProto.INT64, TensorProto.INT32)
                 and not tensor.external_data and 0 < _element_count(tensor) <= 16)
    if small_int and rng.random() < 0.5:
        try:
            return _mutate_small_int_tensor(tensor, rng, where)
        except ValueError:  # an earlier mutation already broke its data: change fields
            pass
    choice = rng.randrange(6)
    if choice == 0 and tensor.dims:
        index = rng.randrange(len(tensor.dims))
        tensor.dims[index] = rng.choice(EXTREME_DIMS)
        return f"{where}: dims[{index}] = {tensor.dims[index]}"
    if choice == 1:
        dims = [rng.choice(EXTREME_DIMS[:6]) for _ in range(rng.randrange(0, 5))]
        del tensor.dims[:]
        tensor.dims.extend(dims)
        return f"{where}: dims = {dims}"
    if choice == 2:
        tensor.data_type = rng.choice(DATA_TYPES[:-1])
        return f"{where}: data_type = {tensor.data_type}"
    if choice == 3 and tensor.raw_data:
        cut = rng.randrange(len(tensor.raw_data) + 1)
        tensor.raw_data = tensor.raw_data[:cut] + rng.randbytes(rng.choice([0, 1, 3, 8]))
        return f"{where}: raw_data cut to {cut} bytes (+ junk)"
    if choice == 4:
        tensor.ClearField("raw_data")
        tensor.float_data.extend([rng.choice(EXTREME_FLOATS) for _ in range(rng.randrange(4))])
        tensor.int64_data.extend([rng.choice(EXTREME_INTS) for _ in range(rng.randrange(4))])
        return f"{where}: raw_data replaced by typed fields"
    tensor.segment.begin = rng.choice(EXTREME_INTS)
    tensor.segment.end = rng.choice(EXTREME_INTS)
    return f"{where}: segment = {tensor.segment.begin}..{tensor.segment.end}"


def _element_count(tensor: TensorProto) -> int:
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count


def _mutate_tensor(model: ModelProto, rng: random.Random) -> str:
    tensors = _all_tensors(model)
    tensor = rng.choice(tensors)
    return "tensor: " + _mutate_tensor_fields(tensor, rng, f"tensor {tensor.name!r}")


def _value_infos(model: ModelProto) -> list:
    return [*model.graph.input, *model.graph.output, *model.graph.value_info]


def _mutate_dims(model: ModelProto, rng: random.Random) -> str:
    info = rng.choice(_value_infos(model))
    dims = info.type.tensor_type.shape.dim
    if not dims or rng.random() < 0.2:
        info.type.tensor_type.shape.dim.add().dim_value = rng.choice(EXTREME_DIMS)
        return f"dims: {info.name!r} gets an extra dim"
    dim = rng.choice(list(dims))
    if rng.random() < 0.3:
        dim.dim_param = rng.choice(["N", "", "batch", "x" * 300])
        return f"dims: {info.name!r} dim -> param {dim.dim_param[:20]!r}"
    dim.dim_value = rng.choice(EXTREME_DIMS)
    return f"dims: {info.name!r} dim -> {dim.dim_value}"


def _mutate_dtype(model: ModelProto, rng: random.Random) -> str:
    info = rng.choice(_value_infos(model))
    info.type.tensor_type.elem_type = rng.choice(DATA_TYPES[:-1])
    return f"dtype: {info.name!r} elem_type = {info.type.tensor_type.elem_type}"


def _external_target(rng: random.Random, secret: Path, files: ModelFiles, payload: bytes
                     ) -> tuple[str, str]:
    """(location, what it is): where an externalized tensor's bytes are said to be."""
    choice = rng.randrange(7)
    if choice == 0:
        files.data["weights.bin"] = payload
        return "weights.bin", "beside the model"
    if choice == 1:
        return f"../{secret.name}", "the sentinel by a relative path"
    if choice == 2:
        return str(secret), "the sentinel by an absolute path"
    if choice == 3:
        files.symlinks["link.bin"] = str(secret)
        return "link.bin", "a symlink in the model directory to the sentinel"
    if choice == 4:
        return "/dev/zero", "/dev/zero"
    if choice == 5:
        if "pipe.bin" not in files.fifos:
            files.fifos.append("pipe.bin")
        return "pipe.bin", "a FIFO in the model directory"
    return "missing.bin", "a missing file"


def _mutate_external(model: ModelProto, rng: random.Random, secret: Path,
                     files: ModelFiles) -> str:
    tensors = [t for t in _all_tensors(model) if t.raw_data] or _all_tensors(model)
    tensor = rng.choice(tensors)
    payload = bytes(tensor.raw_data)
    location, what = _external_target(rng, secret, files, payload)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    entries = {"location": location, "offset": "0", "length": str(len(payload) or 64)}
    hostile = ""
    if rng.random() < 0.3:
        key = rng.choice(["offset", "length", "checksum", "location", "unknown"])
        entries[key] = rng.choice(["-1", "x", str(1 << 62), "", "1e3", "/etc/passwd", "../../"])
        hostile = f", {key}={entries[key]!r}"
    for key, value in entries.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return f"external: tensor {tensor.name!r} -> {location!r} ({what}){hostile}"


def _mutate_wiring(model: ModelProto, rng: random.Random) -> str:
    node = rng.choice(list(model.graph.node))
    where = f"node {node.name!r} ({node.op_type})"
    names = _value_names(model)
    choice = rng.randrange(7)
    if choice == 0 and node.input:
        index = rng.randrange(len(node.input))
        others = [n for n in names if n != node.input[index]]
        node.input[index] = rng.choice(others + ["", "no_such_value"])
        return f"wiring: {where} input {index} = {node.input[index]!r}"
    if choice == 1 and node.output:
        index = rng.randrange(len(node.output))
        others = [n for n in names if n != node.output[index]]
        node.output[index] = rng.choice(others + [""])
        return f"wiring: {where} output {index} = {node.output[index]!r}"
    if choice == 2 and node.input:
        node.input.pop(rng.randrange(len(node.input)))
        return f"wiring: {where} loses an input"
    if choice == 3:
        node.input.append(rng.choice(names))
        return f"wiring: {where} gets an extra input"
    if choice == 4:
        node.op_type = rng.choice(OP_TYPES)
        return f"wiring: {where} op_type = {node.op_type}"
    if choice == 5:
        node.domain = rng.choice(["com.microsoft", "ai.onnx.ml", "x"])
        return f"wiring: {where} domain = {node.domain}"
    version = rng.choice([1, 7, 11, 12, 13, 99, 0])
    if not model.opset_import:
        model.opset_import.add()
    model.opset_import[0].version = version
    return f"wiring: opset = {version}"


def mutate_model(model: ModelProto, rng: random.Random, secret: Path
                 ) -> tuple[ModelProto, ModelFiles, list[str]]:
    """A mutated copy of `model`, the files it needs beside it, and what was changed."""
    mutated = ModelProto()
    mutated.CopyFrom(model)
    files = ModelFiles()
    changes = []
    families = ["attribute", "tensor", "dims", "dtype", "external", "wiring"]
    for _ in range(rng.choice([1, 1, 2, 3])):
        family = rng.choice(families)
        if family in ("tensor", "external") and not _all_tensors(mutated):
            family = "dims"  # e.g. a host segment's model without initializers
        if family in ("attribute", "wiring") and not mutated.graph.node:
            family = "dims"
        if family in ("dims", "dtype") and not _value_infos(mutated):
            changes.append("(no value infos: nothing changed)")
            continue
        if family == "external":
            changes.append(_mutate_external(mutated, rng, secret, files))
        else:
            mutate = {"attribute": _mutate_attribute, "tensor": _mutate_tensor,
                      "dims": _mutate_dims, "dtype": _mutate_dtype,
                      "wiring": _mutate_wiring}[family]
            changes.append(mutate(mutated, rng))
    return mutated, files, changes


def secret_bytes(marker: bytes, size: int = 1 << 16) -> bytes:
    """The sentinel's content: the marker over and over, so any read of 2x its length or
    more, at any offset, carries one whole copy into whatever it feeds."""
    return (marker * (size // len(marker) + 1))[:size]

