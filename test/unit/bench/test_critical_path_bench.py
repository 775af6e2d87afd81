"""bench/critical_path.py's walk on hand-made schedules (runtime/timing.simulate): the path
follows whatever released each instruction last, its queue predecessor or a token producer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from esact_cc.runtime.timing import simulate

ROOT = Path(__file__).resolve().parents[3]
LOAD, COMPUTE, PREDICT = 0, 1, 2


def _bench():  # the bench module
    spec = importlib.util.spec_from_file_location("critical_path",
                                                  ROOT / "bench" / "critical_path.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_path_follows_the_token_that_arrived_last() -> None:
    # 0 load (10) -> 1 compute (5); 2 predict (100) -> 3 compute (3): 3 waits for the BPU.
    schedule = simulate(queues=[LOAD, COMPUTE, PREDICT, COMPUTE],
                        pops=[0, 1 << LOAD, 0, 1 << PREDICT],
                        pushes=[1 << COMPUTE, 0, 1 << COMPUTE, 0], cycles=[10, 5, 100, 3])
    bench = _bench()
    assert bench.critical_path(schedule) == [2, 3]
    runs = bench.segments(schedule, ["load", "gemm", "bpu", "gemm"], [2, 3])
    assert [(r["queue"], r["opcode"], r["count"]) for r in runs] == [("predict", "bpu", 1),
                                                                     ("compute", "gemm", 1)]
    assert runs[0]["start"] == 0 and runs[-1]["end"] == schedule.total_cycles


def test_the_path_follows_the_queue_when_its_predecessor_ends_last() -> None:
    # 0 load (50) -> 1 compute (40) -> 3 compute (5; its token from 2 predict (1) came long ago)
    schedule = simulate(queues=[LOAD, COMPUTE, PREDICT, COMPUTE],
                        pops=[0, 1 << LOAD, 0, 1 << PREDICT],
                        pushes=[1 << COMPUTE, 0, 1 << COMPUTE, 0], cycles=[50, 40, 1, 5])
    bench = _bench()
    assert bench.critical_path(schedule) == [0, 1, 3]
    runs = bench.segments(schedule, ["load", "gemm", "bpu", "gemm"], [0, 1, 3])
    assert [(r["opcode"], r["count"]) for r in runs] == [("load", 1), ("gemm", 2)]
