"""Whether an ONNX model is valid and small enough to import, decided before importing it.

`validate_before_inlining` runs checks 1-3, cheap and bounded, so a hostile model is refused
before anything expensive runs on it; the frontend then inlines local functions, refuses
ops it does not support (one error listing them all), and runs check 4 on the flat graph:
1. `check_opset`: the default-domain opset lies in the range the kernels implement
   (`onnx_limits.MIN_OPSET`..`MAX_OPSET`).
2. `check_inlined_size`: the graph's node count with every local function call expanded,
   computed on the call tree (memoised per function), so functions that call each other twice
   per level are refused without being expanded; a function that calls itself is refused too.
3. `check_graph_structure`: every value is written by one node at most, every node input and
   graph output is defined, and the graph has no cycle (the error names the nodes on it); then
   no attribute lies outside the domain onnx can check without crashing
   (`runtime/onnx_attribute_domains.py`).
4. `run_checker`: onnx's full check (`onnx.checker.check_model(full_check=True)`: structure,
   attribute and tensor well-formedness, then strict type and shape inference, which names
   the node whose input types disagree or whose declared output shape differs from the
   inferred one). External data is already inlined from inside the model's directory
   (`onnx_external_data`), so the checker never opens a file.
Every failure is one `CompileError` line naming the node, value or function.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from esact_cc import tensor_types
from esact_cc.frontend import onnx_builders, onnx_core
from esact_cc.frontend.onnx_core import AttributeProto, FunctionProto, ModelProto, NodeProto
from esact_cc.frontend.onnx_limits import MAX_FUNCTION_DEPTH, MAX_NODES, MAX_OPSET, MIN_OPSET
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.onnx_attribute_domains import attribute_domain_error

DEFAULT_DOMAINS = ("", "ai.onnx")
SHAPE_INFERENCE_INITIALIZER_MAX_ELEMENTS = 4096
"""Constants up to this size are given to shape inference (the checker's and the frontend's)
by value, since it needs shape vectors; bigger ones only by type."""


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


_NODE_ERROR_START = re.compile(r" (?=\(op_type:)")


def first_inference_error(error: BaseException) -> str:
    """`one_line`, but of onnx's list of per-node inference errors only the first and how
    many more: one wrong input shape makes every later node fail, a line of kilobytes."""
    text = one_line(error)
    head, found, errors = text.partition("Inference error(s): ")
    if not found:
        return text
    first, *more = _NODE_ERROR_START.split(errors)
    return f"{head}{found}{first}" + (f" ({len(more)} more)" if more else "")


def node_label(node: NodeProto, index: int) -> str:
    """The node's name, or a stable stand-in for unnamed nodes."""
    return node.name or f"{node.op_type}_{index}"


def default_opset(proto: ModelProto) -> int:
    for entry in proto.opset_import:
        if entry.domain in DEFAULT_DOMAINS:
            return int(entry.version)
    raise CompileError("ONNX model imports no default-domain (ai.onnx) opset")


def check_opset(proto: ModelProto) -> None:
    opset = default_opset(proto)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise CompileError(f"ONNX model uses default-domain opset {opset}; supported opsets are "
                           f"{MIN_OPSET} to {MAX_OPSET}")


def _subgraph_nodes(node: NodeProto) -> Iterable[list[NodeProto]]:
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            yield list(attr.g.node)
        for graph in attr.graphs:
            yield list(graph.node)


def check_inlined_size(proto: ModelProto) -> None:
    """Refuse a model whose graph, with local functions inlined, exceeds `MAX_NODES` nodes."""
    functions: dict[tuple[str, str, str], FunctionProto] = {
        (f.domain, f.name, f.overload): f for f in proto.functions}
    sizes: dict[tuple[str, str, str], int] = {}
    calling: list[tuple[str, str, str]] = []

    def function_size(key: tuple[str, str, str]) -> int:
        if key in sizes:
            return sizes[key]
        name = f"{key[0]}.{key[1]}"
        if key in calling:
            chain = " -> ".join(f"{k[0]}.{k[1]}" for k in calling[calling.index(key):])
            raise CompileError(f"local function '{name}' calls itself ({chain} -> {name})")
        if len(calling) >= MAX_FUNCTION_DEPTH:
            raise CompileError(
                f"local function '{name}': calls nest deeper than {MAX_FUNCTION_DEPTH} levels")
        calling.append(key)
        size = nodes_size(list(functions[key].node), f"local function '{name}'")
        calling.pop()
        sizes[key] = size
        return size

    def nodes_size(nodes: list[NodeProto], where: str) -> int:
        total = 0
        for node in nodes:
            key = (node.domain, node.op_type, node.overload)
            total += function_size(key) if key in functions else 1
            for subgraph in _subgraph_nodes(node):
                total += nodes_size(subgraph, where)
            if total > MAX_NODES:
                raise CompileError(f"{where} has more than {MAX_NODES} nodes once local "
                                   "functions are inlined (the limit)")
        return total

    nodes_size(list(proto.graph.node), "the graph")


def _producers(nodes: list[NodeProto], labels: list[str], defined: set[str]) -> dict[str, int]:
    """Value name -> index of the one node writing it."""
    producer: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in filter(None, node.output):
            if name in producer:
                raise CompileError(f"value '{name}' is written by two nodes: "
                                   f"'{labels[producer[name]]}' and '{labels[index]}'")
            if name in defined:
                raise CompileError(f"node '{labels[index]}' writes '{name}', which is a graph "
                                   "input or initializer")
            producer[name] = index
    return producer


def check_graph_structure(proto: ModelProto, array_names: Iterable[str] = ()) -> None:
    """One writer per value, every use defined, no cycle."""
    graph = proto.graph
    defined = ({i.name for i in graph.input} | {t.name for t in graph.initializer}
               | set(array_names) | {s.values.name for s in graph.sparse_initializer})
    labels = [node_label(node, i) for i, node in enumerate(graph.node)]
    producer = _producers(list(graph.node), labels, defined)
    uses = [(name, f"'{labels[i]}'") for i, node in enumerate(graph.node) for name in node.input]
    uses += [(output.name, "the graph outputs") for output in graph.output]
    for name, user in uses:
        if name and name not in producer and name not in defined:
            raise CompileError(f"value '{name}' used by {user} is produced by no node, input "
                               "or initializer")
    cycle = _find_cycle([[producer[n] for n in node.input if n in producer] for node in graph.node])
    if cycle:
        raise CompileError("the graph has a cycle through nodes "
                           + " -> ".join(f"'{labels[i]}'" for i in [*cycle, cycle[0]]))


def _find_cycle(uses: list[list[int]]) -> list[int]:
    """Nodes on one cycle of the graph (node -> the nodes whose outputs it uses), or []."""
    state = [0] * len(uses)  # 0 unvisited, 1 on the current path, 2 done
    for root in range(len(uses)):
        if state[root]:
            continue
        path: list[int] = []
        stack = [(root, iter(uses[root]))]
        state[root] = 1
        path.append(root)
        while stack:
            node, pending = stack[-1]
            step = next(pending, None)
            if step is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state[step] == 1:
                cycle = path[path.index(step):]
                return cycle[::-1]  # in data-flow order: each node feeds the next
            elif state[step] == 0:
                state[step] = 1
                path.append(step)
                stack.append((step, iter(uses[step])))
    return []


def _complete_io_shapes(check: ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> None:
    """The checker wants a shape on every graph input and output; the frontend accepts an input
    sized by `--input-shape` and an output sized by inference, so give the checked copy those."""
    for info in check.graph.input:
        tensor = info.type.tensor_type
        if info.type.HasField("tensor_type") and not tensor.HasField("shape"):
            if info.name not in input_shapes:
                raise CompileError(f"input '{info.name}' has no shape: give it with "
                                   f"--input-shape {info.name}=...")
            tensor.shape.CopyFrom(onnx_builders.make_tensor_type_proto(
                tensor.elem_type, list(input_shapes[info.name])).tensor_type.shape)
    shapeless = {o.name: o for o in check.graph.output
                 if o.type.HasField("tensor_type") and not o.type.tensor_type.HasField("shape")}
    if not shapeless:
        return
    try:
        inferred = onnx_core.infer_shapes(check).graph.output
    except Exception:  # the full check below reports what is wrong
        return
    for info in inferred:
        if info.name in shapeless and info.type.tensor_type.HasField("shape"):
            shapeless.pop(info.name).type.CopyFrom(info.type)
    for name in shapeless:
        raise CompileError(f"graph output '{name}' has no shape and shape inference cannot give "
                           "it one")


def run_checker(proto: ModelProto, arrays: Mapping[str, np.ndarray],
                input_shapes: Mapping[str, Sequence[int]]) -> None:
    """onnx's full check on the model, with the initializers read as arrays put back (small
    ones by value, big ones as typed graph inputs)."""
    check = ModelProto()
    check.CopyFrom(proto)
    inputs = {i.name for i in check.graph.input}
    for name, array in arrays.items():
        if array.size <= SHAPE_INFERENCE_INITIALIZER_MAX_ELEMENTS:
            check.graph.initializer.append(onnx_builders.from_array(np.asarray(array), name))
        elif name not in inputs:
            check.graph.input.append(onnx_builders.make_tensor_value_info(
                name, tensor_types.from_numpy(array.dtype).onnx, array.shape))
    _complete_io_shapes(check, input_shapes)
    try:
        onnx_core.check_model(check, full_check=True)
    except Exception as e:  # ValidationError, InferenceError, and onnx's other checker errors
        raise CompileError(f"invalid ONNX model: {first_inference_error(e)}") from None


def validate_before_inlining(proto: ModelProto, array_names: Iterable[str]) -> None:
    """Checks 1-3 of the module docstring, in order."""
    check_opset(proto)
    check_inlined_size(proto)
    check_graph_structure(proto, array_names)
    unsafe = attribute_domain_error(proto)
    if unsafe is not None:  # before onnx's shape inference, which would crash on it
        raise CompileError(unsafe)
