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

`HOST_ONLY_OP_TYPES` is that set for the pinned onnx (pyproject.toml), written out: the dialect
is loaded by every tool, and deriving it imports the onnx package (0.7 s of CPU, most of an
`esact-opt` run on an IR file). `derived_host_only_op_types` derives it from the installed
package, and a test checks that the two agree (test/unit/onnx/test_host_op_list.py).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onnx.defs import OpSchema

HOST_ONLY_OP_TYPES: tuple[str, ...] = (
    "Acos", "Acosh", "AffineGrid", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "Attention",
    "AveragePool", "BatchNormalization", "BitCast", "BitShift", "BitwiseAnd", "BitwiseNot",
    "BitwiseOr", "BitwiseXor", "BlackmanWindow", "CastLike", "CausalConvWithState", "Celu",
    "CenterCropPad", "Col2Im", "Compress", "ConvInteger", "ConvTranspose", "Cosh", "CumProd",
    "DFT", "DeformConv", "DepthToSpace", "DequantizeLinear", "Det", "DynamicQuantizeLinear",
    "Elu", "EyeLike", "GRU", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "GridSample",
    "GroupNormalization", "HammingWindow", "HannWindow", "HardSigmoid", "HardSwish", "Hardmax",
    "ImageDecoder", "InstanceNormalization", "IsInf", "LRN", "LSTM", "LeakyRelu",
    "LinearAttention", "LogSoftmax", "LpNormalization", "LpPool", "MatMulInteger", "MaxPool",
    "MaxRoiPool", "MaxUnpool", "Mean", "MeanVarianceNormalization", "MelWeightMatrix", "Mish",
    "NegativeLogLikelihoodLoss", "NonMaxSuppression", "NonZero", "OneHot", "OptionalGetElement",
    "OptionalHasElement", "PRelu", "QLinearConv", "QLinearMatMul", "QuantizeLinear",
    "RMSNormalization", "RNN", "ReduceLogSum", "ReduceLogSumExp", "Resize", "ReverseSequence",
    "RoiAlign", "RotaryEmbedding", "Round", "STFT", "ScatterElements", "Selu", "Shrink", "Sinh",
    "SoftmaxCrossEntropyLoss", "Softplus", "Softsign", "SpaceToDepth", "SwiGLU", "Swish", "Tan",
    "TensorScatter", "TfIdfVectorizer", "ThresholdedRelu", "TopK", "Unique",
)
"""Every default-domain op of the pinned onnx that is neither a numpy op (`ONNX_OP_TYPES`) nor
in `NOT_ON_HOST`: imported, kept on the host, run by onnxruntime."""

_NON_TENSOR = ("seq(", "optional(", "sparse_tensor(")
_RANDOM = ("Bernoulli", "Multinomial", "RandomNormal", "RandomNormalLike", "RandomUniform",
           "RandomUniformLike")


def _reason(schema: OpSchema) -> str | None:
    """Why the op cannot be a host op (None: it can)."""
    from onnx.defs import OpSchema

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
    from onnx import defs

    return [s for s in defs.get_all_schemas() if s.domain in ("", "ai.onnx")]


@functools.cache
def not_on_host() -> dict[str, str]:
    """Default-domain op type -> why it cannot run on the host (the frontend's error)."""
    return {schema.name: reason
            for schema in sorted(_default_domain_schemas(), key=lambda s: s.name)
            if (reason := _reason(schema)) is not None}


def derived_host_only_op_types(numpy_op_types: tuple[str, ...]) -> tuple[str, ...]:
    """The default-domain ops of the installed onnx, other than `numpy_op_types`, that run only
    on onnxruntime (what `HOST_ONLY_OP_TYPES` must equal)."""
    return tuple(sorted({s.name for s in _default_domain_schemas()}
                        - set(numpy_op_types) - set(not_on_host())))


def __getattr__(name: str) -> dict[str, str]:
    # NOT_ON_HOST, for the frontend, is computed on first use: it needs the onnx package.
    if name == "NOT_ON_HOST":
        return not_on_host()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
