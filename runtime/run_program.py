"""Run a binary on the hardware model: functional execution, then timing and energy.

`run_program(program, inputs, config)` is the Python entry point behind esact-run: it
executes the program bit-exactly (functional.py), schedules it on the queues (timing.py)
with the work records the execution produced, and builds the report (report.py). The
trace document is built on demand (`RunResult.trace()`), since large runs rarely need it.
A RunResult keeps the program and work records, so retiming.retime can time the same run
on another config without executing it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .energy import EnergyModel
from .errors import ConfigError
from .esb import serialize_esb
from .hw_config import HardwareConfig
from .isa import Work
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
    program: Any  # esb.Program
    records: list[Work]  # the functional model's work record of each instruction
    meta: dict[str, Any]  # the report's meta entries the caller gave
    _digest: str | None = field(default=None, init=False, repr=False, compare=False)

    def trace(self) -> dict[str, Any]:
        return trace_events(self.info, self.schedule, self.config, self.work)

    def program_digest(self) -> str:
        """program_digest of the program this run executed (computed once)."""
        if self._digest is None:
            self._digest = program_digest(self.program)
        return self._digest


def program_digest(program: Any) -> str:
    """SHA-256 of a program's .esb bytes with its config hash left out: programs compiled
    under different configs are the same program iff their digests are equal."""
    return hashlib.sha256(serialize_esb(replace(program, config_hash="0" * 64))).hexdigest()


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
    release_host_sessions: bool = False,
) -> RunResult:
    """Execute, time and report `program` (an esb.Program) on `inputs` under `config`.

    Running under a config other than the one the binary was compiled for is a ConfigError
    unless `force_config` (the report then records `forced_config: true`). Each HOST
    instruction may run `host_time_limit` seconds (default host_segments.HOST_TIME_LIMIT_S).
    `release_host_sessions`: see functional.execute (esact-run, one run per process).
    """
    from .functional import execute

    mismatch = program.config_hash != config.hash
    if mismatch and not force_config:
        raise ConfigError(config_mismatch_message(program.config_hash, config))
    execution = execute(program, inputs, config, check_hash=not force_config, progress=progress,
                        host_time_limit=host_time_limit,
                        release_host_sessions=release_host_sessions)
    if progress is not None:
        progress(len(program.instructions), len(program.instructions))
    outputs, records = execution.outputs, execution.work
    del execution  # its DRAM image (312 MiB at BERT-base 512) is not needed for timing
    work = WorkTable.from_records(records)
    return time_and_report(
        program, outputs, records, work, instruction_info(program), config,
        {**(meta or {}), "binary_config_hash": program.config_hash, "forced_config": mismatch})


def time_and_report(program: Any, outputs: dict[str, np.ndarray], records: list[Work],
                    work: WorkTable, info: InstructionInfo, config: HardwareConfig,
                    meta: dict[str, Any]) -> RunResult:
    """Time an executed program's work on `config` and build its report."""
    timed = time_program(program.instructions, records, config, work)
    report = build_report(info, timed.schedule, work, EnergyModel.from_config(config), config,
                          meta)
    return RunResult(outputs, report, info, timed.schedule, work, config, program, records,
                     meta)
