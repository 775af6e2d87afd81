"""On-chip scratch of the SPLS prediction chain (passes/lower_spls_to_esact.py): the ACC
slots its BPU products use (`PredictScratch`) and the ABUF / VBUF slots of its HLog weight-code
tiles (`weight_code_slots`)."""

from __future__ import annotations

from esact_cc.passes.lowering_state import Lowering
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import Buffer

CODE_SLOTS = 2
"""ABUF / VBUF slots for the HLog weight-code tiles and their DEQUANT vectors (double
buffered: the load of tile j + 2 waits for the BPU of tile j)."""


def weight_code_slots(lw: Lowering, codes: int, vectors: int,
                      count: int = CODE_SLOTS) -> list[tuple[int, int]]:
    """`count` (ABUF codes, VBUF DEQUANT vectors) tile slots, fewer (at least one) when
    the buffers hold fewer beside the prediction's other regions."""
    slots: list[tuple[int, int]] = []
    for _ in range(count):
        try:
            a = lw.alloc(Buffer.ABUF, codes)
        except CompileError:
            if slots:
                break
            raise
        try:
            slots.append((a, lw.alloc(Buffer.VBUF, vectors)))
        except CompileError:
            lw.free(Buffer.ABUF, a)
            if slots:
                break
            raise
    return slots


class PredictScratch:
    """ACC tiles of the prediction, at the TOP of each bank in turn.

    The dense lowering's banked ACC tiles start at the bank boundaries and rotate between
    banks; prediction tiles allocated the same way would overlap them, and `schedule` would
    order the K / V GEMMs after the BPU's last use of the bank (a false write-after-read
    dependency that serialises prediction and generation). Slots at the top of each bank stay
    clear of dense tiles up to bank - slot elements. The chain is emitted in one piece while
    no ACC tile is live, so the slots are safe in program order; tiles over a quarter of a
    bank come from the allocator as usual.
    """

    SLOT_FRACTION = 4  # a slot takes at most this fraction of a bank

    def __init__(self, lw: Lowering, buf: Buffer, size: int):
        self.lw, self.buf, self.size = lw, buf, size  # size: the largest tile asked for
        allocator = lw.rings[buf]
        bank = getattr(allocator, "bank_size", allocator.capacity)
        banks = allocator.capacity // bank
        usable = not allocator.live and size <= bank // self.SLOT_FRACTION
        self.slots = [(i + 1) * bank - size for i in reversed(range(banks))] if usable else []
        if len(self.slots) == 1:  # one region: two slots so consecutive tiles alternate
            self.slots.append(self.slots[0] - size)
        self.next = 0

    def alloc(self, size: int) -> int:
        if not self.slots:
            return self.lw.alloc(self.buf, size)
        addr = self.slots[self.next % len(self.slots)]
        self.next += 1
        return self.lw.pinned(self.buf, addr, size)

    def free(self, addr: int) -> None:
        if not self.slots:
            self.lw.free(self.buf, addr)


def chained_q_acc(lw: Lowering, size: int, row_tile: int) -> int | None:
    """ACC of row tile `row_tile` of the masked Q linear lowered beside an SPLS chain whose
    projection is emitted by groups of batch elements: pinned from the middle of bank
    `row_tile` % banks, clear of the allocator's tiles (from the bank starts) and of the
    prediction's slots (the top quarter, `PredictScratch`). The attention lowered after Q then
    shares no ACC address with a later group's Q tile, and `place "follow"` runs group g's
    attention on the MAC array before group g + 1's Q GEMMs, which wait for g + 1's prediction
    (digits ViT at batch 2: element 0's attention beside element 1's prediction). Safe in
    program order: no allocator tile is live while Q is lowered (checked), and the ordering
    step never swaps two instructions sharing an address. None (allocate as usual) when one
    is live or the tile exceeds a quarter of a bank."""
    allocator = lw.rings[Buffer.ACC]
    bank = getattr(allocator, "bank_size", 0)
    if not bank or allocator.live or size > bank // PredictScratch.SLOT_FRACTION:
        return None
    banks = allocator.capacity // bank
    return lw.pinned(Buffer.ACC, (row_tile % banks) * bank + bank // 2, size)
