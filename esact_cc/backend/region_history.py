"""The live accesses of one memory space, found by address in time independent of their count.

`token_assignment.assign_tokens` asks, for every region an instruction touches, which earlier
accesses overlap it. A flat list made that quadratic in the program: DRAM reads of weights are
never shadowed by a later write, so BERT-base at 2048 tokens (12 layers, ~140k instructions)
scanned tens of thousands of entries per access. Here every entry is filed under each
fixed-width address bucket it touches, so a lookup visits only the entries near the region.
Which entries are live, and so every answer, is exactly what the flat list held.
"""

from __future__ import annotations

from collections.abc import Iterator
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

    def overlapping(self, start: int, end: int) -> Iterator[HistoryEntry]:
        """Each live entry overlapping the non-empty [start, end), once."""
        seen: set[int] = set()
        for key in self._bucket_range(start, end):
            bucket = self._buckets.get(key)
            if not bucket:
                continue
            if not all(e.live for e in bucket):  # drop removed entries as they are met
                bucket[:] = [e for e in bucket if e.live]
            for entry in bucket:
                if entry.start < end and start < entry.end and id(entry) not in seen:
                    seen.add(id(entry))
                    yield entry

    def add(self, entry: HistoryEntry) -> None:
        if not entry.write:
            # An older read by the same queue inside this one never decides an answer again:
            # whatever conflicts with it (a write) conflicts with this later read too, and a
            # write covering this read covers it as well.
            for old in list(self.overlapping(entry.start, entry.end)):
                if (old.queue == entry.queue and not old.write and entry.start <= old.start
                        and old.end <= entry.end):
                    old.live = False
        for key in self._bucket_range(entry.start, entry.end):
            self._buckets.setdefault(key, []).append(entry)

    def remove_covered(self, start: int, end: int) -> None:
        """Remove every entry inside the non-empty [start, end)."""
        for entry in list(self.overlapping(start, end)):
            if start <= entry.start and entry.end <= end:
                entry.live = False
