"""The tiny sweep run once per test process, on a local pool of 2 workers: the Ray test
compares its table with Ray's, the resume test with a killed-and-resumed serial run's (so the
pool and the serial runner are held to the same table too)."""

from __future__ import annotations

import pytest
from sweep_specs import FORMATS, TINY_EXECUTIONS, TINY_GROUPS, TINY_POINTS, write_spec

from esact_cc.sweep import runner


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory):
    """The tiny sweep run without interruption: its outcome and output directory."""
    directory = tmp_path_factory.mktemp("tiny_sweep")
    outcome = runner.run_sweep(write_spec(directory), directory / "out", workers=2,
                               formats=FORMATS)
    assert outcome.ran == TINY_POINTS and outcome.groups_ran == TINY_GROUPS
    assert outcome.executions == TINY_EXECUTIONS  # groups with the same program share one
    return outcome, directory / "out"
