"""The Chrome/Perfetto trace of a run follows the Trace Event Format: a JSON object with a
traceEvents list; metadata (ph M) names the process and one thread per queue; every
instruction is one complete event (ph X) with name, cat, ts, dur (microseconds), pid, tid,
args; slices on one thread never overlap."""

import itertools
import json

from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.report import InstructionInfo
from esact_cc.runtime.timing import QUEUE_NAMES, simulate
from esact_cc.runtime.trace import trace_events, write_trace
from esact_cc.runtime.work_table import WorkTable

CONFIG = load_config()
LOAD, COMPUTE, PREDICT, SFU, STORE, HOST = range(6)


def validate_trace_event_format(doc):
    """Independent check of the JSON Object Format of the Trace Event Format spec."""
    assert isinstance(doc, dict) and isinstance(doc["traceEvents"], list)
    assert doc.get("displayTimeUnit", "ms") in ("ms", "ns")
    for ev in doc["traceEvents"]:
        assert isinstance(ev["name"], str) and ev["name"]
        assert ev["ph"] in ("X", "M", "s", "f", "C")
        assert isinstance(ev["pid"], int) and isinstance(ev["tid"], int)
        if ev["ph"] in ("s", "f"):
            assert isinstance(ev["id"], int) and isinstance(ev["ts"], (int, float))
            assert ev["ph"] == "s" or ev.get("bp") == "e"
        elif ev["ph"] == "M":
            assert ev["name"] in ("process_name", "thread_name", "thread_sort_index",
                                  "process_sort_index")
            assert isinstance(ev["args"], dict)
        elif ev["ph"] == "C":  # counter: numeric series in args
            assert isinstance(ev["ts"], (int, float)) and ev["ts"] >= 0
            assert ev["args"] and all(isinstance(v, (int, float)) for v in ev["args"].values())
        else:
            assert isinstance(ev["ts"], (int, float)) and ev["ts"] >= 0
            assert isinstance(ev["dur"], (int, float)) and ev["dur"] >= 0
            assert isinstance(ev.get("cat", ""), str)
            assert isinstance(ev.get("args", {}), dict)


def make_run():
    queues = [LOAD, COMPUTE, SFU, COMPUTE, STORE, COMPUTE]
    pops = [0, 1 << LOAD, 1 << COMPUTE, 1 << SFU, 1 << COMPUTE, 0]
    pushes = [1 << COMPUTE, 1 << SFU, 1 << COMPUTE, 1 << STORE, 0, 0]
    cycles = [200, 500, 80, 300, 150, 1]
    schedule = simulate(queues, pops, pushes, cycles, [100, 0, 0, 0, 50, 0], 1)
    info = InstructionInfo(
        opcodes=["load", "gemm", "softmax", "gemm", "store", "halt"],
        queues=queues,
        units=["dma", "mac", "sfu", "mac", "dma", "control"],
        nodes=["", "/layer.0/attention/self/query/MatMul", "/layer.0/Softmax",
               "/layer.0/attention/output/dense/MatMul", "", ""],
        layers=[None, 0, 0, 0, None, None],
        components=["load", "q", "sfu", "o", "store", "other"],
    )
    work = WorkTable.from_records([{"dram_read_bytes": 6400}, {"macs_dense": 10,
                                                               "macs_executed": 10}, {}, {}, {},
                                   {}])
    return info, schedule, work


def test_trace_validates_and_has_one_track_per_queue(tmp_path):
    info, schedule, work = make_run()
    path = tmp_path / "t.json"
    write_trace(path, trace_events(info, schedule, CONFIG, work))
    doc = json.loads(path.read_text())
    validate_trace_event_format(doc)
    threads = {ev["tid"]: ev["args"]["name"] for ev in doc["traceEvents"]
               if ev["ph"] == "M" and ev["name"] == "thread_name"}
    assert sorted(threads.values()) == sorted(QUEUE_NAMES)
    slices = [ev for ev in doc["traceEvents"] if ev["ph"] == "X" and ev["cat"] != "stall"]
    assert len(slices) == len(info)
    by_index = {ev["args"]["index"]: ev for ev in slices}
    for i in range(len(info)):
        ev = by_index[i]
        assert threads[ev["tid"]] == QUEUE_NAMES[info.queues[i]]
        assert ev["name"] == (f"{info.opcodes[i]} {info.nodes[i]}" if info.nodes[i]
                              else info.opcodes[i])
        assert ev["cat"] == info.components[i]
        # 1 GHz: 1 cycle = 1 ns = 0.001 us
        assert ev["ts"] == schedule.start[i] / 1000
        assert ev["dur"] == (schedule.end[i] - schedule.start[i]) / 1000
    assert by_index[0]["args"]["dram_read_bytes"] == 6400


def test_slices_on_one_track_do_not_overlap():
    info, schedule, work = make_run()
    doc = trace_events(info, schedule, CONFIG, work)
    by_tid = {}
    for ev in doc["traceEvents"]:
        if ev["ph"] == "X":
            by_tid.setdefault(ev["tid"], []).append((ev["ts"], ev["ts"] + ev["dur"]))
    for spans in by_tid.values():
        spans.sort()
        for (_, end0), (start1, _) in itertools.pairwise(spans):
            assert start1 >= end0 - 1e-9


def test_token_flows_connect_producer_and_consumer_slices():
    info, schedule, work = make_run()
    doc = trace_events(info, schedule, CONFIG, work)
    slices = {}
    for ev in doc["traceEvents"]:
        if ev["ph"] == "X":
            slices.setdefault(ev["tid"], []).append(ev)
    flows = {}
    for ev in doc["traceEvents"]:
        if ev["ph"] in ("s", "f"):
            flows.setdefault(ev["id"], {})[ev["ph"]] = ev
    assert len(flows) == sum(p.bit_count() for p in [0, 1, 2, 8, 2, 0])  # one arrow per pop

    def enclosing(ev):
        (hit,) = [s for s in slices[ev["tid"]] if s["ts"] < ev["ts"] < s["ts"] + s["dur"]]
        return hit["args"]["index"]

    pairs = sorted((enclosing(f["s"]), enclosing(f["f"])) for f in flows.values())
    assert pairs == sorted(schedule.token_edges) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert not [ev for ev in trace_events(info, schedule, CONFIG, work, token_flows=False)
                ["traceEvents"] if ev["ph"] in ("s", "f")]
