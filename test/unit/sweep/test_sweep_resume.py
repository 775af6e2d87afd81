"""A sweep killed part-way (and its last line cut short) and run again evaluates only the
points not finished, and ends with the table an uninterrupted sweep writes; the table has one
row per point with every parameter and figure, and Parquet holds the same rows."""

from __future__ import annotations

import csv
import sys

import pytest
from sweep_specs import TINY_EXECUTIONS, TINY_GROUPS, TINY_POINTS, write_spec

from esact_cc.runtime.errors import UsageError
from esact_cc.sweep import runner
from esact_cc.sweep.evaluate import evaluate_execution
from esact_cc.sweep.store import RESULTS_FILE


class Killed(BaseException):
    """What a kill does to the sweep: it stops between two groups' evaluations."""


def evaluated_groups(monkeypatch, stop_after: int | None = None) -> list[str]:
    """Record the groups the runner executes; stop (Killed) once `stop_after` executions are
    done."""
    seen: list[str] = []
    executions: list[int] = []

    def evaluate(task):
        if stop_after is not None and len(executions) == stop_after:
            raise Killed
        executions.append(1)
        seen.extend(g.group.id for g in task.groups)
        return evaluate_execution(task)

    monkeypatch.setattr(runner, "evaluate_execution", evaluate)
    return seen


@pytest.fixture
def whole(tiny_sweep):
    """The tiny sweep's output directory, run without interruption (conftest.py)."""
    return tiny_sweep


def test_a_killed_sweep_resumes_with_the_remaining_points(tmp_path, monkeypatch,
                                                          whole) -> None:
    spec = write_spec(tmp_path)

    first = evaluated_groups(monkeypatch, stop_after=2)
    with pytest.raises(Killed):
        runner.run_sweep(spec, tmp_path / "resumed")
    stored = (tmp_path / "resumed" / RESULTS_FILE).read_text().splitlines()
    assert 0 < len(stored) < TINY_POINTS
    with open(tmp_path / "resumed" / RESULTS_FILE, "a") as handle:
        handle.write(stored[0][:40])  # the line a kill cut short

    second = evaluated_groups(monkeypatch)
    resumed = runner.run_sweep(spec, tmp_path / "resumed")
    assert resumed.ran == TINY_POINTS - len(stored)
    assert resumed.executions == TINY_EXECUTIONS - 2
    assert not set(first) & set(second) and len(set(first) | set(second)) == TINY_GROUPS
    assert resumed.groups_ran == len(set(second))
    assert (tmp_path / "resumed" / "results.csv").read_bytes() == \
        (whole / "results.csv").read_bytes()
    assert len((tmp_path / "resumed" / RESULTS_FILE).read_text().splitlines()) == TINY_POINTS

    third = evaluated_groups(monkeypatch)
    again = runner.run_sweep(spec, tmp_path / "resumed")
    assert again.ran == 0 and third == []


def test_the_table_is_tidy(whole) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    with open(whole / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == TINY_POINTS == len({r["point_id"] for r in rows})
    header = list(rows[0])
    assert header[:8] == ["point_id", "model", "sparsity", "sparsity.threshold",
                          "mac_array.rows", "dram.bandwidth_bytes_per_s", "bpu.lanes", "input"]
    for column in ("total.cycles", "energy.system.energy_pj", "energy.on_chip.energy_pj",
                   "accuracy", "accuracy_loss", "pareto_front"):
        assert column in header
    assert {r["sparsity.threshold"] for r in rows} == {"", "0.9"}  # dense has no threshold
    # re-timing: less DRAM bandwidth never makes a point faster, same program and accuracy
    by = {(r["sparsity"], r["mac_array.rows"], r["bpu.lanes"], r["dram.bandwidth_bytes_per_s"]):
          r for r in rows}
    for (scheme, mac, bpu, bandwidth), row in by.items():
        if bandwidth == "8000000000.0":
            fast = by[(scheme, mac, bpu, "64000000000.0")]
            assert int(row["total.cycles"]) >= int(fast["total.cycles"])
            assert row["accuracy"] == fast["accuracy"]
            assert row["instructions"] == fast["instructions"]
    assert any(r["pareto_front"] == "True" for r in rows)
    table = pq.read_table(whole / "results.parquet").to_pylist()
    assert [r["point_id"] for r in table] == [r["point_id"] for r in rows]
    assert table[0]["total.cycles"] == int(rows[0]["total.cycles"])
    assert len((whole / RESULTS_FILE).read_text().splitlines()) == TINY_POINTS


def test_parquet_without_pyarrow_is_refused_before_any_work(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    with pytest.raises(UsageError, match="--table parquet needs pyarrow"):
        runner.run_sweep(write_spec(tmp_path), tmp_path / "out", formats=("csv", "parquet"))
    assert not (tmp_path / "out").exists()
