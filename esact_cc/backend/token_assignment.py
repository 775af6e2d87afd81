"""Dependency-token assignment for an in-order multi-queue program (the core of `schedule`).

Input: instructions in a valid sequential order, each with its queue and the memory regions it
reads and writes (buffer or DRAM byte/element intervals). Output: per instruction the set of
queues it must pop a token from and the set of queues it pushes a token to, such that every
read-after-write, write-after-read and write-after-write conflict between two queues is
ordered, and the token streams pair up (the k-th pop on channel A->B meets the k-th push).

Why it cannot deadlock: every pop is paired with a push by an instruction that comes earlier
in the given sequential order, so executing the program in that order satisfies every pop.

Per channel A->B we remember the last A instruction B has already synchronised with; a new
dependency on an A instruction at or before it is implied (queues run in order) and needs no
token. A dependency is only ever recorded on the latest conflicting instruction per queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from esact_cc.backend.region_history import HistoryEntry, RegionHistory

BUCKET_BITS = {"dram": 18}
"""Address bucket width (log2, in the space's units) of each space's history; others 16
(measured on BERT-base programs: narrower buckets cost more in bookkeeping than they save)."""


@dataclass(frozen=True)
class Region:
    """A half-open interval [start, end) of one memory space (a buffer name or "dram")."""

    space: str
    start: int
    end: int


@dataclass
class Access:
    """What one instruction touches."""

    queue: int
    reads: Sequence[Region] = ()
    writes: Sequence[Region] = ()
    barrier: bool = False
    """Wait for every earlier instruction of every queue (used for `halt`)."""


@dataclass
class Tokens:
    """Queues to pop from before starting / push to after finishing."""

    pop: set[int] = field(default_factory=set)
    push: set[int] = field(default_factory=set)


def assign_tokens(accesses: Sequence[Access], untracked_spaces: frozenset[str] = frozenset()) -> list[Tokens]:
    """Tokens for every instruction (see the module docstring)."""
    history: dict[str, RegionHistory] = {}
    synced: dict[int, dict[int, int]] = {}  # dst queue -> src queue -> last src index synced
    result = [Tokens() for _ in accesses]
    last_of_queue: dict[int, int] = {}
    for i, acc in enumerate(accesses):
        queue = acc.queue
        latest: dict[int, int] = {}  # queue -> latest conflicting instruction index
        ordered = synced.get(queue)
        if ordered is None:
            ordered = synced[queue] = {}
        if acc.barrier:
            latest = {q: j for q, j in last_of_queue.items() if q != queue}
        for regions, is_write in ((acc.reads, False), (acc.writes, True)):
            for region in regions:
                if region.end <= region.start or region.space in untracked_spaces:
                    continue
                space = history.get(region.space)
                if space is not None:
                    space.latest_conflicts(region.start, region.end, queue, is_write, latest,
                                           ordered)
        for src, j in latest.items():
            if ordered.get(src, -1) >= j:
                continue
            result[j].push.add(queue)
            result[i].pop.add(src)
            ordered[src] = j
        last_of_queue[queue] = i
        for region in acc.writes:
            if region.end <= region.start or region.space in untracked_spaces:
                continue
            entries = history.get(region.space) or _history_of(history, region.space)
            # A newer write covering an older access shadows it: anything that later conflicts
            # with the old access conflicts with this write, which is ordered after the old one.
            entries.remove_covered(region.start, region.end)
            entries.add(HistoryEntry(region.start, region.end, i, queue, True))
        for region in acc.reads:
            if region.end <= region.start or region.space in untracked_spaces:
                continue
            entries = history.get(region.space) or _history_of(history, region.space)
            entries.add(HistoryEntry(region.start, region.end, i, queue, False))
    return result


def _history_of(history: dict[str, RegionHistory], space: str) -> RegionHistory:
    if space not in history:
        history[space] = RegionHistory(BUCKET_BITS.get(space, 16))
    return history[space]
