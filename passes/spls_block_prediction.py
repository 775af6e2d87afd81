"""Block form of the SPLS prediction's phase 2 (passes/lower_spls_to_esact.py, ring form), for
sequences whose K^ codes of every key do not stay on chip (BERT-base at 2048 tokens).

The chunk form predicts a chunk of n rows for every head, then decides it (SIMILARITY needs
the chunk's SPA / prob rows of every head on chip); at BERT-base 2048 a chunk is one row, so
the K^ codes (L x Nk, LOADed per group of K heads: passes/spls_key_codes.py) come back from
DRAM once per row. The block form predicts a block of P = H x n rows (the rows one head's
slice of the chunk regions holds) head by head, spilling each head's SPA and prob rows to
DRAM, then decides the block's chunks from those rows LOADed back:
1. Predict (per block): the block's Q^ codes; per group of K heads (LOADed once per block, in
   the alternating order), per head: BPU (P rows x all keys) -> the score path
   (PAM_SCORES, or TOPK of the integer PAM) -> SPA rows in MBUF, STOREd to a DRAM scratch
   [B, H, L, L] uint8; cosprob: its prob rows, STOREd to a scratch [B, H, L, L] FP32. A
   per-query mask shared by the heads ([B, 1, L, L]) is LOADed once per block.
2. Decide (per chunk of the block): LOAD the chunk's SPA (and prob) rows of every head back
   into the chunk regions and SIMILARITY with the reference ring, as the chunk form does.
Per row the K^ traffic is L x Nk / P bytes instead of L x Nk; the spill is H x L x 5 bytes
each way (cosprob; H x L without probs). The instructions' operands hold the values of the
chunk form, so the PAM, masks and outputs equal it (and the INT8 interpreter) bit for bit.
The SPA scratch is the sparse attention's (`MaskTiles.spa_dram`) when one reads it.

On-chip: the chunk regions (SPA in MBUF, PAM in VBUF: H x n rows, reused by both steps), the
ring, the block's Q^ codes and a mask slot of P rows. The ring (window x H x L FP32 for
cosprob) may then take most of VBUF (`vbuf_needed`): the chunk form keeps it in half.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from esact_cc.passes.lowering_state import F32, MAX_DIM, DramTensor, Lowering, MaskTiles
from esact_cc.runtime.isa import Buffer

if TYPE_CHECKING:
    from esact_cc.passes.lower_masked_inputs import MaskRows
    from esact_cc.passes.lower_spls_to_esact import Chain
    from esact_cc.passes.spls_key_codes import HeadKeys
    from esact_cc.passes.spls_projection import WholeProjection
    from esact_cc.passes.spls_streamed_projection import StreamedProjection

PREDICT = "predict"


def block_rows(c: Chain) -> int:
    """Rows per block: n (the chunk's rows) times the heads, as many as one head's slice of
    the chunk regions holds, within the sequence (BPU_SCORES keeps the PAM out of ACC)."""
    n = c.chunks[0][1]
    fit = min(c.heads * n, c.length)
    return max(n, fit // n * n)


def vbuf_needed(c: Chain, ring: int) -> int:
    """VBUF elements the block form holds with one-row chunks: the ring, the chunk's PAM rows
    (P = H rows of one head when predicting), a per-query mask slot of P rows, the streamed
    projection's staging of P rows, the PAM scale, (s_Q, s_K) and the rows of an additive
    mask without query rows (`MaskRows.row`)."""
    rows, length = c.heads, c.length
    shape = [] if c.predict.mask is None else list(c.predict.mask.type.get_shape())  # type: ignore[union-attr]
    shape = [1] * (4 - len(shape)) + shape
    present = c.predict.mask is not None
    mask = (0 if not present else rows * length if shape[2] != 1
            else shape[0] * shape[1] * length)
    return (ring + rows * length + mask + (rows * c.width if c.streamed else 0) + length
            + 2 * c.batch)


def block_codes(lw: Lowering, c: Chain,
                projection: WholeProjection | StreamedProjection) -> None:
    """The streamed projection's phase-2 regions resized for blocks: the Q^ codes of a block
    in ABUF (before the K^ group region takes what is left) and, when K^ is spilled (made
    in row pieces through the staging), a staging region of a block's rows, allocated after
    the ring (`BlockSpill.plan`) so that the ring finds its VBUF in one piece."""
    from esact_cc.passes.spls_streamed_projection import StreamedProjection

    if not isinstance(projection, StreamedProjection):
        return
    r = c.regions
    lw.free(Buffer.ABUF, r["qc"])
    r["qc"] = lw.alloc(Buffer.ABUF, c.block_rows * c.width)
    lw.free(Buffer.VBUF, r["stage"])
    r["stage"] = None  # type: ignore[assignment]
    projection.stage_limit = c.block_rows


@dataclass
class BlockSpill:
    """The DRAM scratch of the block form and its one mask slot."""

    spa: DramTensor
    """[B, H, L, L] uint8: SPA rows (the sparse attention's `spa_dram` when one reads SPA)."""
    prob: DramTensor | None
    """[B, H, L, L] FP32: softmax(PAM) rows, for cosprob."""
    mask_slot: int | None
    """VBUF slot of a block's rows of a per-query mask [P, L]."""
    loaded_mask: tuple[int, int] | None = None
    """(batch element, first row) of the shared mask rows in the slot."""

    @staticmethod
    def plan(lw: Lowering, c: Chain, masks: MaskTiles,
             projection: WholeProjection | StreamedProjection) -> BlockSpill:
        """The scratch, the mask slot and (streamed projection, after the ring took its VBUF:
        `block_codes`) the staging region of a block's Q^ rows."""
        shape = (c.batch, c.heads, c.length, c.length)
        spa = masks.spa_dram or lw.scratch_tensor(shape, np.uint8)
        prob = lw.scratch_tensor(shape, np.float32) if c.probs else None
        slot = (lw.alloc(Buffer.VBUF, c.block_rows * c.length)
                if projection.mask_rows.per_query else None)
        if c.regions.get("stage") is None:
            c.regions["stage"] = lw.alloc(Buffer.VBUF, projection.stage_rows(c) * c.width)
        return BlockSpill(spa, prob, slot)

    def free(self, lw: Lowering) -> None:
        if self.mask_slot is not None:
            lw.free(Buffer.VBUF, self.mask_slot)

    def row_offset(self, c: Chain, b: int, h: int, r0: int) -> int:
        """Element offset of row r0 of head h of batch element b in a [B, H, L, L] scratch."""
        return ((b * c.heads + h) * c.length + r0) * c.length


def emit_block(lw: Lowering, c: Chain, projection: WholeProjection | StreamedProjection,
               keys: HeadKeys, masks: MaskTiles, spill: BlockSpill, b: int, r0: int,
               rows: int) -> None:
    """Both steps for rows [r0, r0 + rows) of batch element b (see the module docstring)."""
    from esact_cc.passes.lower_spls_to_esact import emit_similarity

    _predict_block(lw, c, projection, keys, spill, b, r0, rows)
    for q0, n in c.chunks:
        if r0 <= q0 < r0 + rows:
            prob = _load_chunk(lw, c, spill, b, q0, n)
            emit_similarity(lw, c, masks, b, q0, n, c.regions["spa"], prob)


def _predict_block(lw: Lowering, c: Chain, projection: WholeProjection | StreamedProjection,
                   keys: HeadKeys, spill: BlockSpill, b: int, r0: int, rows: int) -> None:
    """Step 1: every head's SPA (and prob) rows of the block, STOREd to the scratch."""
    from esact_cc.passes.lower_spls_to_esact import emit_scores

    r, length, d = c.regions, c.length, c.head_dim
    mask_rows, spa = projection.mask_rows, r["spa"]
    prob = r["pam"] if spill.prob is not None else None
    q_codes = projection.q_codes(lw, c, b, r0, rows)
    for h, k_at, k_stride in keys.heads(lw, c, b, r0):
        if mask_rows.per_query:
            mask = {"add_mask_addr": _block_mask_rows(c, mask_rows, spill, b, h, r0, rows),
                    "add_mask_rows": 1}
        else:
            mask = {"add_mask_addr": mask_rows.row(b, h)} if mask_rows.present else {}
        emit_scores(lw, c, b, r0, rows, (q_codes + h * d, k_at, k_stride), spa, prob, mask)
        lw.store_(Buffer.MBUF, spa, spill.spa.address + spill.row_offset(c, b, h, r0), rows,
                  length)
        if prob is not None and spill.prob is not None:
            lw.store_(Buffer.VBUF, prob, spill.prob.address
                      + spill.row_offset(c, b, h, r0) * F32, rows, length)


def _block_mask_rows(c: Chain, mask_rows: MaskRows, spill: BlockSpill, b: int, h: int, r0: int,
                     rows: int) -> int:
    """VBUF address of the block's rows of head h's per-query mask; a mask every head shares
    ([B, 1, L, L]) is LOADed once per block."""
    assert spill.mask_slot is not None
    shared = mask_rows.shape[1] == 1
    if not shared or spill.loaded_mask != (b, r0):
        mask_rows.fresh_rows(b, h, r0, rows, into=spill.mask_slot)
        spill.loaded_mask = (b, r0) if shared else None
    return spill.mask_slot


def _load_chunk(lw: Lowering, c: Chain, spill: BlockSpill, b: int, r0: int, n: int
                ) -> int | None:
    """Step 2's input: the chunk's SPA (and prob) rows of every head, [H, n, L], LOADed into
    the chunk regions (one LOAD per buffer, a head's n rows being contiguous in the scratch,
    unless n x L exceeds a field). Returns the prob rows' address, or None."""
    r, length, heads = c.regions, c.length, c.heads
    targets = [(Buffer.MBUF, r["spa"], spill.spa, 1)]
    if spill.prob is not None:
        targets.append((Buffer.VBUF, r["pam"], spill.prob, F32))
    for buf, at, scratch, size in targets:
        first = scratch.address + spill.row_offset(c, b, 0, r0) * size
        if n * length <= MAX_DIM:
            lw.load(buf, at, first, heads, n * length, dram_stride=length * length * size)
        else:
            for h in range(heads):
                lw.load(buf, at + h * n * length, first + h * length * length * size, n, length)
    return r["pam"] if spill.prob is not None else None
