"""esact-sweep --cpu-times: every compile and every execution with its CPU seconds and the
process that ran it, beside the main process's own; a directory as the file is refused
before any work."""

from __future__ import annotations

import json

from hostile_run import assert_user_error, run_tool
from sweep_specs import write_spec

from esact_cc.cli.esact_sweep_main import main

ONE_GROUP = """
[sweep]
inputs = [0]
accuracy_samples = 2

[[models]]
name = "digits-vit"

[[sparsity]]
scheme = "dense"

[hardware.axes]
"dram.bandwidth_bytes_per_s" = [8e9, 64e9]
"""


def test_cpu_times_list_every_task(tmp_path, capsys) -> None:
    write_spec(tmp_path, ONE_GROUP)
    assert main([str(tmp_path / "sweep.toml"), "-o", str(tmp_path / "out"), "--workers", "1",
                 "--cpu-times", str(tmp_path / "cpu.json")]) == 0
    assert f"wrote {tmp_path / 'cpu.json'}" in capsys.readouterr().out
    times = json.loads((tmp_path / "cpu.json").read_text())
    tasks = times["tasks"]
    assert [(t["kind"], t["points"]) for t in tasks] == [("compile", 2), ("execute", 2)]
    assert all(t["worker"] == times["main_process_id"] and t["cpu_seconds"] > 0
               for t in tasks)
    assert times["tasks_cpu_seconds"] == round(sum(t["cpu_seconds"] for t in tasks), 3)
    assert times["main_process_cpu_seconds"] >= times["tasks_cpu_seconds"]


def test_a_directory_as_the_cpu_times_file_is_refused(tmp_path) -> None:
    write_spec(tmp_path, ONE_GROUP)
    (tmp_path / "cpu").mkdir()
    assert_user_error(run_tool("esact-sweep", "sweep.toml", "-o", "out", "--cpu-times", "cpu",
                               cwd=tmp_path), "--cpu-times 'cpu' is a directory")
    assert not (tmp_path / "out").exists()
