"""Round-robin allocation of on-chip buffer regions (the lowering's double buffering).

Each buffer is a ring: a new region starts where the previous one ended and wraps to the
start when it would run past the end, skipping regions still live. Consecutive tiles so land
in different regions, and a load of tile n+1 can overlap the compute on tile n; a region is
only reused once the ring comes round, and `schedule` orders that reuse after the region's
last reader (write-after-read tokens). Addresses are in elements of the buffer's type.
"""

from __future__ import annotations

from esact_cc.runtime.errors import CompileError


class RingAllocator:
    """Regions of one buffer; `alloc` returns a start address, `release` frees it."""

    def __init__(self, name: str, capacity: int):
        self.name = name
        self.capacity = capacity
        self.cursor = 0
        self.live: dict[int, int] = {}  # start -> end of regions in use

    def alloc(self, size: int) -> int:
        size = max(1, size)
        if size > self.capacity:
            raise CompileError(
                f"{self.name}: a tile of {size} elements does not fit the buffer ({self.capacity} elements)"
            )
        start = self._first_fit(self.cursor, size)
        if start is None:
            start = self._first_fit(0, size)
        if start is None:
            used = sum(e - s for s, e in self.live.items())
            raise CompileError(
                f"{self.name}: no room for {size} elements ({used} of {self.capacity} held by live tiles)"
            )
        self.live[start] = start + size
        self.cursor = start + size
        return start

    def release(self, start: int) -> None:
        del self.live[start]

    def _first_fit(self, pos: int, size: int) -> int | None:
        while pos + size <= self.capacity:
            clash = [end for start, end in self.live.items() if start < pos + size and pos < end]
            if not clash:
                return pos
            pos = max(clash)
        return None
