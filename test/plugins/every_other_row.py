"""A sparsity scheme defined entirely under test/: `every_other_row`.

Per attention layer it inserts two constant masks from the weight store, no prediction:
- a reuse map keeping every second row: odd rows are not computed and take the previous
  (even) row's outputs, in Q, the attention, the output projection and the FFN;
- a seeded random per-query key mask [heads, L, L] keeping each key with probability
  `key-keep` (every row keeps its own key, so no row is empty).
K and V stay dense (every key is some row's). It plugs in through the public extension points
only: `typed_options.option` fields (per-layer overrides `LAYER:name=value` included),
`SparsityScheme` + `register_scheme`, `insert_spls.find_layers` to find the layers, and the
mask operands of the one linear / attention op (`with_operands_of`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType, i32
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from esact_cc.dialects.onnx import WeightOp
from esact_cc.passes.insert_spls import find_layers
from esact_cc.runtime.errors import CompileError
from esact_cc.sparsity.registry import SparsityScheme
from esact_cc.sparsity.settings import SchemeSettings
from esact_cc.typed_options import option, parse_layer_overrides, validate
from esact_cc.passes.weight_store_pass import WeightStorePass

NAME = "every_other_row"


@dataclass(frozen=True)
class EveryOtherRowOptions:
    seed: int = option(0, low=0, high=2**31 - 1)
    key_keep: float = option(0.5, low=0.0, high=1.0, low_open=True)

    def __post_init__(self) -> None:
        validate(self, NAME)


def reuse_map(length: int) -> np.ndarray:
    """[-1, 0, -1, 2, ...]: even rows computed, odd row i takes row i - 1's outputs."""
    rows = np.full(length, -1, np.int32)
    rows[1::2] = np.arange(0, length - 1, 2, dtype=np.int32)[: len(rows[1::2])]
    return rows


def key_mask(heads: int, length: int, keep: float, seed: int) -> np.ndarray:
    """[heads, L, L] int32, 1 = the query attends to the key; the diagonal is always kept."""
    kept = np.random.default_rng(seed).random((heads, length, length)) < keep
    kept |= np.eye(length, dtype=bool)[None]
    return kept.astype(np.int32)


@dataclass(frozen=True)
class EveryOtherRowPass(EveryOtherRowOptions, WeightStorePass):
    name = "every-other-row"

    layers: str = ""
    """Per-layer overrides, "LAYER:name=value,...;LAYER:..."."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        base = EveryOtherRowOptions(**{f.name: getattr(self, f.name)
                                       for f in fields(EveryOtherRowOptions)})
        overrides = parse_layer_overrides(EveryOtherRowOptions, self.layers, NAME)
        layers = [layer for f in op.walk() if isinstance(f, func.FuncOp)
                  for layer in find_layers(f)]
        unknown = sorted(set(overrides) - set(range(len(layers))))
        if unknown:
            raise CompileError(f"{NAME}: options for layer {unknown[0]}, but the model has "
                               f"{len(layers)} attention layer(s)")
        store = self.weights()
        for index, layer in enumerate(layers):
            options = replace(base, **overrides.get(index, {}))
            x = layer.q.operands[0]
            length = x.type.get_shape()[1]
            heads = layer.attention.heads
            anchor = min((layer.q, layer.k, layer.v), key=_position)
            rows = _constant(anchor, store, f"{NAME}.{index}.rows", reuse_map(length))
            spa = _constant(anchor, store, f"{NAME}.{index}.spa",
                            key_mask(heads, length, options.key_keep, options.seed + index))
            for linear in (layer.q, layer.out, layer.ffn_up, layer.ffn_down):
                if linear is not None:
                    _replace(linear, linear.with_operands_of(rows=rows))
            _replace(layer.attention, layer.attention.with_operands_of(rows=rows, spa=spa))


def _position(op: Operation) -> int:
    return op.parent_block().get_operation_index(op)


def _constant(anchor: Operation, store, base: str, array: np.ndarray) -> SSAValue:
    handle = WeightOp(store.add(store.unique_name(base), array),
                      TensorType(i32, list(array.shape)))
    Rewriter.insert_op(handle, InsertPoint.before(anchor))
    return handle.result


def _replace(old: Operation, new: Operation) -> None:
    new.attributes.update(old.attributes)
    new.location = old.location
    Rewriter.replace_op(old, new)


def _passes(settings: SchemeSettings) -> list[ModulePass]:
    return [EveryOtherRowPass(**settings.pass_options())]


SCHEME = SparsityScheme(NAME, "test scheme: every second row reused, random key masks",
                        EveryOtherRowOptions, _passes)
