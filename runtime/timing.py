"""Timing model: an event simulation of the ESACT queues with dependency tokens.

The hardware has one in-order instruction queue per unit (load, compute, predict, sfu,
store, host). Each instruction pops one token per queue in its `pop` mask from the channel
(that queue -> its own queue) before it starts, and pushes one token per queue in its
`push` mask into the channel (its own queue -> that queue) when it finishes; a pushed token
becomes visible `token_latency` cycles later. The load and store DMA engines share one
DRAM port: a DMA instruction holds the port for its transfer cycles (first come, first
served by ready time) while its fixed latency overlaps the next transfer.

`simulate` works on plain per-instruction arrays (queue, pop mask, push mask, cycles, DRAM
port cycles) so it can be tested analytically. Channels are FIFOs, so which push each pop
takes is fixed by program order and matched up front (numpy); the event loop then only
orders starts: events are processed in non-decreasing start time from a heap of at most one
ready head per queue, and a queue whose next head is the earliest event continues without
a heap round trip. `roofline` gives the perfect-overlap lower bound of the same work: max
over units of work / peak throughput, and DRAM bytes / bandwidth. `time_program` joins a
decoded program, the functional model's work records and the ISA cost table
(instruction_costs.py) into a `Schedule`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ProgramError
from .hw_config import HardwareConfig
from .instruction_costs import DMA_PORT_QUEUES, instruction_costs
from .isa import INSTRUCTION_SPECS, Queue
from .work_table import WorkTable

# Queue order = bit order of the pop/push masks = isa.Queue (checked at import).
QUEUE_NAMES: tuple[str, ...] = ("load", "compute", "predict", "sfu", "store", "host")
DMA_QUEUES: tuple[str, ...] = tuple(q.name.lower() for q in DMA_PORT_QUEUES)
assert QUEUE_NAMES == tuple(q.name.lower() for q in sorted(Queue, key=int)), "isa.Queue order"
DRAM_STALL = "dram"  # stall cause: waiting for the shared DRAM port
NEVER = 1 << 62  # a time no schedule reaches: "not known yet" in the event loop


def _mask_bits(n_queues: int) -> tuple[tuple[int, ...], ...]:
    return tuple(
        tuple(b for b in range(n_queues) if mask >> b & 1) for mask in range(1 << n_queues)
    )


class TokenEdges:
    """(producer, consumer) instruction indices of every token consumed, in consumption
    order: consumers in the order they started, each one's pops in queue-bit order.
    Built from the event loop's record on first use (the trace draws them; timing alone
    never needs them), or given directly."""

    def __init__(self, producers: np.ndarray | None = None,
                 consumers: np.ndarray | None = None,
                 record: tuple[list[np.ndarray | None], np.ndarray, list[int]] | None = None
                 ) -> None:
        self._record = record
        self._pairs = None if record is not None else (
            np.zeros(0, np.int64) if producers is None else producers,
            np.zeros(0, np.int64) if consumers is None else consumers)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        if self._pairs is None:
            assert self._record is not None
            self._pairs = _token_edges(*self._record)
            self._record = None
        return self._pairs


@dataclass
class Schedule:
    """Result of `simulate`: per-instruction start/end cycles and per-queue statistics."""

    queue_names: tuple[str, ...]
    start: list[int]
    end: list[int]
    total_cycles: int
    busy_cycles: dict[str, int]
    # stall_cycles[queue][cause]: cycles the queue's head waited; cause is
    # "token:<queue>" (the last token to arrive came from that queue) or "dram".
    stall_cycles: dict[str, dict[str, int]]
    instruction_counts: dict[str, int]
    dram_port_busy_cycles: int
    queues: list[int] = field(default_factory=list)
    edges: TokenEdges = field(default_factory=TokenEdges)
    cycles: list[int] = field(default_factory=list)

    @property
    def token_producers(self) -> np.ndarray:
        return self.edges.pairs()[0]

    @property
    def token_consumers(self) -> np.ndarray:
        return self.edges.pairs()[1]

    @property
    def token_edges(self) -> list[tuple[int, int]]:
        """(producer, consumer) of every token consumed, in consumption order."""
        producers, consumers = self.edges.pairs()
        return list(zip(producers.tolist(), consumers.tolist()))


def _as_list(values: Sequence[int]) -> list[int]:
    """Python ints (the event loop indexes lists fastest; numpy columns convert at C speed)."""
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _match_tokens(
    queues: np.ndarray, pops: np.ndarray, pushes: np.ndarray, nq: int
) -> list[np.ndarray | None]:
    """producer[src][i]: the instruction whose token instruction i's pop from queue src
    takes (channels are FIFOs: the k-th pop of channel src -> dst takes the k-th push), n if
    that push never happens; None for a queue nothing pops from."""
    n = len(queues)
    in_queue = [queues == q for q in range(nq)]
    producer: list[np.ndarray | None] = []
    for src in range(nq):
        popping = (pops >> src & 1).astype(bool)
        if not popping.any():
            producer.append(None)
            continue
        column = np.full(n, n, dtype=np.int64)
        for dst in range(nq):
            consumers = np.flatnonzero(popping & in_queue[dst])
            if consumers.size:
                pushed = np.flatnonzero(in_queue[src] & (pushes >> dst & 1).astype(bool))
                k = min(consumers.size, pushed.size)
                column[consumers[:k]] = pushed[:k]
        producer.append(column)
    return producer


# LOWEST_BIT[mask]: the index of the mask's lowest set bit (a table: pop masks are small).
def _lowest_bit_table(n_queues: int) -> np.ndarray:
    masks = np.arange(1 << n_queues)
    low = masks & -masks
    return np.where(low > 0, np.log2(np.maximum(low, 1)), n_queues).astype(np.int64)


def _dependencies(producer: list[np.ndarray | None], pops: np.ndarray, n: int
                  ) -> tuple[list[int], list[int], list[tuple[tuple[int, int], ...] | None]]:
    """The event loop's view of the matched tokens, one entry per instruction plus one for
    the end-of-queue sentinel n: first[i], first_src[i]: the producer of instruction i's
    lowest-bit pop and that queue (n + 1, a slot that is always ready, for an instruction
    that pops nothing; n, never ready, for the sentinel); more[i]: (producer, queue) of its
    other pops, None for the usual instruction with at most one."""
    nq = len(producer)
    lowest_bit = _lowest_bit_table(nq)
    low = pops & -pops
    first_src = lowest_bit[pops]
    first = np.full(n + 1, n + 1, dtype=np.int64)
    first[n] = n
    for src, column in enumerate(producer):
        if column is not None:
            from_src = np.flatnonzero(first_src == src)
            first[from_src] = column[from_src]
    more: list[tuple[tuple[int, int], ...] | None] = [None] * (n + 1)
    multi = np.flatnonzero(pops != low)
    if multi.size:
        rest = pops[multi] & ~low[multi]
        src2 = lowest_bit[rest]
        prod2 = np.full(multi.size, n + 1, dtype=np.int64)
        for src, column in enumerate(producer):
            if column is not None:
                from_src = np.flatnonzero(src2 == src)
                prod2[from_src] = column[multi[from_src]]
        for i, p, src in zip(multi.tolist(), prod2.tolist(), src2.tolist()):
            more[i] = ((p, src),)  # the usual second pop
        bits = _mask_bits(nq)
        for i in multi[(rest & (rest - 1)) != 0].tolist():  # three or more: rare
            more[i] = tuple((int(producer[src][i]), src)  # type: ignore[index]
                            for src in bits[int(pops[i])] if src != first_src[i])
    return first.tolist(), np.append(first_src, 0).tolist(), more


def _queue_chains(queues: np.ndarray, nq: int) -> tuple[list[int], list[int], list[int]]:
    """(heads, following, lengths): each queue's first instruction (n if it has none), the
    next instruction of the same queue after each one (n after its last; the queue order is
    program order), and the queue lengths."""
    n = len(queues)
    heads = [n] * nq
    following = np.full(n, n, dtype=np.int64)
    lengths = [0] * nq
    for q in range(nq):
        members = np.flatnonzero(queues == q)
        lengths[q] = members.size
        if members.size:
            heads[q] = int(members[0])
            following[members[:-1]] = members[1:]
    return heads, following.tolist(), lengths


def simulate(
    queues: Sequence[int],
    pops: Sequence[int],
    pushes: Sequence[int],
    cycles: Sequence[int],
    dram_cycles: Sequence[int] | None = None,
    token_latency: int = 1,
    queue_names: Sequence[str] = QUEUE_NAMES,
) -> Schedule:
    """Simulate a program given as per-instruction arrays; raise ProgramError on deadlock.

    queues[i]: queue index; pops[i]/pushes[i]: masks over queue indices; cycles[i]: the
    instruction's duration; dram_cycles[i]: cycles it holds the shared DRAM port (0 for
    instructions that do not use it; must be <= cycles[i]).
    """
    n = len(queues)
    nq = len(queue_names)
    if not (len(pops) == len(pushes) == len(cycles) == n):
        raise ValueError("simulate: queues, pops, pushes and cycles must have equal lengths")
    dram = [0] * n if dram_cycles is None else _as_list(dram_cycles)
    cycle_arr = np.asarray(cycles, dtype=np.int64).reshape(n)
    cycles = _as_list(cycles)
    q_arr = np.asarray(queues, dtype=np.int64).reshape(n)
    pop_arr = np.asarray(pops, dtype=np.int64).reshape(n)
    push_arr = np.asarray(pushes, dtype=np.int64).reshape(n)
    head, following, lengths = _queue_chains(q_arr, nq)
    producer_arrays = _match_tokens(q_arr, pop_arr, push_arr, nq)
    first, first_src, more = _dependencies(producer_arrays, pop_arr, n)
    # tokens a queue pushes to itself need no wake-up: its next head is checked anyway
    wake = (push_arr & ~(1 << q_arr)).tolist()  # a mask: most instructions wake no queue
    bits = _mask_bits(nq)
    free = [0] * nq
    in_heap = [False] * nq
    start = [0] * n
    lat = token_latency
    # end[i] + lat: when instruction i's tokens are visible. NEVER before it has run;
    # end[n]: the producer of a token never pushed (and of the end-of-queue sentinel's
    # pop); end[n + 1]: of a pop that is not there.
    never = NEVER
    end = [never] * n + [never, -lat]
    stall = [[0] * (nq + 1) for _ in range(nq)]  # cause index nq = DRAM port
    processed: list[int] = []  # instructions in the order they start (token consumption)
    heap: list[tuple[int, int, int, int]] = []
    heappush, heappop, heappushpop = heapq.heappush, heapq.heappop, heapq.heappushpop

    def enqueue(q: int) -> None:
        """Put queue q's head on the heap at its ready time if its tokens are pushed: t the
        queue's free time or the last token's arrival, cause that token's queue (-1: none
        waited for, so cause >= 0 exactly when the head stalls)."""
        i = head[q]
        t = free[q]
        cause = -1
        ready = end[first[i]] + lat
        if ready > t:
            t, cause = ready, first_src[i]
        if more[i] is not None:
            for p, src in more[i]:
                ready = end[p] + lat
                if ready > t:
                    t, cause = ready, src
        if t < never:
            # Ties broken by instruction index: deterministic and program-order fair.
            heappush(heap, (t, i, q, cause))
            in_heap[q] = True

    for q in range(nq):
        if head[q] < n:
            enqueue(q)
    dram_free = 0
    processed_append = processed.append
    entry = heappop(heap) if heap else None
    while entry is not None:
        t, i, q, cause = entry
        if cause >= 0:
            stall[q][cause] += t - free[q]
        d = dram[i]
        if d:
            if dram_free > t:
                stall[q][nq] += dram_free - t
                t = dram_free
            dram_free = t + d
        e = t + cycles[i]
        start[i] = t
        end[i] = e
        free[q] = e
        processed_append(i)
        if wake[i]:
            for dst in bits[wake[i]]:
                if not in_heap[dst] and head[dst] < n:
                    enqueue(dst)
        # the queue's next head (the sentinel n when it is done, never ready), inline: most
        # events continue a queue
        i = head[q] = following[i]
        t = end[first[i]] + lat
        if t > e:
            cause = first_src[i]
        else:
            t, cause = e, -1
        if more[i] is not None:
            for p, src in more[i]:
                ready = end[p] + lat
                if ready > t:
                    t, cause = ready, src
        if t < never:
            entry = heappushpop(heap, (t, i, q, cause))
            continue
        in_heap[q] = False
        entry = heappop(heap) if heap else None

    if len(processed) < n:
        raise ProgramError(_deadlock_message(head, producer_arrays, end, pop_arr, queue_names))
    del end[n:]
    names = tuple(queue_names)
    busy = {names[q]: int(cycle_arr[q_arr == q].sum()) for q in range(nq)}
    stalls = {
        names[q]: {
            (DRAM_STALL if c == nq else f"token:{names[c]}"): stall[q][c]
            for c in range(nq + 1)
            if stall[q][c]
        }
        for q in range(nq)
    }
    return Schedule(
        queue_names=names,
        start=start,
        end=end,
        total_cycles=max(end, default=0),
        busy_cycles=busy,
        stall_cycles=stalls,
        instruction_counts={names[q]: lengths[q] for q in range(nq)},
        dram_port_busy_cycles=sum(dram),
        queues=_as_list(queues),
        edges=TokenEdges(record=(producer_arrays, pop_arr, processed)),
        cycles=cycles,
    )


def _token_edges(
    producer: list[np.ndarray | None], pops: np.ndarray, processed: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(producers, consumers) of every consumed token in consumption order: consumers in the
    order they started, each one's pops in queue-bit order."""
    rank = np.empty(len(pops), dtype=np.int64)
    rank[np.asarray(processed, dtype=np.int64)] = np.arange(len(processed))
    consumers, producers, srcs = [], [], []
    for src, column in enumerate(producer):
        if column is not None:
            popping = np.flatnonzero(pops >> src & 1)
            consumers.append(popping)
            producers.append(column[popping])
            srcs.append(np.full(popping.size, src))
    if not consumers:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    consumer = np.concatenate(consumers)
    order = np.lexsort((np.concatenate(srcs), rank[consumer]))
    return np.concatenate(producers)[order], consumer[order]


def _deadlock_message(
    head: list[int],
    producer: list[np.ndarray | None],
    end: list[int],
    pops: np.ndarray,
    names: Sequence[str],
) -> str:
    nq = len(names)
    blocked = []
    for q in range(nq):
        i = head[q]
        if i < len(pops):
            missing = [names[s] for s in range(nq) if pops[i] >> s & 1
                       and end[int(producer[s][i])] >= NEVER]  # type: ignore[index]
            blocked.append((i, q, missing))
    i, q, missing = min(blocked)
    return (
        f"instruction {i} ({names[q]} queue) waits for a token from "
        f"{', '.join(missing)} that is never pushed (token deadlock)"
    )


def check_tokens(
    queues: Sequence[int],
    pops: Sequence[int],
    pushes: Sequence[int],
    queue_names: Sequence[str] = QUEUE_NAMES,
) -> None:
    """Reject a program whose tokens deadlock, without timing it (zero-cycle simulation)."""
    simulate(queues, pops, pushes, [0] * len(queues), None, 0, queue_names)


# --- roofline -----------------------------------------------------------------------------

ROOFLINE_UNITS: tuple[str, ...] = ("mac_array", "bpu", "topk", "sfu", "dram", "host")


def roofline(unit_work: dict[str, float], config: HardwareConfig) -> dict[str, Any]:
    """Lower bound on cycles of the same work with perfect overlap.

    unit_work: mac_array = MACs executed on the MAC array; bpu = shift-adds + elements the
    BPU processes; topk = comparisons; sfu = element-passes on the SFU lanes; dram = bytes
    the load/store DMA move; host = host-segment cycles. Each unit's bound is its work / its
    peak per-cycle throughput; no schedule beats its most loaded unit.
    """
    units = {
        "mac_array": unit_work.get("mac_array", 0) / (config.mac_rows * config.mac_cols),
        "bpu": unit_work.get("bpu", 0) / config.bpu_lanes,
        "topk": unit_work.get("topk", 0) / config.topk_lanes,
        "sfu": unit_work.get("sfu", 0) / config.sfu_lanes,
        "dram": unit_work.get("dram", 0) / config.dram_bytes_per_cycle,
        "host": unit_work.get("host", 0),
    }
    bound_by = max(ROOFLINE_UNITS, key=lambda u: units[u])
    return {
        "cycles": math.ceil(units[bound_by] - 1e-9) if units[bound_by] > 0 else 0,
        "bound_by": bound_by,
        "units": {u: float(units[u]) for u in ROOFLINE_UNITS},
    }


# --- a decoded program + work records -> schedule -----------------------------------------


@dataclass
class TimedProgram:
    """Per-instruction arrays of a program as the timing and report code consume them."""

    opcodes: list[str]
    units: list[str]  # isa.Unit values: dma, mac, bpu, topk, sfu, host, control
    schedule: Schedule


def time_program(
    instructions: Sequence[Any],
    works: Sequence[Any],
    config: HardwareConfig,
    work_table: WorkTable | None = None,
) -> TimedProgram:
    """Schedule a decoded program whose work records (and their columns, if the caller has
    them) the functional model produced."""
    queues, pops, pushes, cycles, port = instruction_costs(instructions, works, config,
                                                           work_table)
    schedule = simulate(queues, pops, pushes, cycles, port, config.token_latency_cycles)
    return TimedProgram(
        opcodes=[i.opcode_name for i in instructions],
        units=[INSTRUCTION_SPECS[i.opcode_name].unit.value for i in instructions],
        schedule=schedule,
    )
