"""Which weights fine-tuning trains, and how they go back into the ONNX file.

The trained weights are those of the layers' linears (roles q, k, v, o, ffn_up, ffn_gate,
ffn_down) and norms, as `lift-transformer` stamped them (passes/layer_roles.py: structure, not
node names); embeddings, the final norm and the classifier head stay as they are. A weight-store
handle is written back to the ONNX initializer it came from: the same name and shape, or
`<name>.T` for an initializer the lifting transposed (Gemm transB, MatMul of a Transpose). A
handle of any other form (a scaled Gemm weight, a folded constant) is left frozen and listed, so
the caller can say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from onnx import ModelProto, numpy_helper
from xdsl.dialects.builtin import ModuleOp

from esact_cc.dialects.onnx import WeightOp
from esact_cc.ir_queries import main_function
from esact_cc.passes.layer_roles import NO_LAYER, is_linear, read_stamp
from esact_cc.runtime.errors import CompileError
from esact_cc.weight_store import WeightStore

TRAINED_ROLES = ("q", "k", "v", "o", "ffn_up", "ffn_gate", "ffn_down", "norm")
TRANSPOSED_SUFFIX = ".T"


@dataclass(frozen=True)
class LayerWeight:
    """A trainable weight-store handle and the ONNX initializer it is written back to."""

    handle: str
    initializer: str
    transposed: bool
    layer: int
    role: str


def _initializer_of(handle: str, shape: tuple[int, ...],
                    initializers: Mapping[str, tuple[int, ...]]) -> tuple[str, bool] | None:
    if initializers.get(handle) == shape:
        return handle, False
    base = handle.removesuffix(TRANSPOSED_SUFFIX)
    if base != handle and initializers.get(base) == shape[::-1] and len(shape) == 2:
        return base, True
    return None


def layer_weights(module: ModuleOp, store: WeightStore, proto: ModelProto
                  ) -> tuple[list[LayerWeight], list[str]]:
    """(the trainable weights in program order, the layer weights left frozen: no initializer
    of that name and shape) of a `transformer`-level module imported from `proto`."""
    initializers = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    found: dict[str, LayerWeight] = {}
    frozen: list[str] = []
    for op in main_function(module).body.block.ops:
        stamp = read_stamp(op)
        if stamp is None or stamp.layer == NO_LAYER or stamp.role not in TRAINED_ROLES:
            continue
        if stamp.role != "norm" and not is_linear(op):
            continue
        for operand in op.operands:
            owner = operand.owner
            if not isinstance(owner, WeightOp):
                continue
            handle = owner.weight_name.data
            if handle in found or handle in frozen:
                continue
            target = _initializer_of(handle, tuple(store[handle].shape), initializers)
            if target is None:
                frozen.append(handle)
            else:
                found[handle] = LayerWeight(handle, target[0], target[1], stamp.layer,
                                            stamp.role)
    if not found:
        raise CompileError("fine-tuning: no layer weight of the model maps to an ONNX "
                           "initializer (no attention layer lifted?)")
    return list(found.values()), frozen


def with_weights(proto: ModelProto, weights: list[LayerWeight],
                 values: Mapping[str, np.ndarray]) -> ModelProto:
    """A copy of `proto` whose initializers hold `values` (by handle); the graph is unchanged."""
    out = ModelProto()
    out.CopyFrom(proto)
    by_name = {t.name: t for t in out.graph.initializer}
    for weight in weights:
        tensor = by_name[weight.initializer]
        old = numpy_helper.to_array(tensor)
        new = np.asarray(values[weight.handle])
        new = new.T if weight.transposed else new
        if new.shape != old.shape:
            raise CompileError(f"fine-tuning: trained {weight.handle} has shape {new.shape}, "
                               f"initializer {weight.initializer} {old.shape}")
        tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(new.astype(old.dtype)),
                                                weight.initializer))
    return out
