"""Round-robin allocation of on-chip buffer regions (the lowering's double buffering).

`RingAllocator` (buffers holding tiles of many sizes: ABUF, VBUF, MBUF): a new region starts
where the previous one ended and wraps to the start when it would run past the end, skipping
live regions and, while it can, the most recently freed ones. `BankAllocator` (buffers holding
one kind of tile: WBUF weights, ACC accumulators): the buffer is split into equal banks used in
turn, so tile n+1 never lands on tile n whatever the tile sizes. Either way consecutive tiles
use different regions, a load of tile n+1 overlaps the compute on tile n, and `schedule`
orders each reuse after the region's last reader (write-after-read tokens). Addresses are in
elements of the buffer's type.
"""

from __future__ import annotations

from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.hw_config import HardwareConfig
from esact_cc.runtime.isa import Buffer, buffer_elements

BANKED_BUFFERS = (Buffer.WBUF, Buffer.ACC)
"""Buffers holding one kind of tile each (weights, accumulators): two banks, used in turn."""


class RingAllocator:
    """Regions of one buffer; `alloc` returns a start address, `release` frees it."""

    def __init__(self, name: str, capacity: int):
        self.name = name
        self.capacity = capacity
        self.cursor = 0
        self.live: dict[int, int] = {}  # start -> end of regions in use
        self.recent: list[tuple[int, int]] = []  # the last RECENT freed regions, newest last

    RECENT = 2

    def alloc(self, size: int) -> int:
        size = max(1, size)
        if size > self.capacity:
            raise CompileError(
                f"{self.name}: a tile of {size} elements does not fit the buffer ({self.capacity} elements)"
            )
        start = None
        for avoid in (self.recent, ()):
            start = self._first_fit(self.cursor, size, avoid)
            if start is None:
                start = self._first_fit(0, size, avoid)
            if start is not None:
                break
        if start is None:
            used = sum(e - s for s, e in self.live.items())
            raise CompileError(
                f"{self.name}: no room for {size} elements ({used} of {self.capacity} held by live tiles)"
            )
        self.live[start] = start + size
        self.cursor = start + size
        return start

    def release(self, start: int) -> None:
        self.recent = [*self.recent, (start, self.live.pop(start))][-self.RECENT:]

    def largest_free(self) -> int:
        """The longest run of addresses no live tile holds: the largest tile `alloc` can give."""
        best, pos = 0, 0
        for start, end in sorted(self.live.items()):
            best, pos = max(best, start - pos), max(pos, end)
        return max(best, self.capacity - pos)

    def _first_fit(self, pos: int, size: int, avoid) -> int | None:
        blocked = [*self.live.items(), *avoid]
        while pos + size <= self.capacity:
            clash = [end for start, end in blocked if start < pos + size and pos < end]
            if not clash:
                return pos
            pos = max(clash)
        return None


class BankAllocator:
    """Equal banks used in turn; a tile must fit one bank."""

    def __init__(self, name: str, capacity: int, banks: int = 2):
        self.name = name
        self.capacity = capacity
        self.bank_size = capacity // banks
        self.banks = banks
        self.next = 0
        self.live: set[int] = set()

    def alloc(self, size: int) -> int:
        if size > self.bank_size:
            raise CompileError(
                f"{self.name}: a tile of {size} elements does not fit a bank ({self.bank_size} elements)"
            )
        for step in range(self.banks):
            bank = (self.next + step) % self.banks
            if bank not in self.live:
                self.live.add(bank)
                self.next = bank + 1
                return bank * self.bank_size
        raise CompileError(f"{self.name}: all {self.banks} banks hold live tiles")

    def release(self, start: int) -> None:
        self.live.remove(start // self.bank_size)

    def free_banks(self) -> int:
        """Banks no live tile holds: tiles that can be live together from now on."""
        return self.banks - len(self.live)


def buffer_allocators(config: HardwareConfig) -> dict[Buffer, RingAllocator | BankAllocator]:
    """One allocator per on-chip buffer of `config`, each with its policy."""
    return {b: (BankAllocator if b in BANKED_BUFFERS else RingAllocator)(b.name, buffer_elements(config, b))
            for b in Buffer}
