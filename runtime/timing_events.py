"""The timing model's event simulation (`run_events`) on plain per-instruction arrays: which
push each pop takes, the event loop, and the stall causes and ready times of the finished
schedule.

Channels are FIFOs, so which push each pop takes is fixed by program order and matched up
front (`match_tokens`). Only the DMA queues, which share the DRAM port first come first
served by ready time, need events in time order (a heap of their ready heads, ties to the
lower instruction index); every other queue's instruction is timed as soon as its last token
is pushed (`eager`), since its start is then fixed. With a token latency of at least one
cycle that gives the schedule of processing every instruction in time order: each instruction
timed while the loop handles a DMA start at t starts after t, so the DMA heads reach the heap
in (ready, index) order either way. With latency 0 a zero-cycle chain can tie with the
current time, and every queue goes through the heap in (ready, index) order. A finished
schedule's ready time of an instruction is when its queue was free and its last token had
arrived; if that token came after the queue was free, the instruction stalled that long on
the token's queue (the lowest queue bit among tokens arriving together); a DMA instruction
then waited start - ready for the DRAM port.

`run_events` runs all of it compiled (runtime/_timing_loop.c, built by pip install): the
interpreted loop cost ~0.5 us per instruction, half of the timing model.
timing_events_python.py does the same in Python and numpy, kept as the reference the
compiled code is tested against (test/unit/timing/test_compiled_event_loop.py). Without the
compiled module the timing model stops with a one-line error saying how to build it rather
than run the Python loop: a quietly 2-4x slower model would make esact-run's speed and the
throughput figures (bench/bench_timing.py) wrong without anyone noticing.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import NamedTuple

import numpy as np

from .errors import InstallError, ProgramError

try:
    from . import _timing_loop as compiled_loop
except ImportError as error:  # reported when the timing model runs (run_events)
    compiled_loop: ModuleType | None = None  # type: ignore[no-redef]
    compiled_loop_missing = " ".join(str(error).split())

NEVER = 1 << 62  # a time no schedule reaches: "not known yet" in the event loop


class Events(NamedTuple):
    """What `run_events` gives. processed: the instructions in the order they were timed
    (all n unless the tokens deadlock); head: each queue's first instruction not timed (n for a
    finished queue); end[n:]: the sentinels (end[n] = NEVER: the producer of a token never
    pushed). Of a finished schedule only: ready[i] (when i could start but for the DRAM port),
    stall[queue, cause] (cause: the token's source queue, nq for the DRAM port) and busy[queue]
    (its cycles)."""

    start: np.ndarray
    end: np.ndarray
    head: list[int]
    processed: np.ndarray
    ready: np.ndarray
    stall: np.ndarray
    busy: np.ndarray


def match_tokens(
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


def run_events(queues: np.ndarray, pops: np.ndarray, pushes: np.ndarray, cycles: np.ndarray,
               dram: np.ndarray, nq: int, heap_queues: Sequence[int], lat: int) -> Events:
    """The schedule of a program (queue index, pop and push masks, cycles and DRAM port
    cycles per instruction) on nq queues; `heap_queues`: the queues timed in (ready, index)
    order (the DMA queues; all of them at latency 0)."""
    if compiled_loop is None:
        raise InstallError(
            f"the timing model's compiled event loop is not importable ({compiled_loop_missing});"
            " build it by installing esact-cc: pip install -e . (needs a C compiler)")
    n = len(queues)
    _check_no_overflow(cycles, dram, lat, n)
    head = np.zeros(nq, dtype=np.int64)
    start, ready = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    end, processed = np.empty(n + 2, dtype=np.int64), np.empty(n, dtype=np.int64)
    stall, busy = np.zeros((nq, nq + 1), dtype=np.int64), np.zeros(nq, dtype=np.int64)
    eager = sum(1 << q for q in range(nq) if q not in heap_queues)
    done = compiled_loop.run_events(
        *(np.ascontiguousarray(a, dtype=np.int64) for a in (queues, pops, pushes, cycles, dram)),
        eager, lat, head, start, end, processed, ready, stall, busy)
    return Events(start, end, head.tolist(), processed[:done], ready, stall, busy)


def _check_no_overflow(cycles: np.ndarray, dram: np.ndarray, lat: int, n: int) -> None:
    """No time the loop computes reaches NEVER (nor overflows the compiled loop's int64):
    each instruction timed adds at most its cycles, its DRAM port cycles and a latency."""
    if lat < 0:
        raise ValueError("simulate: token latency must be >= 0")
    if n == 0:
        return
    step = sum(max(int(a.max()), -int(a.min())) for a in (cycles, dram)) + lat
    if (n + 2) * step >= NEVER:
        raise ProgramError(f"instruction cycle counts up to {step:,} are too large to time")
