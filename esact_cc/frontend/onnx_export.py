"""`onnx` dialect ops -> ONNX ModelProto (the way back, for host regions and round trips).

`export_ops` turns a list of `onnx.*` ops (a region: its inputs and outputs are SSA values)
into a self-contained ModelProto: `onnx.weight` handles become initializers taken from the
weight store, inline `onnx.Constant` ops become Constant nodes, every other op one node with
its ONNX attributes and its location as node name. A later pass hands host regions to
onnxruntime through this; `export_module` exports a whole `@main`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, NameLoc, TensorType
from xdsl.ir import Operation, SSAValue

from esact_cc import tensor_types
from esact_cc.dialects.onnx import OnnxOperation, WeightOp
from esact_cc.frontend import onnx_builders
from esact_cc.frontend.onnx_attributes import INTERNAL_ATTR_PREFIX, onnx_from_xdsl
from esact_cc.frontend.onnx_core import ModelProto, NodeProto, TensorProto, ValueInfoProto
from esact_cc.frontend.raw_data_splice import SPLICE_BYTES, placeholder
from esact_cc.ir_queries import io_names, main_function, op_label
from esact_cc.runtime.errors import CompileError
from esact_cc.weight_store import WeightStore

DEFAULT_OPSET = 17
PLAIN_DTYPE_KINDS = "biuf"
"""numpy dtype kinds whose ONNX tensor is the array's little-endian bytes as they are."""
OPSET_ATTR = "onnx.opset"


def _value_info(name: str, value: SSAValue) -> ValueInfoProto:
    value_type = value.type
    if not isinstance(value_type, TensorType):
        raise CompileError(f"value '{name}' of type {value_type} cannot be an ONNX tensor")
    elem = tensor_types.from_xdsl(value_type.get_element_type()).onnx
    return onnx_builders.make_tensor_value_info(name, elem, list(value_type.get_shape()))


def _ir_version(opset: int) -> int:
    # The oldest IR version that allows the opset, so older runtimes accept the model.
    return 8 if opset <= 18 else 9 if opset <= 20 else 10


def export_ops(
    ops: Sequence[Operation],
    inputs: Sequence[SSAValue],
    outputs: Sequence[SSAValue],
    store: WeightStore,
    *,
    opset: int = DEFAULT_OPSET,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    graph_name: str = "host",
    spliced: list[np.ndarray] | None = None,
) -> ModelProto:
    """A ModelProto computing `outputs` from `inputs` with `ops` (in order). Given `spliced`,
    initializers of raw_data_splice.SPLICE_BYTES or more hold a placeholder, their arrays
    appended to `spliced` for raw_data_splice.serialize_spliced."""
    names: dict[SSAValue, str] = {}
    input_names = list(input_names or [f"input{i}" for i in range(len(inputs))])
    output_names = list(output_names or [f"output{i}" for i in range(len(outputs))])
    for value, name in zip(inputs, input_names, strict=True):
        names[value] = name
    # Outputs produced inside take the output name directly; others go through Identity.
    identities: list[tuple[SSAValue, str]] = []
    for value, name in zip(outputs, output_names, strict=True):
        if value in names:
            identities.append((value, name))
        else:
            names[value] = name

    counter = 0

    def name_of(value: SSAValue) -> str:
        nonlocal counter
        if value not in names:
            names[value] = f"v{counter}"
            counter += 1
        return names[value]

    nodes: list[NodeProto] = []
    initializers: list[str] = []
    for op in ops:
        if isinstance(op, WeightOp):
            weight = op.weight_name.data
            if weight not in initializers:
                initializers.append(weight)
            if op.result in names:  # the weight is also a region output
                identities.append((op.result, names.pop(op.result)))
            names[op.result] = weight
            continue
        if not isinstance(op, OnnxOperation):
            raise CompileError(f"cannot export {op_label(op)} to ONNX: not an onnx dialect op")
        nodes.append(_node(op, name_of))
    for value, name in identities:
        nodes.append(onnx_builders.make_node("Identity", [name_of(value)], [name], name=f"{name}_identity"))
    _number_repeated_names(nodes)
    graph = onnx_builders.make_graph(
        nodes,
        graph_name,
        [_value_info(n, v) for n, v in zip(input_names, inputs, strict=True)],
        [_value_info(n, v) for n, v in zip(output_names, outputs, strict=True)],
    )
    model = onnx_builders.make_model(
        graph,
        opset_imports=[onnx_builders.make_opsetid("", opset)],
        ir_version=_ir_version(opset),
        producer_name="esact-cc",
    )
    for weight in initializers:  # after make_model, which would copy them
        _fill_initializer(model.graph.initializer.add(), store[weight], weight, spliced)
    return model


def _fill_initializer(tensor: TensorProto, array: np.ndarray, name: str,
                      spliced: list[np.ndarray] | None) -> None:
    """`onnx_builders.from_array(array, name)` written into `tensor` in place: appending a
    made tensor copies it, and BERT-base's host region holds its 94 MB embedding table (with
    `spliced`, its raw_data is a placeholder: raw_data_splice.py)."""
    if array.dtype.kind not in PLAIN_DTYPE_KINDS:  # strings, packed 4-bit types, ...
        tensor.CopyFrom(onnx_builders.from_array(array, name))
        return
    tensor.dims.extend(array.shape)
    if name:
        tensor.name = name
    if spliced is not None and array.nbytes >= SPLICE_BYTES:
        tensor.raw_data = placeholder(len(spliced))
        spliced.append(array)
    else:
        tensor.raw_data = onnx_builders.tobytes_little_endian(array)
    tensor.data_type = onnx_builders.np_dtype_to_tensor_dtype(array.dtype)


def _number_repeated_names(nodes: list[NodeProto]) -> None:
    """onnxruntime refuses two nodes of one name, and a lift that copies an op leaves copies
    with one location: the second and later get `_<n>` (the first n not taken)."""
    taken = {node.name for node in nodes}
    seen: set[str] = set()
    for node in nodes:
        if node.name and node.name in seen:
            n = 1
            while f"{node.name}_{n}" in taken:
                n += 1
            node.name = f"{node.name}_{n}"
            taken.add(node.name)
        seen.add(node.name)


def _placed(op: OnnxOperation, kind: str, names: list[str]) -> list[str]:
    """`names` at the ONNX slots the import recorded (`input_positions` / `output_positions`),
    with "" for the optional slots the node left empty."""
    positions = op.attributes.get(f"{INTERNAL_ATTR_PREFIX}{kind}_positions")
    if positions is None:
        return names
    slots = [""] * (max(positions.get_values(), default=-1) + 1)
    for position, name in zip(positions.get_values(), names, strict=True):
        slots[position] = name
    return slots


def _node(op: OnnxOperation, name_of) -> NodeProto:  # type: ignore[no-untyped-def]
    input_names = _placed(op, "input", [name_of(v) for v in op.operands])
    output_names = _placed(op, "output", [name_of(r) for r in op.results])
    location = op.location
    node = onnx_builders.make_node(
        op.op_type,
        input_names,
        output_names,
        name=location.desc.data if isinstance(location, NameLoc) else "",
    )
    for attr_name, attr in op.attributes.items():
        if not attr_name.startswith(INTERNAL_ATTR_PREFIX):
            node.attribute.append(onnx_from_xdsl(attr_name, attr))
    return node


def module_opset(module: ModuleOp) -> int:
    attr = module.attributes.get(OPSET_ATTR)
    return int(attr.value.data) if isinstance(attr, IntegerAttr) else DEFAULT_OPSET


def export_module(module: ModuleOp, store: WeightStore) -> ModelProto:
    """The whole `@main` of an `onnx`-dialect module as an ONNX model."""
    function = main_function(module)
    block = function.body.block
    ops = list(block.ops)
    terminator = ops.pop()
    return export_ops(
        ops,
        list(block.args),
        list(terminator.operands),
        store,
        opset=module_opset(module),
        input_names=io_names(function, results=False),
        output_names=io_names(function, results=True),
        graph_name="main",
    )
