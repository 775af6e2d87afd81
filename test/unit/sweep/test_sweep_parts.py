"""How the sweep splits and assembles its work: a program's execution split into parts of
consecutive test samples (each timed input in exactly one), and each group's program,
compiled from the model's shared quantized module, byte for byte the one `api.compile`
writes for the group's config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from esact_cc.runtime.esb import serialize_esb
from hypothesis import given, settings
from hypothesis import strategies as st
from sweep_specs import TINY, write_spec

from esact_cc import api
from esact_cc.sweep import runner
from esact_cc.sweep.evaluate import (
    CompiledGroup,
    ExecutionPart,
    GroupTask,
    compile_group,
    execution_tasks,
    program_rows,
)
from esact_cc.sweep.points import Group, Point, expand
from esact_cc.sweep.spec import load_spec


def group_timed_on(inputs: list[int], count: int) -> GroupTask:
    points = [Point(i, f"p{i}", {}, {}, k) for i, k in enumerate(inputs)]
    return GroupTask(Group("g", None, {}, {}, points), None, count, 0.5)


@settings(max_examples=200, deadline=None)
@given(count=st.integers(1, 400), parts=st.integers(1, 12),
       inputs=st.lists(st.integers(0, 500), min_size=1, max_size=6))
def test_parts_cover_the_samples_once_in_order(count, parts, inputs) -> None:
    tasks = execution_tasks([group_timed_on(inputs, count)], CompiledGroup("g", "d", b""),
                            parts)
    assert len(tasks) == min(parts, count)
    assert [k for t in tasks for k in range(*t.samples)] == list(range(count))
    assert sorted(k for t in tasks for k in t.timed) == sorted(set(inputs))
    for task in tasks:
        assert all(task.samples[0] <= k < task.samples[1] or k >= count for k in task.timed)


def test_program_rows_take_the_accuracy_of_all_parts() -> None:
    first = group_timed_on([0], 4)
    parts = [ExecutionPart(np.array([True, False]), [{"point_id": "a"}]),
             ExecutionPart(np.array([True, True]), [])]
    (row,) = program_rows(first, parts)
    assert list(row) == ["point_id", "accuracy", "accuracy_reference", "accuracy_loss"]
    assert row["accuracy"] == 0.75 and row["accuracy_loss"] == 0.5 - 0.75


def test_a_group_compiles_to_the_program_api_compile_writes(tmp_path) -> None:
    spec_path = write_spec(tmp_path, TINY)
    spec = load_spec(spec_path)
    groups = expand(spec, tmp_path, str(spec_path))
    # dense and SPLS, on 16 MAC rows (the SPLS program depends on the BPU lanes there)
    chosen = [g for g in groups if g.points[0].hardware["mac_array.rows"] == 16
              and g.points[0].hardware["bpu.lanes"] == 256]
    assert {g.sparsity["scheme"] for g in chosen} == {"dense", "spls"}
    for task in runner._tasks(chosen, spec, tmp_path, tmp_path):
        program, config = compile_group(task, tmp_path)
        hw = Path(tmp_path) / "direct.toml"
        hw.write_text(config.to_toml())
        options = {"hw": str(hw), "sparsity": task.group.sparsity["scheme"],
                   "calibration_data": str(task.model.calibration_path)}
        if task.group.sparsity["options"]:
            options["sparsity_option"] = list(task.group.sparsity["options"])
        direct = api.compile(task.model.onnx_path, stage="esb", **options).program()
        assert serialize_esb(program) == serialize_esb(direct)
