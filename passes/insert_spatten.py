"""`insert-spatten`: SpAtten's cascade token and head pruning (Wang et al., HPCA 2021).

For each INT8 self-attention with no masks yet, in program order, it inserts before the
attention

    %tok, %hd, %s, %hs = spatten.select %q, %k, %v [mask %m] [scores %s0, %hs0] ...

reading the scores of the previous pruned layer (none for the first: it keeps everything and
only scores), and gives the attention `tokens(%tok) head_mask(%hd)`: pruned tokens are no keys
and their rows are not computed, pruned heads are not computed (dialects/gemm_ops.py). The
projections and FFNs stay dense. Numerics and the paper's constants: runtime/spatten_kernels.py.

Options (each also settable per layer, `layers="LAYER:token_keep=0.5;..."`):
  token_keep=0.9         fraction of the still-kept tokens the layer keeps (cascade: a pruned
                         token never returns), by accumulated attention probability
  head_keep=1.0          fraction of the still-kept heads kept, by accumulated |output|
  requant_threshold=0.1  a row whose MSB-only probabilities peak below it re-fetches its LSBs
  protect=1              the first tokens never pruned (the class token; our choice)
Run after `quantize`. Cross-attention and grouped-query attention are left dense (warning).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from esact_cc import typed_options
from esact_cc.dialects import transformer
from esact_cc.dialects.spatten import SelectOp
from esact_cc.passes import lower_spatten  # noqa: F401  (registers the lowering of its op)
from esact_cc.passes.attention_scheme import (LayerOptionsPass, eligible_attentions,
                                              replace_attention)
from esact_cc.passes.layer_roles import Stamp, layers_and_roles, stamp
from esact_cc.passes.lowering_state import shape_of
from esact_cc.runtime.isa_fields import DIM_BITS
from esact_cc.runtime.spatten_kernels import DEFAULT_REQUANT_THRESHOLD
from esact_cc.typed_options import option

NAME = "insert-spatten"
DEFAULT_TOKEN_KEEP = 0.9
"""Our default: SpAtten prunes progressively, layer by layer; 0.9 of the survivors per layer
leaves ~0.35 of the tokens after 10 layers (its BERT-base cascade ends near that, paper
Fig. 17); esact-tune picks per-layer values under an accuracy budget."""


@dataclass(frozen=True)
class SpattenOptions:
    """SpAtten's options of one layer; declared once here, checked from every source."""

    token_keep: float = option(DEFAULT_TOKEN_KEEP, low=0.0, high=1.0, low_open=True)
    head_keep: float = option(1.0, low=0.0, high=1.0, low_open=True)
    requant_threshold: float = option(DEFAULT_REQUANT_THRESHOLD, low=0.0, high=1.0)
    protect: int = option(1, low=0, high=(1 << DIM_BITS) - 1)  # SPATTEN_TOPK's field

    def __post_init__(self) -> None:
        typed_options.validate(self, NAME)


def spatten_layers(function: func.FuncOp) -> list[transformer.AttentionOp]:
    """The attention ops SpAtten prunes, in program order (the others are named on stderr)."""
    def unsupported(op: transformer.AttentionOp) -> str | None:
        why = ("grouped-query attention" if op.key_heads != op.heads else
               "cross-attention" if shape_of(op.q)[1] != shape_of(op.k)[1] else None)
        return f"{why} has no SpAtten pruning" if why else None

    return eligible_attentions(function, NAME, "the scores read its INT8 Q, K and V",
                               unsupported)


@dataclass(frozen=True)
class InsertSpattenPass(LayerOptionsPass, SpattenOptions, ModulePass):
    """Insert SpAtten's top-k selection before every self-attention and mask it with it."""

    name = "insert-spatten"
    OPTIONS, NAME = SpattenOptions, NAME

    layers: str = ""
    """Per-layer overrides: "LAYER:name=value,...;LAYER:..."."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        overrides = self.layer_overrides()
        for function in [f for f in op.walk() if isinstance(f, func.FuncOp)]:
            stamps = layers_and_roles(function)
            attentions = spatten_layers(function)
            indices = [stamps[a].layer for a in attentions]
            self.reject_unknown_layers(overrides, indices, len(indices), "SpAtten prunes")
            previous: tuple[SSAValue, SSAValue] | None = None
            for index, attention in zip(indices, attentions):
                previous = _prune_layer(attention, index, previous,
                                        overrides.get(index, self.base_options()))


def _prune_layer(att: transformer.AttentionOp, layer: int,
                 previous: tuple[SSAValue, SSAValue] | None,
                 options: SpattenOptions) -> tuple[SSAValue, SSAValue]:
    q_scale, k_scale, v_scale, _ = att.int8_scales()  # type: ignore[misc]
    scores, head_scores = previous if previous is not None else (None, None)
    select = SelectOp(att.q, att.k, att.v, att.mask, scores, head_scores, num_heads=att.heads,
                      token_keep=options.token_keep, head_keep=options.head_keep,
                      protect=options.protect,
                      requant_threshold=options.requant_threshold, q_scale=q_scale,
                      k_scale=k_scale, v_scale=v_scale, scale=att.scale.value.data,
                      causal=att.causal is not None)
    select.location = att.location  # the layer's attention node names its selection
    for result, hint in zip(select.results, ("keep", "heads", "scores", "head_scores")):
        result.name_hint = hint
    stamp(select, Stamp(layer, "predict"))
    Rewriter.insert_op(select, InsertPoint.before(att))
    replace_attention(att, att.with_operands_of(tokens=select.tokens, head_mask=select.heads))
    return select.new_scores, select.new_head_scores

