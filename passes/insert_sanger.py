"""`insert-sanger`: Sanger's predicted attention mask (Lu et al., MICRO 2021) on every layer.

For each INT8 `transformer.attention` with no masks yet (layer LAYER as lift-transformer
stamped it), it inserts before the attention

    %spa = sanger.predict_mask %q, %k [mask %m] heads(H) bits(b) threshold(t) q_scale(..)
             k_scale(..) scale(..) [causal] [normalize_qk]

on the attention's own Q, K and additive mask, and gives the attention `spa(%spa)`: only the
kept (query, key) scores are computed, softmaxed and multiplied with V (the one masked
attention lowering, passes/lower_attention.py). Q, K, V and the other GEMMs stay dense: Sanger
prunes attention only. Numerics and the paper's constants: runtime/sanger_kernels.py.

Options (each also settable per layer, `layers="LAYER:threshold=0.01;..."`):
  bits=4         low-bit width of the predicted Q and K (Sanger's configs: 4)
  threshold=0.02 keep positions whose predicted probability exceeds it (Sanger's configs:
                 0.002 and 0.02; the default is the larger, see docs/design.md's Sanger part)
  normalize_qk=none  `inner_product`: unit-norm Q and K rows before the low-bit quantization,
                 the product times both norms (Sanger's BERT configs; default off, as theirs)

Run after `quantize`: the prediction reads the INT8 codes the attention computes, so an FP32
attention is an error. Grouped-query attention is left dense (warning), as by insert-spls.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from esact_cc import typed_options
from esact_cc.dialects import transformer
from esact_cc.dialects.sanger import PredictMaskOp
from esact_cc.passes import lower_sanger  # noqa: F401  (registers the lowering of its op)
from esact_cc.passes.attention_scheme import (LayerOptionsPass, eligible_attentions,
                                              replace_attention)
from esact_cc.passes.layer_roles import Stamp, layers_and_roles, stamp
from esact_cc.runtime.sanger_kernels import DEFAULT_BITS, MAX_BITS, MIN_BITS, NORMALIZE_QK
from esact_cc.typed_options import option

NAME = "insert-sanger"
DEFAULT_THRESHOLD = 0.02
"""configs/bert_base_sanger_2e-2.json's threshold (the other config uses 0.002)."""


@dataclass(frozen=True)
class SangerOptions:
    """Sanger's options of one layer; declared once here, checked from every source
    (esact-cc, the Python API, `insert-sanger{...}`, esact-tune's config)."""

    bits: int = option(DEFAULT_BITS, low=MIN_BITS, high=MAX_BITS)
    threshold: float = option(DEFAULT_THRESHOLD, low=0.0, high=0.999)
    normalize_qk: str = option("none", choices=NORMALIZE_QK)

    def __post_init__(self) -> None:
        typed_options.validate(self, NAME)


def sanger_layers(function: func.FuncOp) -> list[transformer.AttentionOp]:
    """The attention ops a Sanger mask can be given (the others are named on stderr)."""
    return eligible_attentions(
        function, NAME, "the prediction reads its INT8 Q and K",
        lambda op: ("grouped-query attention has no Sanger prediction yet"
                    if op.key_heads != op.heads else None))


@dataclass(frozen=True)
class InsertSangerPass(LayerOptionsPass, SangerOptions, ModulePass):
    """Insert Sanger's mask prediction before every attention and mask the attention with it.
    Options: `SangerOptions`' fields (inherited: one source of truth) plus `layers`."""

    name = "insert-sanger"
    OPTIONS, NAME = SangerOptions, NAME

    layers: str = ""
    """Per-layer overrides: "LAYER:name=value,...;LAYER:..."."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        overrides = self.layer_overrides()
        functions = [f for f in op.walk() if isinstance(f, func.FuncOp)]
        stamps = {o: s for f in functions for o, s in layers_and_roles(f).items()}
        attentions = [a for f in functions for a in sanger_layers(f)]
        indices = [stamps[a].layer for a in attentions]
        self.reject_unknown_layers(overrides, indices,
                                   sum(s.role == "attention" for s in stamps.values()),
                                   "with a Sanger prediction")
        for index, attention in zip(indices, attentions):
            _mask_layer(attention, index, overrides.get(index, self.base_options()))


def _mask_layer(att: transformer.AttentionOp, layer: int, options: SangerOptions) -> None:
    assert att.q_scale is not None and att.k_scale is not None
    predict = PredictMaskOp(att.q, att.k, att.mask, num_heads=att.heads, bits=options.bits,
                            threshold=options.threshold, q_scale=att.q_scale.value.data,
                            k_scale=att.k_scale.value.data, scale=att.scale.value.data,
                            causal=att.causal is not None,
                            normalize_qk=options.normalize_qk == "inner_product")
    predict.location = att.location  # the layer's attention node names its prediction
    predict.result.name_hint = "spa"
    stamp(predict, Stamp(layer, "predict"))
    Rewriter.insert_op(predict, InsertPoint.before(att))
    replace_attention(att, att.with_operands_of(spa=predict.result))

