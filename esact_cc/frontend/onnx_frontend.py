"""ONNX frontend: an ONNX model (file or ModelProto) -> `onnx` dialect module + weight store.

Steps, each a function below:
1. `load_model`: read the file (one-line error if it is not a readable ONNX model) with its
   weights as zero-copy views of its bytes (`onnx_file_reader`; external data only from the
   model's directory, `onnx_external_data`), validate it (`onnx_validation`: opset, size after
   inlining, structure, onnx's full check), inline local functions.
2. `check_supported`: every node must be an op of the `onnx` dialect (the ops with numpy
   semantics, and every other default-domain op onnxruntime runs on the host: ConvTranspose,
   Resize, ...; `dialects/onnx_host_op_types.py`); one error lists them all. After shape
   inference, `check_host_only_nodes` asks onnxruntime whether it accepts each host-only node.
3. Initializers and Constant nodes become numpy constants (`numpy_helper.to_array` once per
   tensor; the proto's copy is dropped when we own the proto, so weights exist once).
4. `fix_input_shapes`: graph inputs get static shapes from `input_shapes`; a dim that stays
   unknown is an error naming the input and the dim.
5. Shape inference and folding alternate until nothing folds: a node whose inputs are all
   constants, or a Shape/Size of a statically shaped value, is evaluated with the interpreter's
   numpy kernels (`interpret_onnx_ops`), so shape-only subgraphs disappear. A result is sized
   before it is evaluated (`folded_result_size`); one beyond `FOLD_MAX_ELEMENTS` stays a node.
   A last strict inference reports a declared shape that disagrees with the computed one.
6. `_ModuleBuilder`: one `onnx.<OpType>` op per remaining node inside `func.func @main`, with
   `loc("<node name>")`. Constants of at most `INLINE_CONSTANT_MAX_ELEMENTS` elements (shape
   vectors, axes, scalars) become inline `onnx.Constant` ops; bigger ones, and every float
   initializer of more than one element (a model parameter), go to the weight store behind
   `onnx.weight` handles, placed just before their first use.

Every dim and element count is checked against `onnx_limits` (inputs, `--input-shape`,
constants, folded and inferred shapes) before anything of that size exists.

The function's arguments and results carry their ONNX names (`{onnx.name = "input_ids"}`),
and the module records the default-domain opset (`onnx.opset`), which the exporter reuses.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DictionaryAttr,
    IntegerAttr,
    ModuleOp,
    NameLoc,
    NoneAttr,
    StringAttr,
    TensorType,
    i64,
)
from xdsl.ir import Block, Operation, Region, SSAValue

from esact_cc import tensor_types
from esact_cc.dialects.onnx import HOST_ONLY_OP_TYPES, OP_CLASSES, WeightOp
from esact_cc.dialects.onnx_host_op_types import not_on_host
from esact_cc.frontend import onnx_builders, onnx_core
from esact_cc.frontend.folded_result_size import result_elements
from esact_cc.frontend.onnx_attributes import python_from_onnx, xdsl_from_python
from esact_cc.frontend.onnx_core import (
    ModelProto,
    NodeProto,
    TensorProto,
    TypeProto,
    ValueInfoProto,
)
from esact_cc.frontend.onnx_external_data import inline_external_data
from esact_cc.frontend.onnx_file_reader import read_model
from esact_cc.frontend.onnx_limits import (
    FOLD_MAX_ELEMENTS,
    MAX_DIM,
    check_shape,
    count_text,
    shape_text,
)
from esact_cc.frontend.onnx_validation import (
    DEFAULT_DOMAINS,
    SHAPE_INFERENCE_INITIALIZER_MAX_ELEMENTS,
    default_opset,
    first_inference_error,
    node_label,
    one_line,
    run_checker,
    validate_before_inlining,
)
from esact_cc.interpreter.interpret_onnx_ops import ONNX_KERNELS, constant_value, run_kernel
from esact_cc.interpreter.onnxruntime_kernel import check_runs_on_onnxruntime
from esact_cc.runtime.errors import CompileError
from esact_cc.weight_store import WeightStore

INLINE_CONSTANT_MAX_ELEMENTS = 16
"""Constants up to this many elements are inline `onnx.Constant` ops; larger go to the store.
Float initializers with more than one element are model parameters: always in the store."""
NAME_ATTR = "onnx.name"
OPSET_ATTR = "onnx.opset"
INPUT_POSITIONS_ATTR = "onnx_input_positions"
OUTPUT_POSITIONS_ATTR = "onnx_output_positions"
_SSA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Ops evaluated from the input's static type even though their input is not a constant.
_SHAPE_OF_OPS = ("Shape", "Size")


@dataclass
class _ValueType:
    elem_type: int
    shape: tuple[int, ...] | None
    """None, or a tuple with -1 for a dim shape inference left unknown."""

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(d >= 0 for d in self.shape)


@dataclass
class _Graph:
    """The part of the ONNX graph still to import, plus everything known about it."""

    opset: int
    ir_version: int
    inputs: list[ValueInfoProto]
    outputs: list[ValueInfoProto]
    nodes: list[NodeProto]
    constants: dict[str, np.ndarray]
    constant_origin: dict[str, str] = field(default_factory=dict)
    """Constant value name -> name of the node (or initializer) it came from (its location)."""
    types: dict[str, _ValueType] = field(default_factory=dict)
    parameter_names: set[str] = field(default_factory=set)
    """Initializers and constants folded from them: model parameters, never inline literals."""
    unfolded: dict[str, str] = field(default_factory=dict)
    """Value -> why its node was not folded although its inputs are constants."""


def load_model(
    model: str | os.PathLike[str] | ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> tuple[ModelProto, bool, dict[str, np.ndarray]]:
    """The validated ModelProto for a path or proto, whether we own it (may clear its tensors),
    and the initializers already read as arrays (zero-copy views of the file's bytes, see
    `onnx_file_reader`). `input_shapes` size inputs the model leaves without a shape."""
    arrays: dict[str, np.ndarray] = {}
    if isinstance(model, ModelProto):
        proto, owned = model, False
        inline_external_data(proto, None)  # refuses external data: no directory to confine it to
    else:
        path = Path(model)
        if not path.exists():
            raise CompileError(f"cannot read ONNX model '{path}': no such file")
        proto, arrays = read_model(path)
        owned = True
        if not proto.HasField("graph") or not proto.graph.output:
            raise CompileError(f"cannot read ONNX model '{path}': not an ONNX model (no graph outputs)")
    if not proto.HasField("graph") or not proto.graph.output:
        raise CompileError("ONNX model has no graph outputs")
    validate_before_inlining(proto, arrays)
    if len(proto.functions):
        try:
            proto = onnx_core.inline_local_functions(proto)
        except Exception as e:
            raise CompileError(
                f"cannot inline the model's local functions: {one_line(e)}") from None
        owned = True
    check_supported(proto.graph.node, default_opset(proto))
    run_checker(proto, arrays, input_shapes or {})
    return proto, owned, arrays


def _unsupported_text(node: NodeProto, index: int) -> str | None:
    """How the error names a node the `onnx` dialect cannot hold (None: it can)."""
    domain = node.domain + "." if node.domain not in DEFAULT_DOMAINS else ""
    text = f"{node_label(node, index)} ({domain}{node.op_type})"
    if domain or node.op_type not in OP_CLASSES:
        reasons = {} if domain else not_on_host()  # only here: it imports the onnx package
        return text if node.op_type not in reasons else f"{text}: {reasons[node.op_type]}"
    return None


def check_supported(nodes: Sequence[NodeProto], opset: int) -> None:
    """Raise one error listing every node the `onnx` dialect cannot hold."""
    bad = [text for i, node in enumerate(nodes) if (text := _unsupported_text(node, i))]
    if bad:
        raise CompileError(f"unsupported ONNX ops ({len(bad)} nodes): {'; '.join(bad)}")
    if opset < 13:
        for i, node in enumerate(nodes):
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if node.op_type == "Softmax" and axis != -1:
                # Before opset 13 Softmax flattens to 2-D around `axis`; only -1 means the same.
                raise CompileError(
                    f"node '{node_label(node, i)}': Softmax with axis={axis} at opset {opset} "
                    "(pre-13 2-D semantics) is not supported; re-export with opset >= 13"
                )


def _value_type(info: ValueInfoProto) -> _ValueType | None:
    if not info.type.HasField("tensor_type"):
        return None
    tensor = info.type.tensor_type
    if not tensor.HasField("shape"):
        return _ValueType(tensor.elem_type, None)
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
    return _ValueType(tensor.elem_type, dims)


def fix_input_shapes(
    inputs: Sequence[ValueInfoProto], input_shapes: Mapping[str, Sequence[int]]
) -> list[ValueInfoProto]:
    """Graph inputs with every dim static, taken from the model or from `input_shapes`."""
    names = [i.name for i in inputs]
    for name in input_shapes:
        if name not in names:
            raise CompileError(
                f"--input-shape names '{name}', which is not a model input (inputs: {', '.join(names)})"
            )
    fixed: list[ValueInfoProto] = []
    for info in inputs:
        value_type = _value_type(info)
        if value_type is None:
            raise CompileError(f"input '{info.name}' is not a tensor")
        dims = info.type.tensor_type.shape.dim
        given = input_shapes.get(info.name)
        if given is not None:
            given = tuple(int(d) for d in given)
            if value_type.shape is not None and len(given) != len(value_type.shape):
                raise CompileError(
                    f"input '{info.name}' has rank {len(value_type.shape)} but --input-shape gives "
                    f"{len(given)} dims ({'x'.join(map(str, given))})"
                )
            for axis, size in enumerate(given):
                if size <= 0:
                    raise CompileError(f"input '{info.name}' dim {axis}: size must be positive, got {size}")
                if value_type.shape is not None and value_type.shape[axis] not in (-1, 0, size):
                    raise CompileError(
                        f"input '{info.name}' dim {axis} is {value_type.shape[axis]} in the model, "
                        f"but --input-shape gives {size}"
                    )
            check_shape(given, f"input '{info.name}' (--input-shape)")
            shape = given
        else:
            if value_type.shape is None:
                raise CompileError(
                    f"input '{info.name}' has no shape: give it with --input-shape {info.name}=..."
                )
            for axis, size in enumerate(value_type.shape):
                if size <= 0:
                    symbol = dims[axis].dim_param if axis < len(dims) and dims[axis].dim_param else "?"
                    raise CompileError(
                        f"input '{info.name}' dim {axis} ('{symbol}') is dynamic: give its size with "
                        f"--input-shape {info.name}=" + "x".join(
                            "N" if d <= 0 else str(d) for d in value_type.shape)
                    )
            check_shape(value_type.shape, f"input '{info.name}'")
            shape = value_type.shape
        fixed.append(onnx_builders.make_tensor_value_info(info.name, value_type.elem_type, shape))
    return fixed


def _infer_types(graph: _Graph, strict: bool = False) -> None:
    """Run ONNX shape inference on the graph's remaining nodes (weights passed by type only);
    `strict`: a node whose inferred type disagrees with a declared one is an error."""
    small: list[TensorProto] = []
    typed: list[ValueInfoProto] = []
    for name, value in graph.constants.items():
        if value.size <= SHAPE_INFERENCE_INITIALIZER_MAX_ELEMENTS:
            small.append(onnx_builders.from_array(value, name))
        else:
            typed.append(onnx_builders.make_tensor_value_info(
                name, tensor_types.from_numpy(value.dtype).onnx, value.shape))
    skeleton = onnx_builders.make_model(
        onnx_builders.make_graph(graph.nodes, "skeleton", graph.inputs + typed, graph.outputs, small),
        opset_imports=[onnx_builders.make_opsetid("", graph.opset)],
        ir_version=graph.ir_version,
    )
    try:
        inferred = onnx_core.infer_shapes(
            skeleton, check_type=strict, strict_mode=strict, data_prop=True)
    except Exception as e:
        raise CompileError(f"ONNX shape inference failed: {first_inference_error(e)}") from None
    types: dict[str, _ValueType] = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.output) + list(graph.inputs):
        value_type = _value_type(info)
        if value_type is not None and value_type.elem_type:
            known = types.get(info.name)
            if known is None or not known.is_static:
                types[info.name] = value_type
    for name, value in graph.constants.items():
        types[name] = _ValueType(tensor_types.from_numpy(value.dtype).onnx, tuple(value.shape))
    graph.types = types


def _fold(graph: _Graph) -> bool:
    """Evaluate every node computable at compile time; True if any node was folded."""
    kept: list[NodeProto] = []
    folded_any = False
    for node in graph.nodes:
        outputs = _try_fold(node, graph)
        if outputs is None:
            kept.append(node)
            continue
        folded_any = True
        from_parameters = any(name in graph.parameter_names for name in node.input)
        for name, value in zip(node.output, outputs, strict=False):
            if name and from_parameters:
                graph.parameter_names.add(name)
            if name:
                graph.constants[name] = value
                graph.constant_origin[name] = node.name or name
                graph.types[name] = _ValueType(tensor_types.from_numpy(value.dtype).onnx, tuple(value.shape))
    graph.nodes = kept
    return folded_any


def _try_fold(node: NodeProto, graph: _Graph) -> list[np.ndarray] | None:
    present = [name for name in node.input if name]
    attrs = {a.name: python_from_onnx(a, node.name) for a in node.attribute}
    if node.op_type in _SHAPE_OF_OPS and present and present[0] not in graph.constants:
        return _fold_shape_of(node, graph.types.get(present[0]), attrs)
    if not all(name in graph.constants for name in present) or node.op_type not in ONNX_KERNELS:
        return None  # host-only ops stay nodes: onnxruntime runs them, never the folder
    inputs = [graph.constants[name] if name else None for name in node.input]
    if _too_big_to_fold(node, inputs, attrs, graph):
        return None
    try:
        outputs = [np.asarray(o) for o in run_kernel(node.op_type, inputs, attrs, len(node.output))]
    except CompileError:
        raise
    except Exception as e:
        raise CompileError(f"node '{node.name}' ({node.op_type}): cannot fold constant: "
                           f"{one_line(e)}") from None
    for name, output in zip(node.output, outputs, strict=False):
        check_shape(output.shape, f"node '{node.name}' ({node.op_type}) output '{name}'")
    return outputs


def _fold_shape_of(node: NodeProto, value_type: _ValueType | None,
                   attrs: dict[str, object]) -> list[np.ndarray] | None:
    """Shape/Size of a statically shaped value, from a zero-strided probe of that shape."""
    if value_type is None or not value_type.is_static:
        return None
    assert value_type.shape is not None
    probe = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), value_type.shape,
                                           [0] * len(value_type.shape))
    return run_kernel(node.op_type, [probe], attrs, len(node.output))


def _too_big_to_fold(node: NodeProto, inputs: list[np.ndarray | None], attrs: dict[str, object],
                     graph: _Graph) -> bool:
    """Whether a result of the node is larger than `FOLD_MAX_ELEMENTS`, by its inferred type or,
    before evaluating anything, by `result_elements`; the latter is recorded in `graph.unfolded`."""
    for name in node.output:
        value_type = graph.types.get(name)
        if value_type is not None and value_type.is_static:
            assert value_type.shape is not None
            if math.prod(value_type.shape) > FOLD_MAX_ELEMENTS:
                return True
    size = result_elements(node.op_type, inputs, attrs)
    if size <= FOLD_MAX_ELEMENTS:
        return False
    size_text = ("an unknown number of" if size == math.inf
                 else f"up to {size}" if size < 1 << 64 else count_text(size))
    for name in filter(None, node.output):
        graph.unfolded[name] = (
            f"its node '{node.name}' ({node.op_type}) would compute {size_text} elements from "
            f"constants, beyond the folding limit of {FOLD_MAX_ELEMENTS}")
    return True


def _check_constant_outputs(graph: _Graph) -> None:
    """A graph output folded to a constant must have its declared type and dims (strict shape
    inference checks the outputs nodes still compute, but sees a constant only as a value)."""
    for info in graph.outputs:
        value, declared = graph.constants.get(info.name), _value_type(info)
        if value is None or declared is None:
            continue
        same_dims = declared.shape is None or (len(declared.shape) == value.ndim and all(
            d < 0 or d == c for d, c in zip(declared.shape, value.shape, strict=True)))
        same_type = (not declared.elem_type
                     or tensor_types.from_onnx(declared.elem_type).numpy == value.dtype)
        if not (same_dims and same_type):
            node = graph.constant_origin.get(info.name, info.name)
            declared_dims = shape_text(["?" if d < 0 else d for d in declared.shape or ()])
            declared_type = TensorProto.DataType.Name(declared.elem_type)
            computed_type = TensorProto.DataType.Name(tensor_types.from_numpy(value.dtype).onnx)
            raise CompileError(
                f"graph output '{info.name}' (node '{node}') is declared "
                f"{declared_dims or 'scalar'} {declared_type} but computes "
                f"{shape_text(value.shape) or 'scalar'} {computed_type}"
            )


def _collect_constants(
    proto: ModelProto, owned: bool, arrays: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, str], list[NodeProto]]:
    """Initializers (`arrays` plus those still in the proto) and Constant-node values as numpy
    arrays; the nodes that are not Constants."""
    constants: dict[str, np.ndarray] = dict(arrays)
    origin: dict[str, str] = {name: name for name in arrays}
    for init in proto.graph.initializer:
        check_shape(init.dims, f"initializer '{init.name}'")
        try:
            constants[init.name] = onnx_builders.to_array(init)
        except Exception as e:
            raise CompileError(f"initializer '{init.name}' is malformed: {one_line(e)}") from None
        origin[init.name] = init.name
        if owned:
            init.ClearField("raw_data")  # the numpy array is now the only copy
    nodes: list[NodeProto] = []
    for index, node in enumerate(proto.graph.node):
        if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS:
            label = node_label(node, index)
            attrs = {a.name: python_from_onnx(a, label) for a in node.attribute}
            try:
                constants[node.output[0]] = constant_value(attrs)
            except CompileError as e:
                raise CompileError(f"node '{label}': {e}") from None
            check_shape(constants[node.output[0]].shape, f"node '{label}' (Constant)")
            origin[node.output[0]] = label
        else:
            nodes.append(node)
    return constants, origin, nodes


def import_onnx(
    model: str | os.PathLike[str] | ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    store: WeightStore | None = None,
) -> tuple[ModuleOp, WeightStore]:
    """Import an ONNX model into the `onnx` dialect; the returned store holds its weights."""
    proto, owned, arrays = load_model(model, input_shapes)
    opset = default_opset(proto)
    # Name every node once, so locations and errors agree.
    for index, node in enumerate(proto.graph.node):
        if not node.name:
            node.name = node_label(node, index)
    constants, origin, nodes = _collect_constants(proto, owned, arrays)
    real_inputs = [i for i in proto.graph.input if i.name not in constants]
    graph = _Graph(
        opset=opset,
        ir_version=proto.ir_version or onnx_core.IR_VERSION,
        inputs=fix_input_shapes(real_inputs, input_shapes or {}),
        outputs=list(proto.graph.output),
        nodes=nodes,
        constants=constants,
        constant_origin=origin,
        parameter_names={i.name for i in proto.graph.initializer} | set(arrays),
    )
    _infer_types(graph)
    while _fold(graph):
        _check_constant_outputs(graph)
        _infer_types(graph)
    _infer_types(graph, strict=True)
    check_host_only_nodes(graph)
    store = store if store is not None else WeightStore()
    module = _ModuleBuilder(graph, store).build()
    return module, store


def check_host_only_nodes(graph: _Graph) -> None:
    """Every host-only node (no numpy kernel: onnxruntime runs it) must be one onnxruntime
    accepts with its attributes and input types; one error lists those it refuses."""
    refused: list[str] = []
    for node in graph.nodes:
        if node.op_type not in HOST_ONLY_OP_TYPES:
            continue
        input_types: list[TypeProto | None] = []
        for name in node.input:
            value_type = graph.types.get(name) if name else None
            if not name or value_type is None:
                input_types.append(None if not name else TypeProto())
                continue
            input_types.append(onnx_builders.make_tensor_type_proto(
                value_type.elem_type, None if value_type.shape is None else
                [d if d >= 0 else None for d in value_type.shape]))
        attrs = {a.name: python_from_onnx(a, node.name) for a in node.attribute}
        error = check_runs_on_onnxruntime(node.op_type, input_types, attrs, len(node.output),
                                          graph.opset)
        if error is not None:
            refused.append(f"{node.name} ({node.op_type}): onnxruntime cannot run it: {error}")
    if refused:
        raise CompileError(f"unsupported ONNX ops ({len(refused)} nodes): {'; '.join(refused)}")


class _ModuleBuilder:
    """Emits the `onnx` dialect module for a folded, fully typed graph."""

    def __init__(self, graph: _Graph, store: WeightStore):
        self.graph = graph
        self.store = store
        self.values: dict[str, SSAValue] = {}
        self.block = Block()

    def tensor_type(self, name: str, user: str) -> TensorType:
        value_type = self.graph.types.get(name)
        if value_type is None or not value_type.is_static:
            if name in self.graph.unfolded:
                raise CompileError(f"cannot size value '{name}': {self.graph.unfolded[name]}, "
                                   "and shape inference cannot size it")
            raise CompileError(
                f"cannot infer a static shape for value '{name}' (used by '{user}'); "
                "fix the dynamic input dims with --input-shape NAME=DIMS"
            )
        assert value_type.shape is not None
        check_shape(value_type.shape, f"value '{name}' (of '{user}')")
        return TensorType(tensor_types.from_onnx(value_type.elem_type).xdsl, value_type.shape)

    def build(self) -> ModuleOp:
        graph = self.graph
        arg_types = [self.tensor_type(i.name, "the graph inputs") for i in graph.inputs]
        for info, arg_type in zip(graph.inputs, arg_types, strict=True):
            arg = self.block.insert_arg(arg_type, len(self.block.args))
            arg.location = NameLoc(StringAttr(info.name), NoneAttr())
            if _SSA_NAME.fullmatch(info.name):
                arg.name_hint = info.name
            self.values[info.name] = arg
        for node in graph.nodes:
            self.emit_node(node)
        results = [self.value(o.name, "the graph outputs") for o in graph.outputs]
        self.block.add_op(func.ReturnOp(*results))
        main = func.FuncOp(
            "main",
            (arg_types, [r.type for r in results]),
            Region(self.block),
            arg_attrs=_name_attrs(i.name for i in graph.inputs),
            res_attrs=_name_attrs(o.name for o in graph.outputs),
        )
        module = ModuleOp([main])
        module.attributes[OPSET_ATTR] = IntegerAttr(graph.opset, i64)
        return module

    def value(self, name: str, user: str) -> SSAValue:
        if name in self.values:
            return self.values[name]
        if name in self.graph.constants:
            return self.emit_constant(name)
        raise CompileError(f"value '{name}' used by '{user}' is produced by no node, input or initializer")

    def emit_constant(self, name: str) -> SSAValue:
        array = self.graph.constants[name]
        location = NameLoc(StringAttr(self.graph.constant_origin.get(name, name)), NoneAttr())
        op: Operation
        is_parameter = name in self.graph.parameter_names and array.size > 1 and array.dtype.kind == "f"
        if array.size <= INLINE_CONSTANT_MAX_ELEMENTS and not is_parameter:
            op = OP_CLASSES["Constant"](
                operands=[[]],
                result_types=[[tensor_types.tensor_type_of(array)]],
                attributes={"value": tensor_types.dense_attr_from_numpy(array)},
            )
        else:
            weight_name = self.store.unique_name(name)
            self.store.add(weight_name, array)
            op = WeightOp(weight_name, tensor_types.tensor_type_of(array))
        op.location = location
        self.block.add_op(op)
        self.values[name] = op.results[0]
        return op.results[0]

    def emit_node(self, node: NodeProto) -> None:
        positions = [i for i, name in enumerate(node.input) if name]
        operands = [self.value(node.input[i], node.name) for i in positions]
        out_positions = [i for i, name in enumerate(node.output) if name]
        result_types = [self.tensor_type(node.output[i], node.name) for i in out_positions]
        attributes = {a.name: xdsl_from_python(python_from_onnx(a, node.name)) for a in node.attribute}
        if positions != list(range(len(positions))):
            attributes[INPUT_POSITIONS_ATTR] = DenseArrayBase.from_list(i64, positions)
        if out_positions != list(range(len(out_positions))):
            attributes[OUTPUT_POSITIONS_ATTR] = DenseArrayBase.from_list(i64, out_positions)
        op = OP_CLASSES[node.op_type](
            operands=[operands], result_types=[result_types], attributes=attributes
        )
        op.location = NameLoc(StringAttr(node.name), NoneAttr())
        self.block.add_op(op)
        for position, result in zip(out_positions, op.results, strict=True):
            self.values[node.output[position]] = result


def _name_attrs(names: Sequence[str] | object) -> ArrayAttr[DictionaryAttr]:
    return ArrayAttr([DictionaryAttr({NAME_ATTR: StringAttr(n)}) for n in names])  # type: ignore[union-attr]


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """`NAME=1x128` -> ("NAME", (1, 128)); one-line error otherwise."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.split("x")) if sep and name else None
    except ValueError:
        shape = None
    if not shape or any(d <= 0 for d in shape):
        raise CompileError(f"bad --input-shape '{text}': expected NAME=DxDx... with positive sizes, e.g. input_ids=1x128")
    if max(shape) > MAX_DIM:
        raise CompileError(f"bad --input-shape '{text}': a dim is beyond the limit of {MAX_DIM}")
    return name, shape
