"""Timing model: an event simulation of the ESACT queues with dependency tokens.

The hardware has one in-order instruction queue per unit (load, compute, predict, sfu,
store, host). Each instruction pops one token per queue in its `pop` mask from the channel
(that queue -> its own queue) before it starts, and pushes one token per queue in its
`push` mask into the channel (its own queue -> that queue) when it finishes; a pushed token
becomes visible `token_latency` cycles later. The load and store DMA engines share one
DRAM port: a DMA instruction holds the port for its transfer cycles (first come, first
served by ready time) while its fixed latency overlaps the next transfer.

`simulate` works on plain per-instruction arrays (queue, pop mask, push mask, cycles, DRAM
port cycles) so it can be tested analytically; its event loop is timing_events.py (only the
queues using the DRAM port go through a heap in ready-time order; the others are timed as
soon as their tokens are pushed), and stall causes are read off the finished schedule.
`roofline` gives the perfect-overlap lower bound of the same work: max
over units of work / peak throughput, and DRAM bytes / bandwidth. `time_program` joins a
decoded program, the functional model's work records and the ISA cost table
(instruction_costs.py) into a `Schedule`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .errors import ProgramError
from .hw_config import HardwareConfig
from .instruction_costs import DMA_PORT_QUEUES, instruction_costs
from .isa import INSTRUCTION_SPECS, Queue
from .timing_events import NEVER, match_tokens, run_events
from .work_table import WorkTable

# Queue order = bit order of the pop/push masks = isa.Queue (checked at import).
QUEUE_NAMES: tuple[str, ...] = ("load", "compute", "predict", "sfu", "store", "host")
DMA_QUEUES: tuple[str, ...] = tuple(q.name.lower() for q in DMA_PORT_QUEUES)
assert QUEUE_NAMES == tuple(q.name.lower() for q in sorted(Queue, key=int)), "isa.Queue order"
DRAM_STALL = "dram"  # stall cause: waiting for the shared DRAM port


class TokenEdges:
    """(producer, consumer) instruction indices of every token consumed, in consumption
    order: consumers in the order they started, each one's pops in queue-bit order.
    Built from the event loop's record on first use (the trace draws them; timing alone
    never needs them), or given directly."""

    def __init__(self, producers: np.ndarray | None = None,
                 consumers: np.ndarray | None = None,
                 record: tuple[Callable[[], list[np.ndarray | None]], np.ndarray,
                               Callable[[], Sequence[int]]] | None = None
                 ) -> None:
        self._record = record
        self._pairs = None if record is not None else (
            np.zeros(0, np.int64) if producers is None else producers,
            np.zeros(0, np.int64) if consumers is None else consumers)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        if self._pairs is None:
            assert self._record is not None
            producer, pops, processed = self._record
            self._pairs = _token_edges(producer(), pops, processed())
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
    q_arr, pop_arr, push_arr, cycle_arr = (np.asarray(a, dtype=np.int64).reshape(n)
                                           for a in (queues, pops, pushes, cycles))
    dram = (np.zeros(n, np.int64) if dram_cycles is None
            else np.asarray(dram_cycles, dtype=np.int64).reshape(n))
    # the queues timed in time order (timing_events): those using the DRAM port, or all
    # at latency 0
    heap_queues = (range(nq) if token_latency < 1
                   else np.flatnonzero(np.bincount(q_arr[dram > 0], minlength=nq)).tolist())
    events = run_events(q_arr, pop_arr, push_arr, cycle_arr, dram, nq, heap_queues,
                        token_latency)
    if len(events.processed) < n:
        producer = match_tokens(q_arr, pop_arr, push_arr, nq)
        raise ProgramError(_deadlock_message(events.head, producer, events.end, pop_arr,
                                             queue_names))
    end = events.end[:n]
    stall, processed, ready = events.stall, events.processed, events.ready
    names = tuple(queue_names)
    counts = np.bincount(q_arr, minlength=nq)
    return Schedule(
        queue_names=names,
        start=events.start.tolist(),
        end=end.tolist(),
        total_cycles=int(end.max()) if n else 0,
        busy_cycles={names[q]: int(events.busy[q]) for q in range(nq)},
        stall_cycles={
            names[q]: {(DRAM_STALL if c == nq else f"token:{names[c]}"): int(stall[q, c])
                       for c in range(nq + 1) if stall[q, c]}
            for q in range(nq)
        },
        instruction_counts={names[q]: int(counts[q]) for q in range(nq)},
        dram_port_busy_cycles=int(dram.sum()),
        queues=q_arr.tolist(),
        # tokens are consumed in (ready, index) order, which run_events follows for the
        # heap queues only; at latency 0, where it follows it for all, in its own order
        edges=TokenEdges(record=(lambda: match_tokens(q_arr, pop_arr, push_arr, nq), pop_arr,
                                 (lambda: processed) if token_latency < 1
                                 else (lambda: np.argsort(ready, kind="stable")))),
        cycles=cycle_arr.tolist(),
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
    end: Sequence[int],
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


class TimedProgram:
    """A timed program: its schedule, and per-instruction opcodes and units (isa.Unit values:
    dma, mac, bpu, topk, sfu, host, control) built on first use (esact-run reads only the
    schedule: its report has its own instruction columns)."""

    def __init__(self, instructions: Sequence[Any], schedule: Schedule) -> None:
        self._instructions = instructions
        self.schedule = schedule

    @cached_property
    def opcodes(self) -> list[str]:
        return [i.opcode_name for i in self._instructions]

    @cached_property
    def units(self) -> list[str]:
        return [INSTRUCTION_SPECS[name].unit.value for name in self.opcodes]


def time_program(
    instructions: Sequence[Any],
    works: Sequence[Any],
    config: HardwareConfig,
    work_table: WorkTable | None = None,
) -> TimedProgram:
    """Schedule a decoded program whose work records (and their columns, if the caller has
    them) the functional model produced: the timing model as esact-run runs it."""
    queues, pops, pushes, cycles, port = instruction_costs(instructions, works, config,
                                                           work_table)
    schedule = simulate(queues, pops, pushes, cycles, port, config.token_latency_cycles)
    return TimedProgram(instructions, schedule)
