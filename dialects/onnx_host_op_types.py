"""The ONNX op types the `onnx` dialect holds only so they can run on the host.

`ONNX_OP_TYPES` (dialects/onnx.py) are the ops with numpy semantics in esact-cc (folded at
compile time, interpreted by numpy). Every other default-domain op of the installed onnx
package is a host-only op: the frontend imports it, the lift leaves it in a `transformer.host`
region, and both the reference interpreter and the binary's host segments run it with
onnxruntime (`esact_cc.interpreter.onnxruntime_kernel`, runtime/host_segments.py), so an
unsupported op is only one onnxruntime cannot run (the frontend asks it at import).

Left out, each with the reason the frontend names (`NOT_ON_HOST`): ops whose inputs or outputs
are sequences, optionals or strings only (a host segment binds tensors in DRAM), ops with
subgraph attributes (If, Loop, Scan: the IR holds no graphs), random ops (their outputs are
not deterministic), and ops the onnx package marks deprecated.
"""

from __future__ import annotations

from onnx import defs
from onnx.defs import OpSchema

_NON_TENSOR = ("seq(", "optional(", "sparse_tensor(")
_RANDOM = ("Bernoulli", "Multinomial", "RandomNormal", "RandomNormalLike", "RandomUniform",
           "RandomUniformLike")


def _reason(schema: OpSchema) -> str | None:
    """Why the op cannot be a host op (None: it can)."""
    if schema.deprecated:
        return "deprecated in ONNX"
    if schema.name in _RANDOM:
        return "random, so its outputs are not deterministic"
    if any(a.type in (OpSchema.AttrType.GRAPH, OpSchema.AttrType.GRAPHS)
           for a in schema.attributes.values()):
        return "control flow with subgraphs, which the IR does not hold"
    allowed = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    for value in [*schema.inputs, *schema.outputs]:
        types = allowed.get(value.type_str, [value.type_str])
        if all(t.startswith(_NON_TENSOR) or t == "tensor(string)" for t in types):
            return "its values are sequences, optionals or strings, not numeric tensors"
    return None


def _default_domain_schemas() -> list[OpSchema]:
    return [s for s in defs.get_all_schemas() if s.domain in ("", "ai.onnx")]


NOT_ON_HOST: dict[str, str] = {
    schema.name: reason for schema in sorted(_default_domain_schemas(), key=lambda s: s.name)
    if (reason := _reason(schema)) is not None}
"""Default-domain op type -> why it cannot run on the host."""


def host_only_op_types(numpy_op_types: tuple[str, ...]) -> tuple[str, ...]:
    """The default-domain ops, other than `numpy_op_types`, that run only on onnxruntime."""
    return tuple(sorted({s.name for s in _default_domain_schemas()}
                        - set(numpy_op_types) - set(NOT_ON_HOST)))
