"""A sparsity scheme with prediction hardware defined entirely under test/: `band_attention`.

Each attention keeps, per query row r, the keys c with |r - c| <= `window` (a local band, per
layer overridable), predicted on chip by an instruction of its own. The scheme is these three
files and one registration, `SCHEME` (through `register_scheme` or an entry point):
- this module: options, the `band_attention` dialect (`band_attention.band_mask`), the insert
  pass and the op's reference semantics (interpreter);
- band_attention_hardware.py: the BAND_MASK ISA row, its functional kernel and cost;
- band_attention_lowering.py: the rule lowering `band_mask` to BAND_MASK instructions.
No file outside test/ names it: dialect, pass table, interpreter, ISA table and lowering find
it through `SparsityScheme`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import I64, IntegerAttr, ModuleOp, TensorType, i1, i64
from xdsl.ir import Dialect, SSAValue
from xdsl.irdl import IRDLOperation, irdl_op_definition, operand_def, prop_def, result_def
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter
from xdsl.utils.exceptions import VerifyException

from esact_cc.dialects import transformer
from esact_cc.interpreter.reference_interpreter import register
from esact_cc.sparsity.registry import SparsityScheme
from esact_cc.sparsity.settings import SchemeSettings
from esact_cc.typed_options import option, parse_layer_overrides, validate

NAME = "band_attention"


@dataclass(frozen=True)
class BandOptions:
    window: int = option(2, low=0, high=255)

    def __post_init__(self) -> None:
        validate(self, NAME)


def band(lq: int, lk: int, window: int) -> np.ndarray:
    """[lq, lk] bool: key c kept for query r when |r - c| <= window."""
    return np.abs(np.arange(lq)[:, None] - np.arange(lk)[None, :]) <= window


@irdl_op_definition
class BandMaskOp(IRDLOperation):
    """The per-query key mask [B, H, Lq, Lk] i1 of an attention with Q [B, Lq, N], K [B, Lk, N]."""

    name = f"{NAME}.band_mask"

    q = operand_def(TensorType)
    k = operand_def(TensorType)
    num_heads = prop_def(IntegerAttr[I64])
    window = prop_def(IntegerAttr[I64])
    result = result_def(TensorType)

    assembly_format = ("$q `,` $k `heads` `(` $num_heads `)` `window` `(` $window `)` attr-dict"
                       " `:` functional-type(operands, results)")

    def __init__(self, q: SSAValue, k: SSAValue, num_heads: int, window: int):
        batch, lq, _ = q.type.get_shape()
        lk = k.type.get_shape()[1]
        super().__init__(operands=[q, k], properties={"num_heads": IntegerAttr(num_heads, i64),
                                                       "window": IntegerAttr(window, i64)},
                         result_types=[TensorType(i1, [batch, num_heads, lq, lk])])

    def verify_(self) -> None:
        if self.window.value.data < 0:
            raise VerifyException(f"{self.name}: window must be >= 0")


BAND_ATTENTION = Dialect(NAME, [BandMaskOp], [])


@register(BandMaskOp.name)
def _run_band_mask(interpreter, op: BandMaskOp, args: list[np.ndarray]) -> np.ndarray:
    batch, heads, lq, lk = op.result.type.get_shape()
    return np.broadcast_to(band(lq, lk, op.window.value.data), (batch, heads, lq, lk)).copy()


@dataclass(frozen=True)
class InsertBandPass(BandOptions, ModulePass):
    name = "insert-band-attention"

    layers: str = ""
    """Per-layer overrides, "LAYER:window=...;..."."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        overrides = parse_layer_overrides(BandOptions, self.layers, NAME)
        attentions = [a for a in op.walk()
                      if isinstance(a, transformer.AttentionOp) and not a.is_masked]
        for index, attention in enumerate(attentions):
            window = overrides.get(index, {}).get("window", self.window)
            mask = BandMaskOp(attention.q, attention.k, attention.num_heads.value.data, window)
            Rewriter.insert_op(mask, InsertPoint.before(attention))
            masked = attention.with_operands_of(spa=mask.result)
            masked.attributes.update(attention.attributes)
            Rewriter.replace_op(attention, masked)


def _passes(settings: SchemeSettings) -> list[ModulePass]:
    return [InsertBandPass(**settings.pass_options())]


SCHEME = SparsityScheme(
    NAME, "test scheme: a local key band per query, predicted by BAND_MASK", BandOptions,
    _passes, pass_classes={InsertBandPass.name: f"{NAME}:InsertBandPass"},
    dialect=NAME, interpreter=NAME, lowering=f"{NAME}_lowering",
    instructions=f"{NAME}_hardware")
