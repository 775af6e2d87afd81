"""External data of an ONNX model, confined to the model's directory and brought into memory.

A tensor may keep its bytes in a file beside the model (`data_location = EXTERNAL`, key
`location`). Any tensor can: graph initializers, Constant-node attributes, sparse tensors,
tensors inside local functions and subgraphs. `inline_external_data` finds every one
(`model_tensors`), and reads its bytes only from inside the model's directory:

- the location is relative, has no `..` component, and, with symlinks resolved, still lies
  inside the directory (never the current directory, which is no part of the model);
- the file is regular, the byte range lies inside it, all files of a model together stay under
  `onnx_limits.EXTERNAL_DATA_CAP`, and the bytes match the tensor's declared size;
- a model given in memory (a ModelProto, no directory) with external data is refused.

Afterwards the model has no external references: top-level initializers become numpy arrays
(returned, removed from the proto), every other tensor gets its bytes as `raw_data`.
"""

from __future__ import annotations

import math
import ntpath
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from esact_cc.frontend.onnx_core import (
    AttributeProto,
    GraphProto,
    ModelProto,
    NodeProto,
    TensorProto,
)
from esact_cc.frontend.onnx_limits import EXTERNAL_DATA_CAP
from esact_cc.frontend.stable_file_read import read_stable
from esact_cc.runtime.errors import CompileError
from esact_cc.tensor_types import ELEMENT_TYPES, RAW_DATA_DTYPES

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def _node_tensors(node: NodeProto, where: str) -> Iterator[tuple[TensorProto, str]]:
    label = f"{where}node '{node.name or node.op_type}'"
    for attr in node.attribute:
        at = f"{label} attribute '{attr.name}'"
        if attr.type == AttributeProto.TENSOR:
            yield attr.t, at
        for tensor in attr.tensors:
            yield tensor, at
        sparse = [attr.sparse_tensor] if attr.type == AttributeProto.SPARSE_TENSOR else []
        for tensor in [*sparse, *attr.sparse_tensors]:
            yield tensor.values, at
            yield tensor.indices, at
        graphs = [attr.g] if attr.type == AttributeProto.GRAPH else []
        for graph in [*graphs, *attr.graphs]:
            yield from _graph_tensors(graph, f"{at} subgraph ")


def _graph_tensors(graph: GraphProto, where: str = "") -> Iterator[tuple[TensorProto, str]]:
    for tensor in graph.initializer:
        yield tensor, f"{where}initializer '{tensor.name}'"
    for sparse in graph.sparse_initializer:
        yield sparse.values, f"{where}sparse initializer '{sparse.values.name}'"
        yield sparse.indices, f"{where}sparse initializer '{sparse.values.name}' indices"
    for node in graph.node:
        yield from _node_tensors(node, where)


def model_tensors(model: ModelProto) -> Iterator[tuple[TensorProto, str]]:
    """Every tensor a model holds, with a label saying where it is."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node, f"function '{function.domain}.{function.name}' ")
    for info in model.training_info:
        yield from _graph_tensors(info.initialization, "training initialization ")
        yield from _graph_tensors(info.algorithm, "training algorithm ")


def _confined_path(location: str, base_dir: Path, label: str) -> Path:
    """`location` inside `base_dir`, or a one-line error naming the tensor."""
    parts = re.split(r"[\\/]", location)
    if (not location or "\0" in location or os.path.isabs(location) or ntpath.isabs(location)
            or _WINDOWS_DRIVE.match(location) or ".." in parts):
        raise CompileError(
            f"{label}: external data location '{location}' must be a relative path inside the "
            "model's directory (no absolute path, no '..')"
        )
    base = Path(os.path.realpath(base_dir))
    resolved = Path(os.path.realpath(base / location))
    if resolved == base or base not in resolved.parents:
        raise CompileError(
            f"{label}: external data location '{location}' leaves the model's directory")
    return resolved


def _external_fields(tensor: TensorProto, label: str) -> tuple[str, int, int | None]:
    fields = {entry.key: entry.value for entry in tensor.external_data}
    try:
        offset = int(fields.get("offset", "0"))
        length = int(fields["length"]) if "length" in fields else None
    except ValueError:
        raise CompileError(f"{label}: external data offset/length must be integers") from None
    return fields.get("location", ""), offset, length


def _expected_bytes(tensor: TensorProto) -> int | None:
    """Bytes the tensor's dims and element type call for, when each element has a fixed size."""
    if tensor.data_type not in _ITEM_SIZES:
        return None
    return math.prod(int(d) for d in tensor.dims) * _ITEM_SIZES[tensor.data_type]


_ITEM_SIZES = {e.onnx: e.numpy.itemsize for e in ELEMENT_TYPES}


def inline_external_data(model: ModelProto, base_dir: Path | None) -> dict[str, np.ndarray]:
    """Read every external tensor of `model` from inside `base_dir` (see the module docstring);
    returns the top-level initializers read this way as arrays and removes them from `model`."""
    top_level = len(model.graph.initializer)  # model_tensors yields them first
    budget = EXTERNAL_DATA_CAP
    arrays: dict[str, np.ndarray] = {}
    for index, (tensor, label) in enumerate(list(model_tensors(model))):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location, offset, length = _external_fields(tensor, label)
        if base_dir is None:
            raise CompileError(
                f"{label}: external data '{location}' cannot be resolved for a model given in "
                "memory; load the model from its file"
            )
        path = _confined_path(location, base_dir, label)
        data = read_stable(path, f"external data of {label}", budget, offset, length)
        budget -= len(data)
        expected = _expected_bytes(tensor)
        if expected is not None and expected != len(data):
            raise CompileError(f"{label}: its shape needs {expected} bytes, external data "
                               f"'{location}' gives {len(data)}")
        if index < top_level and tensor.data_type in RAW_DATA_DTYPES:
            dtype = RAW_DATA_DTYPES[tensor.data_type]
            arrays[tensor.name] = np.frombuffer(data, dtype).reshape(tuple(tensor.dims))
            continue
        tensor.raw_data = data
        tensor.data_location = TensorProto.DEFAULT
        del tensor.external_data[:]
    if arrays:
        kept = [t for t in model.graph.initializer if t.name not in arrays]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
    return arrays
