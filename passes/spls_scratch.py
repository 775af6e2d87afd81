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
