"""The timing model's event simulation in Python and numpy: the reference the compiled
run_events (timing_events.py, runtime/_timing_loop.c) is tested against, step for step the
same (timing_events.py says what it does and why). Tests only: it is 2-4x slower.
"""

# The event loop raises times with `if a < b: a = b`, not max(): a builtin call per
# instruction was what the loop was made to avoid when it ran the model.
# ruff: noqa: PLR1730, FURB136

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

from ..collector_pause import collector_paused
from .timing_events import NEVER, Events, match_tokens


def mask_bits(n_queues: int) -> tuple[tuple[int, ...], ...]:
    """mask_bits(n)[mask]: the queue indices set in mask."""
    return tuple(
        tuple(b for b in range(n_queues) if mask >> b & 1) for mask in range(1 << n_queues)
    )


def _pop_producers(producer: list[np.ndarray | None], pops: np.ndarray, n: int
                   ) -> tuple[np.ndarray, np.ndarray, dict[int, tuple[int, ...]]]:
    """One entry per instruction plus one for the end-of-queue sentinel n: first[i]: the
    producer of instruction i's lowest-bit pop (n + 1, a slot that is always ready, for an
    instruction that pops nothing; n, never ready, for the sentinel); more[i]: 0 for at most
    one pop, 1 + the producer of the second for exactly two, -1 for three or more, whose
    other producers are extra[i] (rare)."""
    first = np.full(n + 1, n + 1, dtype=np.int64)
    first[n] = n
    more = np.zeros(n + 1, dtype=np.int64)
    taken = np.zeros(n, dtype=np.int64)  # pops placed so far, lowest queue bit first
    extra: dict[int, list[int]] = {}
    for src, column in enumerate(producer):
        if column is None:
            continue
        popping = np.flatnonzero(pops >> src & 1)
        rank = taken[popping]
        lowest = popping[rank == 0]
        first[lowest] = column[lowest]
        second = popping[rank == 1]
        more[second] = column[second] + 1
        for i in popping[rank >= 2].tolist():  # three or more pops: rare
            extra.setdefault(i, [int(more[i]) - 1]).append(int(column[i]))
        taken[popping] += 1
    more[list(extra)] = -1
    return first, more, {i: tuple(p) for i, p in extra.items()}


def queue_chains(queues: np.ndarray, nq: int) -> tuple[list[int], np.ndarray]:
    """(heads, following): each queue's first instruction (n if it has none) and the next
    instruction of the same queue after each one (n after its last; queue order is program
    order)."""
    n = len(queues)
    heads = [n] * nq
    following = np.full(n, n, dtype=np.int64)
    for q in range(nq):
        members = np.flatnonzero(queues == q)
        if members.size:
            heads[q] = int(members[0])
            following[members[:-1]] = members[1:]
    return heads, following


def run_events_python(queues: np.ndarray, pops: np.ndarray, pushes: np.ndarray,
                      cycles: np.ndarray, dram: np.ndarray, nq: int, heap_queues: Sequence[int],
                      lat: int) -> Events:
    """timing_events.run_events in Python."""
    n = len(queues)
    producer = match_tokens(queues, pops, pushes, nq)
    with collector_paused():  # the loop's lists and heap entries would trigger collections
        start, end, head, processed = _python_loop(queues, pops, pushes, cycles, dram, producer,
                                                   heap_queues, lat)
    start_arr, end_arr = np.array(start, dtype=np.int64), np.array(end, dtype=np.int64)
    ready, stall = np.zeros(n, dtype=np.int64), np.zeros((nq, nq + 1), dtype=np.int64)
    busy = np.array([int(cycles[queues == q].sum()) for q in range(nq)], dtype=np.int64)
    if len(processed) == n:
        stall, ready = stalls_and_ready(queues, producer, pops, dram, start_arr, end_arr[:n],
                                        lat)
    return Events(start_arr, end_arr, head, np.array(processed, dtype=np.int64), ready, stall,
                  busy)


def _python_loop(queues: np.ndarray, pops: np.ndarray, pushes: np.ndarray, cycles: np.ndarray,
                 dram: np.ndarray, producer: list[np.ndarray | None], heap_queues: Sequence[int],
                 lat: int) -> tuple[list[int], list[int], list[int], list[int]]:
    n = len(queues)
    nq = len(producer)
    head, following_arr = queue_chains(queues, nq)
    following = following_arr.tolist()
    first_arr, more_arr, extra = _pop_producers(producer, pops, n)
    first, more = first_arr.tolist(), more_arr.tolist()
    cycle = cycles.tolist()
    port = dram.tolist()
    # tokens a queue pushes to itself need no wake-up: its next head is checked anyway
    wake = (pushes & ~(1 << queues)).tolist()  # a mask: most instructions wake no queue
    bits = mask_bits(nq)
    eager = [q not in heap_queues for q in range(nq)]
    free = [0] * nq
    in_heap = [False] * nq
    start = [0] * n
    # end[i] + lat: when instruction i's tokens are visible. NEVER before it has run;
    # end[n]: the producer of a token never pushed (and of the end-of-queue sentinel's
    # pop); end[n + 1]: of a pop that is not there.
    never = NEVER
    end = [never] * n + [never, -lat]
    processed: list[int] = []
    processed_append = processed.append
    heap: list[tuple[int, int]] = []
    heappush, heappop, heappushpop = heapq.heappush, heapq.heappop, heapq.heappushpop

    def ready(i: int, t: int) -> int:
        """t raised to the arrival of instruction i's second and further tokens."""
        m = more[i]
        if m > 0:
            r = end[m - 1] + lat
            return r if r > t else t
        for p in extra[i]:
            r = end[p] + lat
            if t < r:
                t = r
        return t

    def woken(w: int, stack: list[int]) -> None:
        """Queues in mask w got a token: an eager one is tried again (the stack), a heap
        queue's head goes on the heap once all its tokens are pushed."""
        for dst in bits[w]:
            if eager[dst]:
                stack.append(dst)
            elif not in_heap[dst]:
                h = head[dst]
                r = end[first[h]] + lat
                if r < free[dst]:
                    r = free[dst]
                if more[h]:
                    r = ready(h, r)
                if r < never:
                    heappush(heap, (r, h))
                    in_heap[dst] = True

    queue_of = queues.tolist()
    dram_free = 0
    stack = [q for q in range(nq) if eager[q]]
    stack_append = stack.append
    woken(sum(1 << q for q in range(nq) if not eager[q]), stack)

    while True:
        while stack:  # eager queues: time each head whose tokens are all pushed
            q = stack.pop()
            i = head[q]
            e = free[q]
            while True:
                t = end[first[i]] + lat
                m = more[i]
                if m > 0:  # the usual second token, inline
                    r = end[m - 1] + lat
                    if t < r:
                        t = r
                elif m:
                    t = ready(i, t)
                if t >= never:
                    break
                if t < e:
                    t = e
                start[i] = t
                e = t + cycle[i]
                end[i] = e
                processed_append(i)
                w = wake[i]
                if w:
                    for dst in bits[w]:
                        if eager[dst]:
                            stack_append(dst)
                        elif not in_heap[dst]:
                            h = head[dst]
                            r = end[first[h]] + lat
                            if r < free[dst]:
                                r = free[dst]
                            if more[h]:
                                r = ready(h, r)
                            if r < never:
                                heappush(heap, (r, h))
                                in_heap[dst] = True
                i = following[i]
            head[q] = i
            free[q] = e
        if not heap:
            break
        t, i = heappop(heap)
        while True:  # heap queues' heads in (ready, index) order while no eager one waits
            q = queue_of[i]
            d = port[i]
            if d:
                if t < dram_free:
                    t = dram_free
                dram_free = t + d
            start[i] = t
            e = t + cycle[i]
            end[i] = e
            free[q] = e
            processed_append(i)
            w = wake[i]
            if w:
                for dst in bits[w]:
                    if eager[dst]:
                        stack_append(dst)
                    elif not in_heap[dst]:
                        h = head[dst]
                        r = end[first[h]] + lat
                        if r < free[dst]:
                            r = free[dst]
                        if more[h]:
                            r = ready(h, r)
                        if r < never:
                            heappush(heap, (r, h))
                            in_heap[dst] = True
            i = head[q] = following[i]
            t = end[first[i]] + lat
            if t < e:
                t = e
            m = more[i]
            if m > 0:
                r = end[m - 1] + lat
                if t < r:
                    t = r
            elif m:
                t = ready(i, t)
            if t >= never:
                in_heap[q] = False
                break
            if stack:
                heappush(heap, (t, i))
                break
            t, i = heappushpop(heap, (t, i))
    return start, end, head, processed


def stalls_and_ready(queues: np.ndarray, producer: list[np.ndarray | None], pops: np.ndarray,
                     dram: np.ndarray, start: np.ndarray, end: np.ndarray, lat: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(stall[queue, cause], ready) of a finished schedule: ready[i] is when instruction i's
    queue was free and its last token had arrived; if that token came after the queue was
    free, the instruction stalled that long on the token's queue (the lowest queue bit among
    tokens arriving together); a DMA instruction then waited start - ready for the DRAM port
    (cause index nq)."""
    n, nq = len(queues), len(producer)
    free = np.zeros(n, dtype=np.int64)  # when the previous instruction of the queue ended
    for q in range(nq):
        members = np.flatnonzero(queues == q)
        free[members[1:]] = end[members[:-1]]
    ready = free.copy()
    cause = np.full(n, nq, dtype=np.int64)  # nq: no token waited for
    for src in reversed(range(nq)):  # a lower queue wins a tie: it is checked later
        column = producer[src]
        if column is not None:
            popping = np.flatnonzero(pops >> src & 1)
            arrival = end[column[popping]] + lat
            later = (arrival >= ready[popping]) & (arrival > free[popping])
            ready[popping[later]] = arrival[later]
            cause[popping[later]] = src
    stall = np.zeros((nq, nq + 1), dtype=np.int64)  # int64 sums: exact (bincount's are float)
    waited = np.flatnonzero(cause < nq)
    np.add.at(stall, (queues[waited], cause[waited]), ready[waited] - free[waited])
    port = np.flatnonzero((dram > 0) & (start > ready))
    np.add.at(stall, (queues[port], nq), start[port] - ready[port])
    return stall, ready
