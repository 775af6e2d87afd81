"""The tiny sweep run once per test run, on a local pool of 2 workers: the Ray test compares
its table with Ray's, the resume test with a killed-and-resumed serial run's (so the pool and
the serial runner are held to the same table too). Under pytest-xdist the workers share it:
the first to need it runs it under a lock in the run's common temporary directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest
from sweep_specs import FORMATS, TINY_EXECUTIONS, TINY_GROUPS, TINY_POINTS, write_spec

from esact_cc.sweep import runner

DONE = "tiny_sweep.done"
"""Written after the sweep passed its checks: its output is complete."""


def _run_tiny_sweep(directory: Path) -> Path:
    outcome = runner.run_sweep(write_spec(directory), directory / "out", workers=2,
                               formats=FORMATS)
    assert outcome.ran == TINY_POINTS and outcome.groups_ran == TINY_GROUPS
    assert outcome.executions == TINY_EXECUTIONS  # groups with the same program share one
    (directory / DONE).write_text("")
    return directory / "out"


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory) -> Path:
    """The output directory of the tiny sweep run without interruption."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return _run_tiny_sweep(tmp_path_factory.mktemp("tiny_sweep"))
    # xdist: each worker's base temp is inside the run's own, which the workers share.
    directory = tmp_path_factory.getbasetemp().parent / "tiny_sweep"
    directory.mkdir(exist_ok=True)
    with open(directory / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (directory / DONE).exists():
            return directory / "out"
        return _run_tiny_sweep(directory)
