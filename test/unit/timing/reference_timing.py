"""Reference timing model: the straightforward per-instruction implementation that
runtime/timing.py replaced for speed (per-instruction cost calls, token FIFOs as deques,
one heap entry per queue head). Tests check the fast model gives identical schedules.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from esact_cc.runtime.errors import ProgramError
from esact_cc.runtime.hw_config import HardwareConfig
from esact_cc.runtime.isa import INSTRUCTION_SPECS
from esact_cc.runtime.timing import DMA_QUEUES, DRAM_STALL, QUEUE_NAMES, Schedule, TokenEdges


def _mask_bits(n_queues: int) -> tuple[tuple[int, ...], ...]:
    return tuple(
        tuple(b for b in range(n_queues) if mask >> b & 1) for mask in range(1 << n_queues)
    )


def reference_simulate(
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
    if dram_cycles is None:
        dram_cycles = [0] * n
    bits = _mask_bits(nq)
    per_queue: list[list[int]] = [[] for _ in range(nq)]
    for i, q in enumerate(queues):
        per_queue[q].append(i)
    heads = [0] * nq
    lengths = [len(p) for p in per_queue]
    # channels[src * nq + dst]: FIFO of the instructions whose pushed tokens are not yet
    # popped; a token is visible at end[producer] + token_latency.
    channels: list[deque[int]] = [deque() for _ in range(nq * nq)]
    edges: list[tuple[int, int]] = []  # (producer, consumer) of every consumed token
    pop_srcs = [bits[p] for p in pops]
    push_dsts = [bits[p] for p in pushes]
    free = [0] * nq
    in_heap = [False] * nq
    start = [0] * n
    end = [0] * n
    stall = [[0] * (nq + 1) for _ in range(nq)]  # cause index nq = DRAM port
    heap: list[tuple[int, int, int, int]] = []
    heappush = heapq.heappush
    dram_free = 0
    dram_busy = 0

    def enqueue_if_ready(q: int) -> None:
        if in_heap[q] or heads[q] >= lengths[q]:
            return
        i = per_queue[q][heads[q]]
        t = free[q]
        cause = -1
        for src in pop_srcs[i]:
            channel = channels[src * nq + q]
            if not channel:
                return
            ready = end[channel[0]] + token_latency
            if ready > t:
                t = ready
                cause = src
        # Ties broken by instruction index: deterministic and program-order fair.
        heappush(heap, (t, i, q, cause))
        in_heap[q] = True

    for q in range(nq):
        enqueue_if_ready(q)
    done = 0
    heappop = heapq.heappop
    while heap:
        t, i, q, cause = heappop(heap)
        in_heap[q] = False
        for src in pop_srcs[i]:
            edges.append((channels[src * nq + q].popleft(), i))
        if t > free[q]:
            stall[q][cause] += t - free[q]
        d = dram_cycles[i]
        if d:
            if dram_free > t:
                stall[q][nq] += dram_free - t
                t = dram_free
            dram_free = t + d
            dram_busy += d
        e = t + cycles[i]
        start[i] = t
        end[i] = e
        free[q] = e
        heads[q] += 1
        done += 1
        for dst in push_dsts[i]:
            channels[q * nq + dst].append(i)
            if dst != q:
                enqueue_if_ready(dst)
        enqueue_if_ready(q)

    if done < n:
        raise ProgramError(_deadlock_message(per_queue, heads, lengths, channels, pops, bits,
                                             queue_names))
    names = tuple(queue_names)
    busy = {names[q]: sum(cycles[i] for i in per_queue[q]) for q in range(nq)}
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
        dram_port_busy_cycles=dram_busy,
        queues=list(queues),
        edges=TokenEdges(np.array([p for p, _ in edges], dtype=np.int64),
                         np.array([c for _, c in edges], dtype=np.int64)),
        cycles=list(cycles),
    )


def _deadlock_message(
    per_queue: list[list[int]],
    heads: list[int],
    lengths: list[int],
    channels: list[deque[int]],
    pops: Sequence[int],
    bits: tuple[tuple[int, ...], ...],
    names: Sequence[str],
) -> str:
    nq = len(names)
    blocked = []
    for q in range(nq):
        if heads[q] < lengths[q]:
            i = per_queue[q][heads[q]]
            missing = [names[s] for s in bits[pops[i]] if not channels[s * nq + q]]
            blocked.append((i, q, missing))
    i, q, missing = min(blocked)
    return (
        f"instruction {i} ({names[q]} queue) waits for a token from "
        f"{', '.join(missing)} that is never pushed (token deadlock)"
    )


def reference_costs(
    instructions: Sequence[Any], works: Sequence[Any], config: HardwareConfig
) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    """(queues, pops, pushes, cycles, dram port cycles) from the ISA table's cost functions.

    `instructions` are isa.Instruction values, `works` the functional model's isa.Work
    records (what each instruction actually did: masked instructions are charged for the
    rows and keys their masks kept).
    """
    if len(instructions) != len(works):
        raise ValueError("instruction_costs: one work record per instruction is required")
    dma = tuple(QUEUE_NAMES.index(q) for q in DMA_QUEUES)
    bpc = config.dram_bytes_per_cycle
    # per opcode once: (cost function, queue index, uses the DRAM port)
    table = {
        name: (spec.cost, int(spec.queue), int(spec.queue) in dma)
        for name, spec in INSTRUCTION_SPECS.items()
    }
    queues: list[int] = []
    pops: list[int] = []
    pushes: list[int] = []
    cycles: list[int] = []
    port: list[int] = []
    add_queue, add_pop, add_push = queues.append, pops.append, pushes.append
    add_cycles, add_port = cycles.append, port.append
    for instr, work in zip(instructions, works):
        cost, q, is_dma = table[instr.opcode_name]
        fields = instr.fields
        c = int(cost(fields, config, work))
        d = 0
        if is_dma:
            moved = work.dram_read_bytes + work.dram_write_bytes
            if moved:
                d = math.ceil(moved / bpc)
                c = max(c, d)  # a cost below the port time would beat the bandwidth
        add_queue(q)
        add_pop(fields["pop"])
        add_push(fields["push"])
        add_cycles(c)
        add_port(d)
    return queues, pops, pushes, cycles, port
