"""Lowering of `sanger.predict_mask` (registered with `lowering_state.register_lowering` when
this module is imported: by passes/insert_sanger.py, and by the dialect registry with the
`sanger` dialect for IR read from a file).

Per batch element and head group: LOAD + QUANT of the Q and K column blocks into ABUF with
the attention's own multipliers (the same INT8 codes its ATTN_QK reads), then per head one
SANGER_PREDICT writing the head's [Lq, Lk] element mask into MBUF (the attention's additive
mask as a VBUF row, or a block when it varies per query) and one SANGER_PACK configuring the
sparse array for it (runtime/isa_sanger.py). The masks stay in MBUF as the SPA of the masked
attention (`Lowering.masks`), which reads them like any SPA and frees them after its last use.
Long sequences (all masks over half of MBUF): each head's mask is predicted in query tiles
(at most a quarter of MBUF each) into an MBUF slot, STOREd to a DRAM scratch tensor, and LOADed back per head and query tile by the attention
(`MaskTiles.spa_dram`, passes/lower_attention.py `SpaRows`); the traffic is charged as usual.
Q and K are quantized twice (here and in the attention): the attention lowering is shared by
every scheme and takes its masks as data; the extra QUANT work is in the report.
"""

from __future__ import annotations

import numpy as np
from xdsl.ir import Operation

from esact_cc.dialects import transformer
from esact_cc.dialects.sanger import PredictMaskOp
from esact_cc.ir_queries import op_label
from esact_cc.passes.lower_masked_inputs import MaskRows
from esact_cc.passes.lowering_state import HALF, Lowering, MaskTiles, register_lowering, shape_of
from esact_cc.quantized_kernels import quant_multiplier
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import Buffer
from esact_cc.runtime.sanger_kernels import score_scale


def _value_width(op: PredictMaskOp, heads: int, default: int) -> int:
    """Per-head V width of the attention reading the mask (the PV depth SANGER_PACK costs)."""
    for use in op.result.uses:
        if isinstance(use.operation, transformer.AttentionOp):
            return shape_of(use.operation.v)[2] // heads
    return default


def lower_predict_mask(lw: Lowering, op: Operation) -> None:
    assert isinstance(op, PredictMaskOp)
    q, k = lw.f32_tensor(op.q, "q"), lw.f32_tensor(op.k, "k")
    batch, lq, width = q.shape
    lk = k.shape[1]
    heads = op.num_heads.value.data
    d = width // heads
    dv = _value_width(op, heads, d)
    block = lq * lk
    # Masks that do not fit half of MBUF are written one head at a time into a slot and
    # STOREd to DRAM; the attention LOADs each head's rows back (MaskTiles.spa_dram).
    spilled = batch * heads * block > lw.capacity(Buffer.MBUF) // HALF
    # Spilled, each head's mask is predicted in query tiles of a quarter of MBUF at most
    # (Sanger's prediction is row by row: a row's threshold sees only that row's scores).
    tq = min(lq, lw.capacity(Buffer.MBUF) // HALF // 2 // lk) if spilled else lq
    if tq < 1:
        raise CompileError(f"lower-to-esact: {op_label(op)}: one Sanger mask row of {lk} keys "
                           "does not fit a quarter of MBUF")
    tiles = MaskTiles(batch, lq, heads, users={use.operation for use in op.result.uses})
    if spilled:
        tiles.spa_dram = lw.scratch_tensor((batch, heads, lq, lk), np.uint8)
        spa = 0
    else:
        spa = tiles.spa = lw.alloc(Buffer.MBUF, batch * heads * block)
    lw.masks[op.result] = tiles
    mask_rows = MaskRows(lw, op, op.mask, batch, heads, lq, lk)
    group = max(1, min(heads, lw.capacity(Buffer.ABUF) // HALF // ((lq + lk) * d)))
    normalize = op.normalize_qk is not None
    common = {"lq": lq, "lk": lk, "d": d, "bits": op.bits.value.data,
              "score_scale": float(score_scale(op.scale.value.data, op.q_scale.value.data,
                                               op.k_scale.value.data, op.bits.value.data,
                                               normalize)),
              "threshold": float(np.float32(op.threshold.value.data)),
              "normalize_qk": int(normalize)}
    if op.causal is not None:
        common.update(causal=1, causal_offset=lk - lq)
    mults = (float(quant_multiplier(op.q_scale.value.data)),
             float(quant_multiplier(op.k_scale.value.data)))
    for b in range(batch):
        for h0 in range(0, heads, group):
            g = min(group, heads - h0)
            qa, ka = lw.alloc(Buffer.ABUF, lq * g * d), lw.alloc(Buffer.ABUF, lk * g * d)
            lw.quantize_rows(q, b * lq, lq, h0 * d, g * d, qa, mults[0])
            lw.quantize_rows(k, b * lk, lk, h0 * d, g * d, ka, mults[1])
            for hh in range(g):
                for r0 in range(0, lq, tq):
                    rows = min(tq, lq - r0)
                    first = (b * heads + h0 + hh) * block + r0 * lk
                    out = lw.alloc(Buffer.MBUF, rows * lk) if spilled else spa + first
                    fields = dict(common, mask_addr=out, q_addr=qa + r0 * g * d + hh * d,
                                  k_addr=ka + hh * d, q_stride=g * d, k_stride=g * d, lq=rows)
                    if op.causal is not None:
                        fields.update(causal_offset=lk - lq + r0)
                    fresh = spilled and mask_rows.per_query  # [lq, lk] may not fit VBUF
                    if fresh:
                        fields.update(has_add_mask=1, add_mask_rows=1, add_mask_addr=(
                            mask_rows.fresh_rows(b, h0 + hh, r0, rows)))
                    elif mask_rows.per_query:
                        fields.update(has_add_mask=1, add_mask_rows=1,
                                      add_mask_addr=mask_rows.block(b, h0 + hh) + r0 * lk)
                    elif mask_rows.present:
                        fields.update(has_add_mask=1, add_mask_addr=mask_rows.row(b, h0 + hh))
                    lw.emit("sanger_predict", "predict", **fields)
                    if fresh:
                        lw.free(Buffer.VBUF, fields["add_mask_addr"])
                    lw.emit("sanger_pack", "qk", mask_addr=out, lq=rows, lk=lk, d=d, dv=dv)
                    if spilled:
                        assert tiles.spa_dram is not None
                        lw.store_(Buffer.MBUF, out, tiles.spa_dram.address + first, rows, lk)
                        lw.free(Buffer.MBUF, out)
            lw.free(Buffer.ABUF, qa, ka)
    mask_rows.free()


register_lowering(PredictMaskOp, lower_predict_mask)
