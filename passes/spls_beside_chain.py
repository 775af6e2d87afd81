"""The ops the SPLS prediction chain (passes/lower_spls_to_esact.py) lowers beside itself: the
layer's linears and attention that do not depend on the prediction (run by the MAC array while
the BPU predicts), the row-masked linears of X that get one GEMM per prediction chunk, and,
with the projection by groups of batch elements, the attention (`place_generation`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from esact_cc.dialects import spls, transformer
from esact_cc.dialects.lowering import CYCLES_ATTR
from esact_cc.passes.lowering_state import (
    F32,
    DramTensor,
    Lowering,
    MaskTiles,
    is_dense_int8_linear,
)
from esact_cc.passes.on_chip_activations import rows_on_chip
from esact_cc.passes.spls_projection import X_CODE_TERMS
from esact_cc.runtime.isa_costs import topk_compares
from xdsl.dialects.builtin import IntegerAttr, i64
from xdsl.ir import Operation, SSAValue

if TYPE_CHECKING:
    from esact_cc.passes.lower_spls_to_esact import Chain


def _is_row_masked_linear(op: Operation) -> bool:
    return isinstance(op, transformer.LinearOp) and op.is_quantized and op.rows is not None


def independent_projections(c: Chain, x: SSAValue) -> list[Operation]:
    """The layer's dense K / V linears of X (`attention=dense`), then its Q and its attention
    when insert-spls left them dense (`dense-prefix`), and, without SIMILARITY, the Q, K and
    V of the top-k attention (nothing masks them then): they do not depend on the prediction,
    so the compute queue runs them while the BPU computes Q^ and K^ (`interleave`)."""
    early: list[Operation] = []
    attentions = _layer_attentions(c.sim, x) if c.sim is not None else []
    if c.sim is None:
        attentions += [u.operation for u in c.topk.result.uses
                       if isinstance(u.operation, transformer.AttentionOp)]
    for att in attentions:
        for value in (att.k, att.v, att.q):
            owner = value.owner
            if is_dense_int8_linear(owner) and owner.x is x and owner not in early:
                early.append(owner)
        if att.rows is None and att.spa is None \
                and all(v.owner in early for v in (att.q, att.k, att.v)):
            early.append(att)
    return early


def beside_scores(c: Chain, early: list[Operation]) -> list[Operation]:
    """The linears of `early` taken out of it to run beside the score path instead of the
    projection: in the ring form without SIMILARITY (passes/spls_no_reuse.py) the MAC array
    has no other work while the BPU ranks the chunks, and Q, K and V together outlast the
    projection (BERT-base 512: Q's last GEMMs ran 74k cycles after it, the K^ codes waiting
    for their ABUF). The top-k attention's Q goes: it LOADs Q after K and V."""
    if c.sim is not None or not c.ring:
        return []
    later = [att.q.owner for att in (u.operation for u in c.topk.result.uses)
             if isinstance(att, transformer.AttentionOp) and att.q.owner in early]
    for op in later:
        early.remove(op)
    return later


def lower_early(lw: Lowering, early: list[Operation], x: DramTensor) -> int | None:
    """Lower the ops of `independent_projections` beside the projection (a held group, see
    lower_spls_to_esact's `lower_prediction`); a dense attention among them that does not fit there is dropped from
    `early` and lowered after the chain where it stands. None: nothing fits beside."""
    group = _aside_or_through_dram(lw, early, x) if early else None
    if group is None and early and isinstance(early[-1], transformer.AttentionOp):
        early.pop()
        group = _aside_or_through_dram(lw, early, x) if early else None
    return group


def _aside_or_through_dram(lw: Lowering, early: list[Operation], x: DramTensor) -> int | None:
    """`lw.lower_aside(early)`; when that does not fit while keep-on-chip holds the chain's
    input `x` (read again by the masked Q linear and the residual after the attention), again
    with the linears' results read only after the chain sent through DRAM: kept, each holds
    a whole VBUF tile across the chain beside X (all-MiniLM-L6-v2 at 128 tokens: the second
    one's output tile did not fit, and K / V were lowered after the chain: 1,856,263 cycles
    against 1,844,976 so, dense 1,833,231). The Q produced after the chain is kept instead, as
    in the dense program."""
    group = lw.lower_aside(early, masks=None)
    if group is not None or lw.on_chip is None or rows_on_chip(lw, x, 0) is None:
        return group
    later = [op.result for op in early if isinstance(op, transformer.LinearOp)
             and all(u.operation not in early for u in op.result.uses)]
    lw.on_chip.decline(later, "read after an SPLS prediction chain, beside whose kept input "
                              "it did not fit")
    group = lw.lower_aside(early, masks=None)
    if group is None:  # lowered after the chain: kept as any result
        lw.on_chip.decline(later, None)
    return group


def _layer_attentions(sim: spls.LocalSimilarityOp, x: SSAValue) -> list[transformer.AttentionOp]:
    """The attentions without SPA of the prediction's layer: those reading its reuse map, and
    one left dense (`dense-prefix=attention`) whose Q, K and V are linears of X."""
    found = [u.operation for u in sim.reuse_map.uses
             if isinstance(u.operation, transformer.AttentionOp)]
    for use in x.uses:
        if is_dense_int8_linear(use.operation):
            found += [u.operation for u in use.operation.result.uses
                      if isinstance(u.operation, transformer.AttentionOp)
                      and u.operation.rows is None]
    return [att for k, att in enumerate(found) if att.spa is None and att not in found[:k]]


def chunk_consumers(sim: spls.LocalSimilarityOp, x: SSAValue) -> list[Operation]:
    """The row-masked linears of X (the Q projection): one GEMM per prediction chunk."""
    found: list[Operation] = []
    for use in sim.reuse_map.uses:
        user = use.operation
        if _is_row_masked_linear(user) and user.x is x and user not in found:
            found.append(user)
    return found


def score_cycles(lw: Lowering, c: Chain, rows: int) -> IntegerAttr:
    """Estimated cycles of one head's BPU_SCORES over `rows` rows, an anchor of
    `prediction_overlap.interleave`: the longer stage of the pipelined score path
    (runtime/isa_costs.py `pipelined_score_cycles`), X_CODE_TERMS shift-adds per product and
    two element passes (scale, mask) per score on the BPU lanes, or the top-k unit's compares."""
    lanes = rows * c.length * (c.head_dim * X_CODE_TERMS + 2) / lw.config.bpu_lanes
    ranking = topk_compares(rows, c.length, c.topk.k.value.data) / lw.config.topk_lanes
    return IntegerAttr(math.ceil(max(lanes, ranking)), i64)


def lower_beside_scores(lw: Lowering, scored: list[Operation], chain_start: int,
                        chain: list[Operation]) -> list[Operation]:
    """Lower `scored` (`beside_scores`) while the chain's regions are reserved and spread
    them over its BPU_SCORES (`chain`: its instructions, from label `chain_start`) by
    estimated cycles (`place "interleave"`); returns what is still to lower after the chain:
    `scored` when its tiles do not fit beside it."""
    beside = lw.lower_aside(scored, None) if scored else None
    if beside is None:
        return scored
    key_code_anchors(lw, chain)
    lw.place("interleave", beside, chain_start)
    return []


def key_code_anchors(lw: Lowering, chain: list[Operation]) -> None:
    """Anchors for the HLOGs of the chain's K^ codes (before its first BPU_SCORES), each
    estimated at the DRAM time of the FP32 rows it codes: the BPU_SCORES start after them, so
    the linears spread over the score path are placed by when it really runs."""
    for ins in chain:
        if ins.name == "esact.bpu_scores":
            return
        if ins.name == "esact.hlog" and CYCLES_ATTR not in ins.attributes:
            f = ins.to_instruction()  # type: ignore[attr-defined]
            ins.attributes[CYCLES_ATTR] = IntegerAttr(
                math.ceil(f["rows"] * f["cols"] * F32 / lw.config.dram_bytes_per_cycle), i64)


def place_independent(lw: Lowering, independent: int | None, projection_start: int,
                      grouped: int, after_chain: bool) -> None:
    """The `interleave` directive of the ops lowered beside the projection (group
    `independent`): right after the projection, or, when it is emitted by groups of batch
    elements (`grouped`: WholeProjection.group), after the chain, over every group's BPUs."""
    if independent is not None and bool(grouped) == after_chain:
        lw.place("interleave", independent, projection_start)


def place_generation(lw: Lowering, c: Chain, early: list[Operation], consumers: list[Operation],
                     masks: MaskTiles, generation: int | None, chain_start: int,
                     follow: bool) -> None:
    """Place the masked Q linear (group `generation`): its preparation before the chain and
    its column tiles by chunk (`prepare`), or, with the projection by groups (`follow`), each
    instruction right after what it depends on, one chunk later (`place "follow"`); then the
    attentions reading the reuse map whose Q is lowered beside the prediction (`consumers`, or
    `early` with dense-prefix=q) are lowered beside the chain too and placed the same way:
    a group's attention runs on the MAC array while the BPU projects the next group, instead
    of every attention after the last chunk."""
    if generation is not None:
        lw.place("follow" if follow else "prepare", generation, chain_start)
    if not follow or c.sim is None:
        return
    beside = {*early, *consumers}
    attentions = [u.operation for u in c.sim.reuse_map.uses
                  if isinstance(u.operation, transformer.AttentionOp)
                  and u.operation.q.owner in beside and u.operation not in beside]
    group = lw.lower_aside(attentions, masks) if attentions else None
    if group is not None:
        lw.place("follow", group, chain_start)
