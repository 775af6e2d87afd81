"""The lowering rule of `band_attention.band_mask`: one BAND_MASK per batch element and head
into the MBUF region the masked attention reads as its SPA (`MaskTiles.spa`), registered with
`lowering_state.register_lowering` when the scheme's `lowering` module is imported."""

from __future__ import annotations

from band_attention import BandMaskOp
from esact_cc.passes.lowering_state import HALF, Lowering, MaskTiles, register_lowering
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import Buffer


def lower_band_mask(lw: Lowering, op: BandMaskOp) -> None:
    batch, heads, lq, lk = op.result.type.get_shape()
    block = lq * lk
    if batch * heads * block > lw.capacity(Buffer.MBUF) // HALF:
        raise CompileError(f"lower-to-esact: band masks of {batch}x{heads}x{lq}x{lk} do not "
                           "fit half of MBUF")
    spa = lw.alloc(Buffer.MBUF, batch * heads * block)
    lw.masks[op.result] = MaskTiles(batch, lq, heads, spa=spa,
                                    users={use.operation for use in op.result.uses})
    for index in range(batch * heads):
        lw.emit("band_mask", "predict", mask_addr=spa + index * block, lq=lq, lk=lk,
                window=op.window.value.data)


register_lowering(BandMaskOp, lower_band_mask)
