"""Ring and bank allocators: consecutive tiles never share a region while another fits, live
regions are never handed out twice, and overflow is a one-line CompileError."""

from __future__ import annotations

import pytest
from esact_cc.runtime.errors import CompileError

from esact_cc.backend.sram_allocator import BankAllocator, RingAllocator


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_ring_moves_on_and_skips_live_and_recent_regions() -> None:
    ring = RingAllocator("VBUF", 100)
    a = ring.alloc(40)
    b = ring.alloc(40)
    assert (a, b) == (0, 40)
    ring.release(a)
    c = ring.alloc(30)  # wraps; region a was just freed but is the only room
    assert c == 0
    ring.release(b)
    ring.release(c)
    d = ring.alloc(20)  # the two most recently freed regions are avoided while possible
    assert not overlaps((d, d + 20), (40, 80)) and not overlaps((d, d + 20), (0, 30))


def test_ring_never_overlaps_live_regions() -> None:
    ring = RingAllocator("ABUF", 64)
    live = {}
    for step, size in enumerate([10, 16, 5, 14, 12, 7, 15, 3, 16, 9, 11]):
        start = ring.alloc(size)
        for s, e in live.values():
            assert not overlaps((start, start + size), (s, e))
        live[step] = (start, start + size)
        if len(live) > 2:  # keep the two newest tiles live, as a double-buffered loop does
            ring.release(live.pop(min(live))[0])
    with pytest.raises(CompileError, match="ABUF: no room"):
        ring.alloc(60)
    with pytest.raises(CompileError, match="does not fit the buffer"):
        ring.alloc(65)


def test_banks_alternate() -> None:
    banks = BankAllocator("WBUF", 100)
    a = banks.alloc(50)
    b = banks.alloc(10)
    assert (a, b) == (0, 50)
    banks.release(a)
    assert banks.alloc(30) == 0
    with pytest.raises(CompileError, match="all 2 banks"):
        banks.alloc(1)
    with pytest.raises(CompileError, match="does not fit a bank"):
        BankAllocator("ACC", 100).alloc(51)


def test_ring_largest_free_is_the_longest_gap_between_live_regions() -> None:
    ring = RingAllocator("ABUF", 100)
    assert ring.largest_free() == 100
    a, b, c = ring.alloc(10), ring.alloc(30), ring.alloc(20)  # [0,10) [10,40) [40,60)
    assert ring.largest_free() == 40  # [60, 100)
    ring.release(b)  # a freed region counts as free again: gap [10, 40)
    assert ring.largest_free() == 40
    ring.alloc(35)  # [60, 95)
    assert ring.largest_free() == 30  # [10, 40); [95, 100) is shorter
    ring.release(a)
    assert ring.largest_free() == 40  # [0, 40)
    assert c == 40
