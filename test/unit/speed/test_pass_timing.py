"""`--mlir-timing` reports each pass's CPU time beside its wall time (on a shared machine the
wall time mostly measures the other processes)."""

import time
from types import SimpleNamespace

import pytest

from esact_cc.cli.pass_timing import PassTimer


def test_cpu_time_is_the_process_time_of_the_pass(capsys: pytest.CaptureFixture[str]) -> None:
    timer = PassTimer()
    busy, idle = SimpleNamespace(name="busy-pass"), SimpleNamespace(name="idle-pass")
    timer.start(busy)
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # CPU-bound: CPU time ~ wall time
        pass
    timer.stop(busy)
    timer.start(idle)
    time.sleep(0.05)  # no CPU: wall time only
    timer.stop(idle)
    (_, busy_wall, busy_cpu), (_, idle_wall, idle_cpu) = timer.rows
    assert busy_cpu >= 0.05 and idle_wall >= 0.05 and idle_cpu < 0.04
    timer.report()
    report = capsys.readouterr().err
    assert "CPU time (s)" in report and "wall time (s)" in report
    assert "busy-pass" in report and "idle-pass" in report
    assert f"{busy_cpu:.4f}" in report
