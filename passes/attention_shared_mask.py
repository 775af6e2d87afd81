"""The query tiles' rows of a per-query additive mask every head reads alike ([B, 1, Lq, Lk],
e.g. BERT's expanded padding mask), for `passes/lower_attention.py`: each tile's rows are
LOADed once for a head group's heads (not once per head), and the first tiles stay resident in
VBUF across the batch element's head groups, as many as fit beside the attention's own tiles
(so they are LOADed once per batch element, not once per head group). K / V of all the heads
do not fit ABUF at long sequences, so the head groups stay the outer loop (query tiles
outer would reLOAD K / V per tile); the tiles that do not fit stay LOADed per head group.
"""

from __future__ import annotations

import copy
import weakref

from esact_cc.passes.lower_masked_inputs import MaskRows
from esact_cc.passes.lowering_state import Lowering
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import Buffer

MARGIN_FRACTION = 64
"""1 / this of VBUF stays free beside the resident tiles for the ops lowered beside the
attention (an SPLS projection's tiles)."""
BESIDE_TILES = 4
"""[tq, Lk] FP32 tiles that must still fit beside the resident ones: the attention holds one
score tile and one non-resident mask tile at a time; twice that, as the ring allocator's
cursor and live output tiles split the free space (with 2, BERT-base 512 top-k found no
room for a score tile; 4 keeps one tile of slack over the 3 that compiled)."""


_HANDED_OVER: weakref.WeakKeyDictionary[Lowering, dict[int, int]] = weakref.WeakKeyDictionary()
"""Per lowering: DRAM address of a mask -> the VBUF tile of its [Lq, Lk] block (batch 1)."""


def hand_over_block(lw: Lowering, mask_address: int, vbuf: int) -> None:
    """The VBUF tile `vbuf` holds the whole [Lq, Lk] block of the per-query mask at DRAM
    `mask_address`, every head's (an SPLS chain LOADed it, passes/spls_chain_masks.py): the
    attention reading that mask next reads it there and frees it."""
    _HANDED_OVER.setdefault(lw, {})[mask_address] = vbuf


class ResidentMaskTiles:
    """Query tiles [(first row, rows)] of one attention op's mask: `rows` gives a tile's VBUF
    rows when the mask is shared by the heads (LOADed now, or resident since an earlier head
    group; None: the heads add their own rows), `release` frees what is not resident;
    `begin_batch` / `end_batch` hold the resident ones for one batch element (its head groups
    share them; the next batch element's block is another)."""

    def __init__(self, lw: Lowering, mask_rows: MaskRows, q_tiles: list[tuple[int, int]],
                 widths: tuple[int, int], heads: tuple[int, int], resident: bool):
        """widths: (keys, value head width); heads: (heads, heads per group); resident: whether
        every tile covers all keys (no causal / window key skipping), so tiles may stay."""
        self.lw, self.mask_rows, self.lk = lw, mask_rows, widths[0]
        self.active = mask_rows.shared_by_heads and heads[0] > 1
        self.given = None if mask_rows.tensor is None \
            else _HANDED_OVER.get(lw, {}).pop(mask_rows.tensor.address, None)
        """The whole block an SPLS chain LOADed (batch 1; `hand_over_block`): read there."""
        groups = -(-heads[0] // heads[1])
        keep = self.active and resident and groups > 1 and self.given is None
        self.resident = q_tiles[:_tiles_that_fit(lw, q_tiles, widths)] if keep else []
        self.slots: dict[int, int] = {}  # first row -> VBUF address, of the resident tiles
        self.loaded: set[int] = set()

    def begin_batch(self) -> None:
        """Room for the resident tiles (LOADed at their first head group's use)."""
        self.slots = {r0: self.lw.alloc(Buffer.VBUF, tq * self.lk) for r0, tq in self.resident}

    def rows(self, b: int, h0: int, r0: int, tq: int, all_keys: bool) -> int | None:
        """VBUF address of query rows [r0, r0 + tq) of batch element b's mask block (None: not
        shared, or the tile computes over part of the keys: the heads add their own)."""
        if not self.active or not all_keys:
            return None
        if self.given is not None:
            return self.given + r0 * self.lk
        if r0 not in self.slots:
            return self.mask_rows.fresh_rows(b, h0, r0, tq)
        if r0 not in self.loaded:
            self.mask_rows.fresh_rows(b, h0, r0, tq, into=self.slots[r0])
            self.loaded.add(r0)
        return self.slots[r0]

    def release(self, r0: int, addr: int | None) -> None:
        """Done with a tile for this head group: freed unless resident."""
        if addr is not None and r0 not in self.slots and self.given is None:
            self.lw.free(Buffer.VBUF, addr)

    def end_batch(self) -> None:
        """The batch element's last head group is done: the resident tiles go."""
        self.lw.free(Buffer.VBUF, *self.slots.values(), *([self.given] if self.given is not None else []))
        self.slots, self.loaded, self.given = {}, set(), None


def _tiles_that_fit(lw: Lowering, q_tiles: list[tuple[int, int]], widths: tuple[int, int]) -> int:
    """How many of the first query tiles' mask rows VBUF holds beside what the attention
    allocates while they are resident (tried on a copy of the VBUF allocator: live regions
    split the free space into runs): one FP32 score tile, one non-resident mask tile, three
    heads' output tiles and row scales, and a margin for the ops lowered beside it."""
    lk, dv = widths
    tq = max(t for _, t in q_tiles)
    beside = [*([tq * lk] * BESIDE_TILES), *([tq * dv, tq] * 3),
              lw.capacity(Buffer.VBUF) // MARGIN_FRACTION]
    ring = copy.deepcopy(lw.rings[Buffer.VBUF])
    fit = 0
    try:
        for _, rows in q_tiles:
            ring.alloc(rows * lk)
            trial = copy.deepcopy(ring)
            for size in beside:
                trial.alloc(size)
            fit += 1
    except CompileError:
        pass
    return fit
