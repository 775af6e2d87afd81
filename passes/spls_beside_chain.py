"""The ops the SPLS prediction chain (passes/lower_spls_to_esact.py) lowers beside itself: the
layer's linears and attention that do not depend on the prediction (run by the MAC array while
the BPU predicts), and the row-masked linears of X that get one GEMM per prediction chunk."""

from __future__ import annotations

from typing import TYPE_CHECKING

from esact_cc.dialects import spls, transformer
from esact_cc.passes.lowering_state import Lowering, is_dense_int8_linear
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


def lower_early(lw: Lowering, early: list[Operation]) -> int | None:
    """Lower the ops of `independent_projections` beside the projection (a held group, see
    lower_spls_to_esact's `lower_prediction`); a dense attention among them that does not fit there is dropped from
    `early` and lowered after the chain where it stands. None: nothing fits beside."""
    group = lw.lower_aside(early, masks=None) if early else None
    if group is None and early and isinstance(early[-1], transformer.AttentionOp):
        early.pop()
        group = lw.lower_aside(early, masks=None) if early else None
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
