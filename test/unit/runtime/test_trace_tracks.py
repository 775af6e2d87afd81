"""Trace counter tracks (MAC utilisation, DRAM bandwidth, SRAM occupancy) and stall slices,
checked against values worked out by hand, on a synthetic schedule and on the hand-assembled
fixture program."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from esact_cc.runtime.assembly import assemble
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.report import InstructionInfo
from esact_cc.runtime.run_program import run_program
from esact_cc.runtime.timing import simulate
from esact_cc.runtime.trace import trace_events
from esact_cc.runtime.trace_tracks import occupancy, spread_rate, stall_spans
from esact_cc.runtime.work_table import WorkTable

CONFIG = load_config()
FIXTURE = Path(__file__).parents[2] / "fixtures" / "asm" / "linear_requant_softmax.s"
LOAD, COMPUTE = 0, 1


def test_spread_rate_is_the_exact_integral_per_bucket():
    # 300 units over cycles [0, 100) and 100 units over [50, 150): rates 3 and 1 per cycle
    rates = spread_rate(np.array([0, 50]), np.array([100, 150]), np.array([300, 100]),
                        np.array([0.0, 50.0, 100.0, 200.0]))
    assert rates.tolist() == pytest.approx([3.0, 4.0, 0.5])  # last: 50 units over 100 cycles


def test_occupancy_is_the_peak_of_live_bytes_per_bucket():
    spans = [(0, 40, 100), (30, 60, 50), (60, 90, 20)]  # 100+50 live on [30, 40)
    assert occupancy(spans, np.array([0.0, 25.0, 50.0, 100.0])).tolist() == [100, 150, 50]


def synthetic_run():
    """A 1000-byte load (100 cycles), then a GEMM of 51,200 MACs over 100 cycles (half the
    32x32 array) that waits for the load's token."""
    queues = [LOAD, COMPUTE]
    schedule = simulate(queues, [0, 1 << LOAD], [1 << COMPUTE, 0], [100, 100], [100, 0], 1)
    info = InstructionInfo(["load", "gemm"], queues, ["dma", "mac"], ["", "/fc/MatMul"],
                           [None, 0], ["load", "q"])
    work = WorkTable.from_records([{"dram_read_bytes": 1000},
                                   {"macs_dense": 51200, "macs_executed": 51200}])
    return info, schedule, work


def counters(doc: dict, name: str) -> list[tuple[float, dict]]:
    return [(ev["ts"], ev["args"]) for ev in doc["traceEvents"]
            if ev["ph"] == "C" and ev["name"] == name]


def test_mac_utilisation_and_dram_bandwidth_counters():
    info, schedule, work = synthetic_run()
    assert (schedule.start, schedule.end) == ([0, 101], [100, 201])  # 1-cycle token latency
    doc = trace_events(info, schedule, CONFIG, work)
    mac = counters(doc, "MAC utilisation (%)")
    dram = counters(doc, "DRAM bandwidth (GB/s)")
    assert len(mac) == len(dram) == 201 + 1  # one bucket per cycle, plus the closing sample
    by_cycle = {round(ts * 1000): args["mac"] for ts, args in mac}  # 1 GHz: ts in us
    assert by_cycle[50] == 0.0 and by_cycle[101] == 50.0 and by_cycle[200] == 50.0
    bandwidth = {round(ts * 1000): args["dma"] for ts, args in dram}
    assert bandwidth[0] == pytest.approx(10.0) and bandwidth[150] == 0.0  # 10 B/cycle at 1 GHz
    json.dumps(doc)


def test_stalls_are_slices_named_by_cause():
    info, schedule, _ = synthetic_run()
    assert stall_spans(schedule, info.queues, 1) == [(1, 0, 101, "token from load")]
    doc = trace_events(info, schedule, CONFIG)
    (stall,) = [ev for ev in doc["traceEvents"] if ev.get("cat") == "stall"]
    assert stall["name"] == "stall: token from load" and stall["tid"] == COMPUTE + 1
    assert (stall["ts"], stall["dur"]) == (0.0, 0.101)
    names = {ev["name"] for ev in doc["traceEvents"] if ev["ph"] == "X"}
    assert {"load", "gemm /fc/MatMul"} <= names  # opcode and node


def test_sram_occupancy_of_the_fixture_program_by_hand():
    program = assemble(FIXTURE.read_text(), CONFIG.hash)
    rng = np.random.default_rng(0)
    feed = {"x": rng.integers(-128, 128, (8, 32)).astype(np.int8),
            "w": rng.integers(-128, 128, (32, 48)).astype(np.int8),
            "bias": rng.integers(-99, 99, 48).astype(np.int32),
            "mult": np.full(48, 1e-3, np.float32), "dq": np.full(48, 1e-4, np.float32)}
    result = run_program(program, feed, CONFIG)
    from esact_cc.runtime.trace_tracks import live_intervals

    s = result.schedule
    spans = live_intervals(result.info.instructions, s)
    ops = result.info.opcodes
    last_gemm = max(i for i, op in enumerate(ops) if op == "gemm")
    requant, store_y = ops.index("requant"), ops.index("store")
    # ABUF: x (8x32 int8) from its load to the last GEMM reading it; y (8x48) from the
    # requantize writing it to the store reading it
    assert spans["abuf"] == [(s.start[0], s.end[last_gemm], 256),
                             (s.start[requant], s.end[store_y], 384)]
    assert spans["wbuf"] == [(s.start[1], s.end[last_gemm], 32 * 48)]
    doc = result.trace()
    occupancy_samples = counters(doc, "SRAM occupancy (bytes)")
    peak = {buf: max(args.get(buf, 0) for _, args in occupancy_samples) for buf in spans}
    assert peak["abuf"] == 384 and peak["wbuf"] == 1536
    assert occupancy_samples[-1][1] == dict.fromkeys(spans, 0.0)
