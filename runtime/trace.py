"""Chrome / Perfetto trace of a simulated run (Trace Event Format, JSON object form).

One process ("ESACT <config>"), one thread track per queue (named, sorted in queue order),
one complete event (`ph: "X"`) per instruction named "<opcode> <ONNX node>" (the opcode
alone when the debug map has none), with category = component and the opcode, index, layer,
cycles and work in `args`; before an instruction that waited, a slice of category `stall`
named by the cause ("stall: token from load", "stall: dram port"). Counter tracks
(`ph: "C"`): MAC utilisation, DRAM bandwidth and the occupancy of each SRAM buffer
(runtime/trace_tracks.py says how each is computed). Timestamps are microseconds (the
format's unit) derived from cycles and the config's clock, so Perfetto's time axis is
simulated time. Opens in ui.perfetto.dev and chrome://tracing. Each consumed dependency
token is a flow arrow (`ph: "s"` in the producer's slice, `ph: "f"` in the consumer's) so
the dependency that held an instruction back is visible.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .atomic_write import atomic_write_text
from .hw_config import HardwareConfig
from .report import InstructionInfo
from .timing import Schedule
from .trace_tracks import (bucket_edges, dram_bandwidth, live_intervals, mac_utilisation,
                           occupancy, stall_spans)
from .work_table import WorkTable

PID = 1
# args copied from the work record into each slice when non-zero
_SLICE_WORK_FIELDS = ("macs_dense", "macs_executed", "shift_adds", "sfu_elements", "compare_ops",
                      "dram_read_bytes", "dram_write_bytes")


def trace_events(
    info: InstructionInfo,
    schedule: Schedule,
    config: HardwareConfig,
    work: WorkTable | None = None,
    token_flows: bool = True,
) -> dict[str, Any]:
    """The trace document (a dict ready for json.dump). Counters need `work` (occupancy
    also `info.instructions`); without them the trace has slices and flows only."""
    cycles_per_us = config.frequency_hz / 1e6
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": PID, "tid": 0,
         "args": {"name": f"ESACT {config.name}"}},
    ]
    for q, name in enumerate(schedule.queue_names):
        events.append({"name": "thread_name", "ph": "M", "pid": PID, "tid": q + 1,
                       "args": {"name": name}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": PID, "tid": q + 1,
                       "args": {"sort_index": q}})
    columns = {f: work[f].tolist() for f in _SLICE_WORK_FIELDS} if work is not None else {}
    order = sorted(range(len(info)), key=lambda i: (schedule.start[i], i))
    for i in order:
        args: dict[str, Any] = {
            "index": i,
            "opcode": info.opcodes[i],
            "component": info.components[i],
            "layer": info.layers[i],
            "cycles": schedule.cycles[i],
            "start_cycle": schedule.start[i],
        }
        for f, col in columns.items():
            if col[i]:
                args[f] = col[i]
        events.append({
            "name": f"{info.opcodes[i]} {info.nodes[i]}" if info.nodes[i] else info.opcodes[i],
            "cat": info.components[i],
            "ph": "X",
            "ts": schedule.start[i] / cycles_per_us,
            "dur": (schedule.end[i] - schedule.start[i]) / cycles_per_us,
            "pid": PID,
            "tid": info.queues[i] + 1,
            "args": args,
        })
    for i, begin, finish, cause in stall_spans(schedule, info.queues, config.token_latency_cycles):
        events.append({"name": f"stall: {cause}", "cat": "stall", "ph": "X",
                       "ts": begin / cycles_per_us, "dur": (finish - begin) / cycles_per_us,
                       "pid": PID, "tid": info.queues[i] + 1,
                       "args": {"before": i, "cycles": finish - begin}})
    if work is not None:
        events += _counter_events(info, schedule, config, work, cycles_per_us)
    if token_flows:
        def middle(i: int) -> float:  # strictly inside the slice, so the arrow binds to it
            return (schedule.start[i] + schedule.end[i]) / 2 / cycles_per_us

        for flow_id, (producer, consumer) in enumerate(schedule.token_edges, start=1):
            name = f"token {schedule.queue_names[info.queues[producer]]}->" \
                   f"{schedule.queue_names[info.queues[consumer]]}"
            events.append({"name": name, "cat": "token", "ph": "s", "id": flow_id, "pid": PID,
                           "tid": info.queues[producer] + 1, "ts": middle(producer)})
            events.append({"name": name, "cat": "token", "ph": "f", "bp": "e", "id": flow_id,
                           "pid": PID, "tid": info.queues[consumer] + 1, "ts": middle(consumer)})
    return {
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {"config": config.name, "config_hash": config.hash,
                      "total_cycles": schedule.total_cycles},
    }


def _counter_events(info: InstructionInfo, schedule: Schedule, config: HardwareConfig,
                    work: WorkTable, cycles_per_us: float) -> list[dict[str, Any]]:
    edges = bucket_edges(schedule.total_cycles)
    series: dict[str, dict[str, np.ndarray]] = {
        "MAC utilisation (%)": {"mac": mac_utilisation(
            schedule, work["macs_executed"], config.mac_rows * config.mac_cols, edges)},
        "DRAM bandwidth (GB/s)": {"dma": dram_bandwidth(
            schedule, info.queues, work["dram_read_bytes"] + work["dram_write_bytes"],
            config.frequency_hz, edges)},
    }
    if info.instructions:
        series["SRAM occupancy (bytes)"] = {
            name: occupancy(spans, edges)
            for name, spans in live_intervals(info.instructions, schedule).items()}
    events = []
    for name, columns in series.items():
        if not columns:
            continue
        for k, t in enumerate(edges[:-1].tolist()):
            events.append({"name": name, "ph": "C", "pid": PID, "tid": 0, "ts": t / cycles_per_us,
                           "args": {key: round(float(v[k]), 3) for key, v in columns.items()}})
        # close the track at the end of the run
        events.append({"name": name, "ph": "C", "pid": PID, "tid": 0,
                       "ts": float(edges[-1]) / cycles_per_us,
                       "args": dict.fromkeys(columns, 0.0)})
    return events


def write_trace(path: str | Path, document: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(document, separators=(",", ":")) + "\n")
