"""Checks of a host segment's ONNX model before anything resolves or runs it.

`check_host_model` is part of the .esb loader's validation (esb.validate_program): the bytes
parse, no tensor refers to external data (onnx.checker and onnxruntime would resolve it against
the current directory: a crafted binary could read any file), onnx.checker passes, and the
bindings name exactly the graph's inputs and distinct graph outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .display import short_repr
from .errors import ProgramError
from .host_model_memo import remember_graph_io, remembered_graph_io
from .onnx_attribute_domains import attribute_domain_error

if TYPE_CHECKING:
    from .esb import HostSegment


def check_host_model(segment: HostSegment, index: int) -> None:
    """The ONNX bytes parse, pass onnx.checker and bind exactly the graph's inputs and a
    subset of its outputs (onnxruntime never sees a model that fails this). A model that
    passed before skips to the bindings check (host_model_memo.py)."""
    where = f"host segment {index}"
    graph_io = _remembered(segment)
    if graph_io is None:
        graph_io = _check_model(segment.onnx, where)
        remember_graph_io(segment.onnx, *graph_io, model_digest=segment.digest)
        _remember_file_key(segment, graph_io)
    graph_inputs, graph_outputs = graph_io
    bound_inputs = {t.name for t in segment.inputs}
    if bound_inputs != graph_inputs or len(bound_inputs) != len(segment.inputs):
        raise ProgramError(f"{where}: bindings name inputs {sorted(bound_inputs)!a}, the "
                           f"ONNX graph has {sorted(graph_inputs)!a}")
    bound_outputs = [t.name for t in segment.outputs]
    if not set(bound_outputs) <= graph_outputs or len(set(bound_outputs)) != len(bound_outputs):
        raise ProgramError(f"{where}: bound outputs {sorted(bound_outputs)!a} are not "
                           f"distinct ONNX graph outputs")


def _remembered(segment: HostSegment) -> tuple[set[str], set[str]] | None:
    """The graph inputs and outputs of a model that passed before: looked up by the segment's
    file_key first (a binary loaded before: no hashing of the model, 0.08 s for BERT-base's
    embedding segment), then by the model's digest (a model esact-cc or another binary
    checked), which also remembers the file_key for the next load."""
    if segment.file_key is not None:
        graph_io = remembered_graph_io(segment.onnx, model_digest=segment.file_key)
        if graph_io is not None:
            return graph_io
    graph_io = remembered_graph_io(segment.onnx, model_digest=segment.digest)
    if graph_io is not None:
        _remember_file_key(segment, graph_io)
    return graph_io


def _remember_file_key(segment: HostSegment, graph_io: tuple[set[str], set[str]]) -> None:
    if segment.file_key is not None:
        remember_graph_io(segment.onnx, *graph_io, model_digest=segment.file_key)


def _check_model(onnx_bytes: bytes, where: str) -> tuple[set[str], set[str]]:
    """The model checks; returns the graph's inputs (initializers excluded) and outputs."""
    import onnx  # not needed by binaries without host segments, nor by remembered models

    try:
        model = onnx.ModelProto.FromString(onnx_bytes)
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError
        raise ProgramError(f"{where}: invalid ONNX model: {_first_line(exc)}") from None
    # Before onnx.checker and onnxruntime, which resolve external data against the cwd.
    external = external_tensor(model)
    if external is not None:
        raise ProgramError(f"{where}: tensor {short_repr(external)} refers to external data; "
                           f"a binary must carry every tensor inside it")
    try:
        # The bytes as they are: a ModelProto would be serialized again (a copy of a
        # 94 MB embedding table in BERT-base, at the peak of the compile's memory).
        onnx.checker.check_model(onnx_bytes if isinstance(onnx_bytes, bytes) else model)
    except Exception as exc:  # noqa: BLE001 - onnx ValidationError, ...
        raise ProgramError(f"{where}: invalid ONNX model: {_first_line(exc)}") from None
    unsafe = attribute_domain_error(model)
    if unsafe is not None:
        raise ProgramError(f"{where}: {unsafe}")
    initializers = {t.name for t in model.graph.initializer}
    return ({i.name for i in model.graph.input} - initializers,
            {o.name for o in model.graph.output})


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def external_tensor(model: Any) -> str | None:
    """The name of the first tensor in `model` (an onnx.ModelProto) whose data lives outside
    it (data_location EXTERNAL or external_data entries), anywhere: graph initializers, sparse
    initializers, node attributes (Constant values, tensor lists), subgraphs of control-flow
    nodes, functions and training graphs. None when the model is self-contained."""
    import onnx

    graphs = [model.graph, *(g for info in model.training_info
                             for g in (info.initialization, info.algorithm))]
    node_lists = [f.node for f in model.functions]
    tensors: list[Any] = []
    while graphs or node_lists:
        if graphs:
            graph = graphs.pop()
            tensors.extend(graph.initializer)
            for sparse in graph.sparse_initializer:
                tensors.extend((sparse.values, sparse.indices))
            node_lists.append(graph.node)
            continue
        for node in node_lists.pop():
            for attr in node.attribute:
                tensors.extend((attr.t, *attr.tensors))
                for sparse in (attr.sparse_tensor, *attr.sparse_tensors):
                    tensors.extend((sparse.values, sparse.indices))
                graphs.extend((attr.g, *attr.graphs))
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            return tensor.name
    return None
