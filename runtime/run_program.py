"""Run a binary on the hardware model: functional execution, then timing and energy.

`run_program(program, inputs, config)` is the Python entry point behind esact-run: it
executes the program bit-exactly (functional.py), schedules it on the queues (timing.py)
with the work records the execution produced, and builds the report (report.py). The
trace document is built on demand (`RunResult.trace()`), since large runs rarely need it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .energy import EnergyModel
from .errors import ConfigError
from .hw_config import HardwareConfig
from .report import InstructionInfo, build_report, instruction_info
from .timing import Schedule, time_program
from .trace import trace_events
from .work_table import WorkTable

ProgressFn = Callable[[int, int], None]  # (instructions done, total)


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    report: dict[str, Any]
    info: InstructionInfo
    schedule: Schedule
    work: WorkTable
    config: HardwareConfig

    def trace(self) -> dict[str, Any]:
        return trace_events(self.info, self.schedule, self.config, self.work)


def config_mismatch_message(program_hash: str, config: HardwareConfig) -> str:
    return (
        f"binary was compiled for hardware config {program_hash[:12]}, not '{config.name}' "
        f"({config.hash[:12]}); pass --hw with the config it was compiled for, or "
        f"--force-config to run it anyway"
    )


def run_program(
    program: Any,
    inputs: Mapping[str, object],
    config: HardwareConfig,
    *,
    force_config: bool = False,
    progress: ProgressFn | None = None,
    meta: dict[str, Any] | None = None,
    host_time_limit: float | None = None,
) -> RunResult:
    """Execute, time and report `program` (an esb.Program) on `inputs` under `config`.

    Running under a config other than the one the binary was compiled for is a ConfigError
    unless `force_config` (the report then records `forced_config: true`). Each HOST
    instruction may run `host_time_limit` seconds (default host_segments.HOST_TIME_LIMIT_S).
    """
    from .functional import execute

    mismatch = program.config_hash != config.hash
    if mismatch and not force_config:
        raise ConfigError(config_mismatch_message(program.config_hash, config))
    execution = execute(program, inputs, config, check_hash=not force_config, progress=progress,
                        host_time_limit=host_time_limit)
    if progress is not None:
        progress(len(program.instructions), len(program.instructions))
    work = WorkTable.from_records(execution.work)
    timed = time_program(program.instructions, execution.work, config, work)
    info = instruction_info(program)
    report = build_report(
        info,
        timed.schedule,
        work,
        EnergyModel.from_config(config),
        config,
        {**(meta or {}), "binary_config_hash": program.config_hash, "forced_config": mismatch},
    )
    return RunResult(execution.outputs, report, info, timed.schedule, work, config)
