"""Re-timing a recorded run on another hardware config, without executing it again.

A run's outputs and work records (what every instruction did, its masks' effect included)
depend on the program and the inputs only; the hardware config enters in two places:

- the compiler reads some parameters (`PROGRAM_PARAMETERS`): the MAC array shape tiles the
  GEMMs and sets the SPLS chunk rows, the BPU and top-k lanes place prediction instructions
  (passes/prediction_overlap.py, spls_beside_chain.score_cycles), the SRAM sizes allocate
  the buffers. A config that changes one of them has a different program, so a recorded run
  cannot stand in for it: `retime` refuses it with a ConfigError naming the parameter (the sweep recompiles instead);
- the timing and energy models read the rest (clock, DRAM bandwidth/latency/energy, unit
  lanes, token latency, technology and energy constants): those change cycles and energy,
  never outputs, so re-timing the recorded work gives exactly what a fresh run would
  (test/unit/sweep/test_retiming.py checks both, and that the compiler reads no other
  parameter).

A caller that compiled the program for the new config too (the sweep, to find configs that
share a program) passes its digest (run_program.program_digest): if it equals the run's
program's, the parameters the compiler reads changed but the program did not, and re-timing
stands in for a run.

The DRAM capacity changes neither; a smaller one that the program no longer fits in is the
same error a fresh run gives (esb.check_program_fits).
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .esb import check_program_fits
from .hw_config import HardwareConfig
from .hw_params import key_of
from .run_program import RunResult, time_and_report

# HardwareConfig attribute -> what the compiler uses it for (why it changes the program).
PROGRAM_PARAMETERS: dict[str, str] = {
    "mac_rows": "GEMM row tiles and SPLS chunk rows",
    "mac_cols": "GEMM column tiles",
    "bpu_lanes": "where prediction instructions are placed",
    "topk_lanes": "where instructions beside the score path are placed (its cycle estimate)",
    "weight_buffer_bytes": "buffer allocation",
    "activation_buffer_bytes": "buffer allocation",
    "accumulator_buffer_bytes": "buffer allocation",
    "vector_buffer_bytes": "buffer allocation",
    "mask_buffer_bytes": "buffer allocation",
}


def program_parameters(config: HardwareConfig) -> dict[str, Any]:
    """The values of the parameters a compiled program depends on, by TOML key."""
    return {key_of(HardwareConfig, attr): getattr(config, attr) for attr in PROGRAM_PARAMETERS}


def check_retimable(compiled_for: HardwareConfig, config: HardwareConfig) -> None:
    """ConfigError naming the first program parameter `config` changes."""
    for attr, use in PROGRAM_PARAMETERS.items():
        before, after = getattr(compiled_for, attr), getattr(config, attr)
        if before != after:
            raise ConfigError(
                f"cannot re-time for '{config.name}': '{key_of(HardwareConfig, attr)}' is "
                f"{after}, the run was compiled for {before}; it changes the program ({use}), "
                f"so compile for this config and run again")


def retime(result: RunResult, config: HardwareConfig, meta: dict[str, Any] | None = None,
           program_for_config: str | None = None) -> RunResult:
    """The run `result` recorded, timed and reported on `config` (same outputs and work).
    `program_for_config`: the program_digest of the program compiled for `config`, if the
    caller has it (a program parameter may then differ if the program is the same)."""
    if program_for_config is None or program_for_config != result.program_digest():
        check_retimable(result.config, config)
    check_program_fits(result.program, config, check_hash=False)
    report_meta = {**result.meta, **(meta or {}), "retimed_from_config_hash": result.config.hash}
    return time_and_report(result.program, result.outputs, result.records, result.work,
                           result.info, config, report_meta)
