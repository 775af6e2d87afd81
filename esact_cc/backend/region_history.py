"""The live accesses of one memory space, found by address in time independent of their count.

`token_assignment.assign_tokens` asks, for every region an instruction touches, which earlier
accesses overlap it. A flat list made that quadratic in the program: DRAM reads of weights are
never shadowed by a later write, so BERT-base at 2048 tokens (12 layers, ~140k instructions)
scanned tens of thousands of entries per access. Here every entry is filed under each
fixed-width address bucket it touches, so a lookup visits only the entries near the region.
Which entries are live, and so every answer, is exactly what the flat list held.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(eq=False)
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
        self._buckets: dict[int, list[HistoryEntry]] = {}

    def _bucket_range(self, start: int, end: int) -> range:
        return range(start >> self._bits, ((end - 1) >> self._bits) + 1)

    def overlapping(self, start: int, end: int) -> list[HistoryEntry]:
        """Each live entry overlapping the non-empty [start, end), once."""
        first, last = start >> self._bits, (end - 1) >> self._bits
        found: list[HistoryEntry] = []
        for key in range(first, last + 1):
            bucket = self._buckets.get(key)
            if not bucket:
                continue
            live = [e for e in bucket if e.live]
            if len(live) != len(bucket):  # drop removed entries as they are met
                bucket[:] = live
            # An entry in several of these buckets is reported from the first of them.
            found += [e for e in live if e.start < end and start < e.end
                      and (key == first or e.start >> self._bits == key)]
        return found

    def add(self, entry: HistoryEntry) -> None:
        if not entry.write:
            # An older read by the same queue inside this one never decides an answer again:
            # whatever conflicts with it (a write) conflicts with this later read too, and a
            # write covering this read covers it as well.
            for old in self.overlapping(entry.start, entry.end):
                if (old.queue == entry.queue and not old.write and entry.start <= old.start
                        and old.end <= entry.end):
                    old.live = False
        for key in self._bucket_range(entry.start, entry.end):
            self._buckets.setdefault(key, []).append(entry)

    def remove_covered(self, start: int, end: int) -> None:
        """Remove every entry inside the non-empty [start, end)."""
        for entry in self.overlapping(start, end):
            if start <= entry.start and entry.end <= end:
                entry.live = False
