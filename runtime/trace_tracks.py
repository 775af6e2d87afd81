"""What the trace shows besides the instruction slices: counter tracks and stall slices.

Counters are sampled on `COUNTER_SAMPLES` equal time buckets of the run (at most one per
cycle), from the schedule and the work records:
  MAC utilisation (%)       MACs the array executed in the bucket / (rows * cols * cycles);
                            an instruction's MACs are spread evenly over its duration
  DRAM bandwidth (GB/s)     DMA bytes moved in the bucket / its time, spread the same way
  SRAM occupancy (bytes)    per buffer, the bytes holding a value some later instruction
                            reads: a written extent is live from its writer's start to the
                            end of its last reader before it is overwritten (from each
                            instruction's footprint, runtime/isa_footprint.py); the maximum
                            over the bucket
Stalls: the time a queue's next instruction waited after the previous one on that queue
finished (or after the start, for a queue's first), with its cause: the queue whose token
arrived last, or the DRAM port.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .isa import BUFFER_DTYPES, Buffer
from .isa_footprint import footprint
from .timing import DMA_QUEUES, Schedule

COUNTER_SAMPLES = 1000


def bucket_edges(total_cycles: int) -> np.ndarray:
    """Cycle boundaries of the counter buckets (float: buckets may be fractional)."""
    count = max(1, min(COUNTER_SAMPLES, total_cycles))
    return np.linspace(0.0, float(max(total_cycles, 1)), count + 1)


def spread_rate(start: np.ndarray, end: np.ndarray, amount: np.ndarray,
                edges: np.ndarray) -> np.ndarray:
    """Per bucket, `amount` per cycle, each instruction's amount spread evenly over
    [start, end): the exact integral of the piecewise-constant rate, over each bucket."""
    keep = (amount > 0) & (end > start)
    start, end, amount = start[keep], end[keep], amount[keep].astype(np.float64)
    if not len(start):
        return np.zeros(len(edges) - 1)
    rate = amount / (end - start)
    times = np.concatenate([start, end]).astype(np.float64)
    deltas = np.concatenate([rate, -rate])
    order = np.argsort(times, kind="stable")
    times, deltas = times[order], deltas[order]
    rate_after = np.cumsum(deltas)
    # cumulative amount at each event time: rate between consecutive events times the gap
    work_at = np.concatenate([[0.0], np.cumsum(rate_after[:-1] * np.diff(times))])
    cumulative = np.interp(edges, times, work_at, left=0.0, right=work_at[-1])
    return np.diff(cumulative) / np.diff(edges)


def mac_utilisation(schedule: Schedule, macs_executed: np.ndarray, mac_units: int,
                    edges: np.ndarray) -> np.ndarray:
    """Percent of the MAC array busy per bucket."""
    return 100.0 * spread_rate(np.asarray(schedule.start), np.asarray(schedule.end),
                               macs_executed, edges) / mac_units


def dram_bandwidth(schedule: Schedule, queues: Sequence[int], dram_bytes: np.ndarray,
                   frequency_hz: float, edges: np.ndarray) -> np.ndarray:
    """GB/s moved by the DMA queues per bucket (host segments reach DRAM by their own path)."""
    dma = np.isin(np.asarray(queues), [schedule.queue_names.index(q) for q in DMA_QUEUES])
    per_cycle = spread_rate(np.asarray(schedule.start), np.asarray(schedule.end),
                            np.where(dma, dram_bytes, 0), edges)
    return per_cycle * frequency_hz / 1e9


@dataclass
class _Region:
    start: int  # element range in its buffer
    end: int
    born: int  # cycle the writer started
    last_read: int  # end cycle of the last reader so far (born if none)


def live_intervals(instructions: Sequence[Any], schedule: Schedule
                   ) -> dict[str, list[tuple[int, int, int]]]:
    """Per buffer name, (from cycle, to cycle, bytes) of every live value (module docstring).
    Program order is each buffer's access order: the compiler's tokens order conflicting
    accesses."""
    live: dict[Buffer, list[_Region]] = {b: [] for b in Buffer}
    out: dict[str, list[tuple[int, int, int]]] = {b.name.lower(): [] for b in Buffer}

    def retire(buf: Buffer, region: _Region) -> None:
        if region.last_read > region.born:  # a value nobody reads occupies nothing useful
            size = (region.end - region.start) * BUFFER_DTYPES[buf].itemsize
            out[buf.name.lower()].append((region.born, region.last_read, size))

    for i, instr in enumerate(instructions):
        fp = footprint(instr)
        for buf, s, e in fp.reads:
            if buf is not None:
                for region in live[buf]:
                    if region.start < e and s < region.end:
                        region.last_read = max(region.last_read, schedule.end[i])
        for buf, s, e in fp.writes:
            if buf is None:
                continue
            kept = []
            for region in live[buf]:
                if region.start < e and s < region.end:
                    retire(buf, region)
                else:
                    kept.append(region)
            kept.append(_Region(s, e, schedule.start[i], schedule.start[i]))
            live[buf] = kept
    for buf, regions in live.items():
        for region in regions:
            retire(buf, region)
    return {name: spans for name, spans in out.items() if spans}


def occupancy(spans: list[tuple[int, int, int]], edges: np.ndarray) -> np.ndarray:
    """The maximum, per bucket, of the bytes live at once (a step function of the spans)."""
    times = np.array([t for s, e, _ in spans for t in (s, e)], dtype=np.float64)
    deltas = np.array([d for _, _, size in spans for d in (size, -size)], dtype=np.float64)
    order = np.lexsort((deltas, times))  # at equal times, frees before allocations
    times, level = times[order], np.cumsum(deltas[order])
    samples = np.concatenate([edges[:-1], times])
    at = np.searchsorted(times, samples, side="right") - 1
    values = np.where(at >= 0, level[np.maximum(at, 0)], 0.0)
    bucket = np.clip(np.searchsorted(edges, samples, side="right") - 1, 0, len(edges) - 2)
    peak = np.zeros(len(edges) - 1)
    np.maximum.at(peak, bucket, values)
    return peak


def stall_spans(schedule: Schedule, queues: Sequence[int], token_latency: int
                ) -> list[tuple[int, int, int, str]]:
    """(instruction, from cycle, to cycle, cause) of every wait before an instruction."""
    arrival: dict[int, tuple[int, int]] = {}  # consumer -> (latest token arrival, producer)
    for producer, consumer in schedule.token_edges:
        at = schedule.end[producer] + token_latency
        if consumer not in arrival or at > arrival[consumer][0]:
            arrival[consumer] = (at, producer)
    free: dict[int, int] = {}
    dma = {schedule.queue_names.index(q) for q in DMA_QUEUES}
    spans = []
    for i in sorted(range(len(queues)), key=lambda k: (schedule.start[k], k)):
        q = queues[i]
        ready = free.get(q, 0)
        if schedule.start[i] > ready:
            token = arrival.get(i)
            if token is not None and token[0] >= schedule.start[i]:
                cause = f"token from {schedule.queue_names[queues[token[1]]]}"
            elif q in dma:
                cause = "dram port"
            else:
                cause = "tokens"
            spans.append((i, ready, schedule.start[i], cause))
        free[q] = schedule.end[i]
    return spans
