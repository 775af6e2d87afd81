"""assign_tokens with bucketed region histories gives exactly the tokens of the flat-list
algorithm it replaced (kept here as the reference), on random programs whose regions span
many buckets; RegionHistory alone answers overlap queries like a brute-force scan."""

from __future__ import annotations

import random

import pytest

from esact_cc.backend.region_history import HistoryEntry, RegionHistory
from esact_cc.backend.token_assignment import Access, Region, Tokens, assign_tokens


def flat_list_tokens(accesses: list[Access]) -> list[Tokens]:
    """The former assign_tokens: every live access in one list per space, scanned in full."""
    history: dict[str, list[HistoryEntry]] = {}
    synced: dict[tuple[int, int], int] = {}
    result = [Tokens() for _ in accesses]
    last_of_queue: dict[int, int] = {}
    for i, acc in enumerate(accesses):
        latest = {q: j for q, j in last_of_queue.items() if q != acc.queue} if acc.barrier else {}
        for region, is_write in [(r, False) for r in acc.reads] + [(r, True) for r in acc.writes]:
            for e in history.get(region.space, ()):
                if e.queue != acc.queue and (is_write or e.write) and e.start < region.end \
                        and region.start < e.end and e.index > latest.get(e.queue, -1):
                    latest[e.queue] = e.index
        for src, j in latest.items():
            if synced.get((src, acc.queue), -1) < j:
                result[j].push.add(acc.queue)
                result[i].pop.add(src)
                synced[(src, acc.queue)] = j
        last_of_queue[acc.queue] = i
        for region in acc.writes:
            entries = history.setdefault(region.space, [])
            entries[:] = [e for e in entries if not (region.start <= e.start and e.end <= region.end)]
            entries.append(HistoryEntry(region.start, region.end, i, acc.queue, True))
        for region in acc.reads:
            history.setdefault(region.space, []).append(
                HistoryEntry(region.start, region.end, i, acc.queue, False))
    return result


def random_region(rng: random.Random) -> Region:
    # Addresses over several 2^16 / 2^18 buckets; sizes from one unit to several buckets, and
    # a few fixed tiles read again and again (the pattern the same-queue pruning removes).
    if rng.random() < 0.3:
        start = rng.choice((0, 1 << 16, 3 << 16))
        return Region(rng.choice(("ABUF", "dram")), start, start + (1 << 15))
    start = rng.randrange(0, 1 << 20)
    return Region(rng.choice(("ABUF", "VBUF", "dram")), start, start + rng.choice(
        (1, rng.randrange(1, 1 << 12), rng.randrange(1, 1 << 19))))


@pytest.mark.parametrize("seed", range(6))
def test_tokens_equal_the_flat_list_algorithm(seed: int) -> None:
    rng = random.Random(seed)
    program = [Access(rng.randrange(4), [random_region(rng) for _ in range(rng.randrange(3))],
                      [random_region(rng) for _ in range(rng.randrange(2))])
               for _ in range(400)] + [Access(1, barrier=True)]
    got, expected = assign_tokens(program), flat_list_tokens(program)
    assert [(t.pop, t.push) for t in got] == [(t.pop, t.push) for t in expected]
    assert sum(len(t.pop) for t in got) > 50  # the programs do conflict


def test_overlapping_matches_a_scan_and_skips_removed_entries() -> None:
    rng = random.Random(7)
    history, entries = RegionHistory(bucket_bits=3), []
    for index in range(300):
        start = rng.randrange(0, 200)
        entry = HistoryEntry(start, start + rng.randrange(1, 40), index, rng.randrange(3), True)
        if rng.random() < 0.2:
            cover = (rng.randrange(0, 200), rng.randrange(200, 260))
            history.remove_covered(*cover)
            entries = [e for e in entries if not (cover[0] <= e.start and e.end <= cover[1])]
        history.add(entry)
        entries.append(entry)
        lo = rng.randrange(0, 230)
        hi = lo + rng.randrange(1, 50)
        found = list(history.overlapping(lo, hi))
        assert len(found) == len(set(map(id, found)))  # each entry once
        assert {id(e) for e in found} == {id(e) for e in entries if e.start < hi and lo < e.end}


@pytest.mark.parametrize("seed", range(3))
def test_tokens_with_strided_spans_over_the_whole_space_equal_the_flat_list(seed: int) -> None:
    """SPLS-like DRAM traffic: one queue's LOADs whose span covers most of a tensor (rows of
    one head out of all heads), another queue's small STOREs into it, a third queue in
    between: the newest-first lookup that stops per queue gives the flat list's tokens."""
    rng = random.Random(100 + seed)
    program = []
    for _ in range(600):
        kind = rng.random()
        if kind < 0.4:
            start = rng.randrange(0, 1 << 12)
            program.append(Access(0, reads=[Region("dram", start, start + rng.randrange(
                (1 << 21) - (1 << 13), 1 << 21))], writes=[Region("ABUF", 0, 1 << 10)]))
        elif kind < 0.8:
            start = rng.randrange(0, 1 << 21)
            program.append(Access(3, reads=[Region("VBUF", 0, 1 << 9)],
                                  writes=[Region("dram", start, start + rng.randrange(1, 1 << 13))]))
        else:
            program.append(Access(1, reads=[Region("ABUF", 0, 1 << 10)],
                                  writes=[Region("VBUF", 0, 1 << 9)]))
    got, expected = assign_tokens(program), flat_list_tokens(program)
    assert [(t.pop, t.push) for t in got] == [(t.pop, t.push) for t in expected]
    assert sum(len(t.pop) for t in got) > 100
