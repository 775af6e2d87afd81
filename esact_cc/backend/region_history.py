"""The live accesses of one memory space, found by address in time independent of their count.

`token_assignment.assign_tokens` asks, for every region an instruction touches, the latest
earlier access of each other queue that conflicts with it. A flat list made that quadratic in
the program: DRAM reads of weights are never shadowed by a later write, so BERT-base at 2048
tokens (12 layers, ~140k instructions) scanned tens of thousands of entries per access. Here
every entry is filed under each fixed-width address bucket it touches, per (queue, read or
write) in program order, so a lookup visits only the entries near the region, newest first,
and stops per queue at the first conflict or at the last access that queue is known to be
ordered after (`latest_conflicts`): strided LOADs whose span covers a whole tensor (SPLS rows
of all heads) sit in every bucket of it and would otherwise be scanned by every access there.
Entries a later access shadows are also found by the bucket their start lies in, by start
address (`StartIndex`), so removing them visits only entries starting inside the region, each
once however many buckets it spans.
Which entries are live, and so every answer, is exactly what the flat list held.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

Lists = dict[tuple[int, bool], list["HistoryEntry"]]
"""(queue, write) -> that queue's reads or writes in one bucket, oldest first."""

DEAD_BEFORE_COMPACTING = 32
"""Removed entries a newest-first scan may step over in one list before it drops them all."""


@dataclass
class StartIndex:
    """The entries of one (queue, read / write) slot that start in one bucket, by start
    address (sorted), so those inside a region are found without visiting the others."""

    starts: list[int] = field(default_factory=list)
    at: dict[int, list[HistoryEntry]] = field(default_factory=dict)

    def add(self, entry: HistoryEntry) -> None:
        if entry.start not in self.at:
            bisect.insort(self.starts, entry.start)
            self.at[entry.start] = []
        self.at[entry.start].append(entry)

    def remove_inside(self, start: int, end: int) -> None:
        """Remove (and mark removed) the entries inside [start, end)."""
        starts = self.starts
        lo, hi = bisect.bisect_left(starts, start), bisect.bisect_left(starts, end)
        if lo == hi:  # the usual case: nothing starts inside
            return
        at, emptied, kept_any = self.at, False, False
        for s in starts[lo:hi]:
            entries = at[s]
            if len(entries) == 1:  # most addresses hold one entry: no list to rebuild
                if entries[0].end <= end:
                    entries[0].live = False
                    del at[s]
                    emptied = True
                else:
                    kept_any = True
                continue
            kept = [e for e in entries if e.end > end]
            if len(kept) == len(entries):
                kept_any = True
                continue
            for e in entries:
                if e.end <= end:
                    e.live = False
            if kept:
                at[s] = kept
                kept_any = True
            else:
                del at[s]
                emptied = True
        if emptied:
            if kept_any:
                starts[lo:hi] = [s for s in starts[lo:hi] if s in at]
            else:
                del starts[lo:hi]


@dataclass(eq=False, slots=True)
class HistoryEntry:
    """One earlier access: [start, end) of the space, by instruction `index` on `queue`."""

    start: int
    end: int
    index: int
    queue: int
    write: bool
    live: bool = True


class RegionHistory:
    """Live entries of one space, bucketed by address (2^bucket_bits units per bucket)."""

    def __init__(self, bucket_bits: int) -> None:
        self._bits = bucket_bits
        self._buckets: dict[int, Lists] = {}  # every bucket an entry touches
        self._starts: dict[int, dict[tuple[int, bool], StartIndex]] = {}
        """The bucket an entry starts in -> its slot's entries there."""

    def _keys(self, start: int, end: int) -> range:
        return range(start >> self._bits, ((end - 1) >> self._bits) + 1)

    def latest_conflicts(self, start: int, end: int, queue: int, write: bool,
                         latest: dict[int, int], ordered: dict[int, int]) -> None:
        """Raise latest[q] to the index of the newest live entry of each queue q != `queue`
        that overlaps the non-empty [start, end) and conflicts with this access (`write`, or
        the entry is a write), when it is newer than latest[q] and than ordered[q] (the last
        access of q this queue already waits for: anything before it is ordered anyway)."""
        buckets, bits = self._buckets, self._bits
        for key in range(start >> bits, ((end - 1) >> bits) + 1):
            slots = buckets.get(key)
            if not slots:
                continue
            for (q, is_write), entries in slots.items():
                if q == queue or not (write or is_write):
                    continue
                floor, dead = latest.get(q, -1), 0
                if ordered.get(q, -1) > floor:
                    floor = ordered[q]
                for e in reversed(entries):
                    if e.index <= floor:
                        break
                    if not e.live:
                        dead += 1
                    elif e.start < end and start < e.end:
                        latest[q] = e.index
                        break
                if dead > DEAD_BEFORE_COMPACTING:
                    entries[:] = [e for e in entries if e.live]

    def overlapping(self, start: int, end: int) -> list[HistoryEntry]:
        """Each live entry overlapping the non-empty [start, end), once."""
        first = start >> self._bits
        return [e for key in self._keys(start, end)
                for entries in self._buckets.get(key, {}).values() for e in entries
                if e.live and e.start < end and start < e.end
                # an entry in several of these buckets is reported from the first of them
                and (key == first or e.start >> self._bits == key)]

    def add(self, entry: HistoryEntry) -> None:
        if not entry.write:
            # An older read by the same queue inside this one never decides an answer again:
            # whatever conflicts with it (a write) conflicts with this later read too, and a
            # write covering this read covers it as well.
            self._remove_inside(entry.start, entry.end, (entry.queue, False))
        slot, buckets = (entry.queue, entry.write), self._buckets
        for key in self._keys(entry.start, entry.end):
            slots = buckets.get(key)
            if slots is None:
                buckets[key] = {slot: [entry]}
            elif slot in slots:
                slots[slot].append(entry)
            else:
                slots[slot] = [entry]
        starts = self._starts.setdefault(entry.start >> self._bits, {})
        index = starts.get(slot)
        if index is None:
            index = starts[slot] = StartIndex()
        index.add(entry)

    def remove_covered(self, start: int, end: int) -> None:
        """Remove every entry inside the non-empty [start, end)."""
        self._remove_inside(start, end, None)

    def _remove_inside(self, start: int, end: int, slot: tuple[int, bool] | None) -> None:
        """Remove the entries inside [start, end) (of one (queue, write) slot, or all): each
        starts in one of its buckets."""
        starts = self._starts
        for key in self._keys(start, end):
            slots = starts.get(key)
            if not slots:
                continue
            if slot is None:
                for index in slots.values():
                    index.remove_inside(start, end)
            else:
                index = slots.get(slot)
                if index is not None:
                    index.remove_inside(start, end)
