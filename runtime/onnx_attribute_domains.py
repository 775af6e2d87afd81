"""Attribute values that crash onnx's shape inference or onnxruntime instead of raising.

A few C++ implementations index with an attribute before checking it: GatherND with a negative
`batch_dims` is a segmentation fault in both onnx's strict shape inference and onnxruntime
(found by bench/fuzz_inputs.py, binary cases 79793 and 80661). No Python error can catch that,
so every graph a tool hands to onnx or onnxruntime (a model before its full check, a binary's
host segments before onnxruntime) is first checked against this table. Extend it when the fuzz
finds another such crash.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

ATTRIBUTE_DOMAINS: dict[tuple[str, str], tuple[int, int]] = {
    ("GatherND", "batch_dims"): (0, 64),
}
"""(op_type, attribute) -> inclusive (low, high) of the integer values that are safe to pass on
(64: no ONNX tensor has that many dims)."""


def _nodes(model: Any) -> Iterator[Any]:
    """Every node of an onnx.ModelProto: graph, subgraphs, functions, training graphs."""
    graphs = [model.graph, *(g for info in model.training_info
                             for g in (info.initialization, info.algorithm))]
    node_lists = [list(f.node) for f in model.functions]
    while graphs or node_lists:
        if graphs:
            node_lists.append(list(graphs.pop().node))
            continue
        for node in node_lists.pop():
            yield node
            for attr in node.attribute:
                graphs.extend((attr.g, *attr.graphs))


def attribute_domain_error(model: Any) -> str | None:
    """A one-line description of the first node whose attribute lies outside its safe domain,
    or None."""
    for node in _nodes(model):
        if node.domain not in ("", "ai.onnx"):
            continue
        for attr in node.attribute:
            domain = ATTRIBUTE_DOMAINS.get((node.op_type, attr.name))
            if domain is not None and not domain[0] <= attr.i <= domain[1]:
                name = ascii(node.name or (node.output[0] if node.output else node.op_type))
                return (f"node {name} ({node.op_type}): attribute '{attr.name}' = {attr.i} is "
                        f"outside {domain[0]}..{domain[1]}")
    return None
