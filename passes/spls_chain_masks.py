"""The per-query mask rows of the SPLS prediction chain's ring form (passes/lower_spls_to_esact.py):
the VBUF slots a chunk's rows of the mask are LOADed into for BPU_SCORES, and, when the
layer's attention reads the same [1, 1, L, L] mask, one slot of the whole block handed over to
it after the chain (passes/attention_shared_mask.py `hand_over_block`), so the block is
LOADed once per layer instead of twice."""

from __future__ import annotations

from typing import TYPE_CHECKING

from esact_cc.dialects import transformer
from esact_cc.passes.lower_masked_inputs import MaskRows
from esact_cc.passes.lowering_state import Lowering
from esact_cc.runtime.isa import Buffer

if TYPE_CHECKING:
    from esact_cc.passes.lower_spls_to_esact import Chain

MASK_BLOCK_FRACTION = 16
"""A mask block the chain holds whole for the attention takes at most 1 / this of VBUF
(all-MiniLM-L6-v2 at 128 tokens: 128 x 128 of 262,144 elements)."""


def mask_slots(lw: Lowering, c: Chain, mask_rows: MaskRows) -> list[int]:
    """The VBUF slots of the chunks' mask rows (ring form, per-query mask): two of a chunk's
    rows, or, at batch 1 with a [1, 1, L, L] mask the layer's attention reads too, when the
    block takes at most 1 / MASK_BLOCK_FRACTION of VBUF, one of the whole block, which the
    attention then reads instead of LOADing it again (`Chain.mask_block_reader`;
    all-MiniLM-L6-v2 at 128 tokens: 64 KiB less DRAM traffic per predicted layer)."""
    readers = [u.operation for u in c.predict.mask.uses
               if isinstance(u.operation, transformer.AttentionOp)
               and u.operation not in lw.fused] if c.predict.mask is not None else []
    if mask_rows.shared_by_heads and c.batch == 1 and readers and mask_rows.shape[0] == 1 \
            and c.length * c.length <= lw.capacity(Buffer.VBUF) // MASK_BLOCK_FRACTION:
        assert mask_rows.tensor is not None
        c.mask_block_reader = mask_rows.tensor.address
        return [lw.alloc(Buffer.VBUF, c.length * c.length)]
    return [lw.alloc(Buffer.VBUF, c.chunks[0][1] * c.length) for _ in range(2)]


def chunk_mask_rows(lw: Lowering, c: Chain, mask_rows: MaskRows, b: int, h: int, r0: int,
                    n: int, first: bool) -> int:
    """VBUF address of the chunk's rows of head h's per-query mask block (ring form), LOADed
    into the slots held for the chain: once per chunk (at its `first` head: the heads' order
    follows the K^ groups, passes/spls_key_codes.py) when every head reads the same block
    ([B, 1, L, L]), else once per head. The first LOAD into each slot reads nothing the chain
    wrote: it moves back toward the projection's start (`place "early"`), else the in-order
    load queue holds it, and chunk 0's decision, behind the loads of the work lowered beside
    the projection (BERT-base 128, dense-prefix=attention: 74k cycles)."""
    shared = mask_rows.shape[1] == 1
    chunk = b * len(c.chunks) + r0 // c.chunks[0][1]
    use = chunk if shared else chunk * c.heads + h
    if c.mask_block_reader is not None:  # the whole block (shared): the first two early
        slot = c.mask_slots[0] + r0 * c.length
    else:
        slot = c.mask_slots[(chunk if shared else h) % 2]
    if shared and not first:  # LOADed at the chunk's first head
        return slot
    if use >= 2:
        mask_rows.fresh_rows(b, h, r0, n, into=slot)
        return slot
    lw.counters["group"] += 1  # a held group of this one LOAD (as Lowering.lower_aside)
    group = lw.group = lw.counters["group"]
    try:
        mask_rows.fresh_rows(b, h, r0, n, into=slot)
    finally:
        lw.group = None
    lw.place("aside", group)
    lw.place("early", group, c.projection_start)
    return slot
